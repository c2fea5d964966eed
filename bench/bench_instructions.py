"""What one tagged counter increment costs, counted in CPU instructions instead of seconds.

    python3 bench/bench_instructions.py                 # prints a Markdown table
    python3 bench/bench_instructions.py --before REF    # adds kaneda_core's rows at git REF

Seconds move with whatever else the machine does (on a shared virtual machine, by tens of
percent between runs); instructions do not. Each row runs its case under valgrind's
callgrind twice, with N and with 2N calls, in an interpreter of its own, and reports
(instructions at 2N - instructions at N) / N: the cost of one more call, start-up and
imports cancelled out. The rows whose worker delivers while the calls run move by
about a thousand instructions from run to run (where its rounds and the collector's
passes fall); "then the flush()" has the worker deliver everything in one round after
the calls, the same count every run. A second table counts a gauge into a real InfluxDB (started for
it): the client process's instructions per point, the server's excluded. Instructions
are not time (a cache miss costs more than an add), so bench_hot_path.py stays the
measure; this one tells whether a change made the work bigger or smaller. Needs
valgrind (Debian's ``valgrind``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

N = 20_000
HERE = Path(__file__).resolve().parent

DRIVER = """
import sys
case, n = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, {bench!r})
from bench_hot_path import without_hook_plugins
without_hook_plugins()
tags = lambda: {{"route": "/", "code": "200"}}
if case == "bare":
    from collections import deque
    from time import time_ns
    queue = deque()
    def increment(name, tags):
        queue.append((name, 1, tags, time_ns()))
    for _ in range(n):
        increment("requests", tags={{"route": "/", "code": "200"}})
elif case == "sync":
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend
    metrics = Metrics(MemoryBackend(), batching=False)
    for _ in range(n):
        metrics.increment("requests", tags={{"route": "/", "code": "200"}})
elif case in ("call", "whole", "after", "aggregate"):
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend
    if case in ("call", "after"):  # the worker idle: batches larger than the run
        metrics = Metrics(MemoryBackend(), batch_size=10 * n + 10, max_buffer=10 * n + 10,
                          flush_interval=3600)
    else:
        options = {{"aggregate": True}} if case == "aggregate" else {{}}
        metrics = Metrics(MemoryBackend(), max_buffer=10 * n + 10, **options)
    for _ in range(n):
        metrics.increment("requests", tags={{"route": "/", "code": "200"}})
    if case == "call":
        metrics._dispatcher.queue.clear()  # the worker's share is not the caller's
    else:
        metrics.flush()
elif case in ("influx", "influx-raw"):
    # Gauges with two tags into the real InfluxDB the bench started, batches of 5,000:
    # this process's instructions only (the server's are its own).
    import os, time, uuid
    port = int(os.environ["KANEDA_BENCH_INFLUX_PORT"])
    database = "instructions_" + uuid.uuid4().hex[:8]
    tags = {{"route": "/checkout", "region": "eu-west-1"}}
    if case == "influx":
        from kaneda_core import Metrics
        from kaneda_influx import InfluxBackend
        backend = InfluxBackend(database, host="127.0.0.1", port=port, timeout=60)
        metrics = Metrics(backend, batch_size=5000, max_buffer=10 * n + 10)
        metrics.gauge("warmup", 0)
        metrics.flush()
        for i in range(n):
            metrics.gauge("checkout.total", i, tags=tags)
        metrics.flush()
        assert metrics.stats().sent == n + 1, metrics.stats()
        metrics.close()
    else:
        from influxdb import InfluxDBClient
        client = InfluxDBClient("127.0.0.1", port, database=database, timeout=60)
        client.create_database(database)
        base, batch = time.time_ns() // 1000, []
        for i in range(n):
            batch.append({{"measurement": "gauge", "time": base + i,
                          "fields": {{"value": float(i)}},
                          "tags": {{"name": "checkout.total", "host": "bench", **tags}}}})
            if len(batch) == 5000:
                client.write_points(batch, time_precision="u", batch_size=5000)
                batch = []
        if batch:
            client.write_points(batch, time_precision="u", batch_size=5000)
elif case == "dogstatsd-aggregated":
    from datadog.dogstatsd.base import DogStatsd
    client = DogStatsd(host="127.0.0.1", port=9, disable_buffering=False,
                       disable_aggregation=False, disable_telemetry=True)
    for _ in range(n):
        client.increment("requests", tags=["route:/", "code:200"])
    client.flush_aggregated_metrics()
    client.close_socket()
"""

CASES = {
    "bare": "a bare method: stamp time_ns() and append a tuple",
    "call": "**kaneda_core, batching: the call**",
    "whole": "**kaneda_core: the calls + the flush() that delivers them**",
    "after": "kaneda_core: the calls, then the flush() (the worker idle until then)",
    "aggregate": "kaneda_core, aggregate=True: the calls + the flush()",
    "sync": "kaneda_core, sync (memory backend): delivered in the call",
    "dogstatsd-aggregated": "DogStatsD, client-side aggregation (calls + flush)",
}
KANEDA_ROWS = ("call", "whole", "after", "aggregate", "sync", "influx")

#: Into a real InfluxDB (started for them; Debian's ``influxdb``): the client's instructions.
INFLUX_CASES = {
    "influx": "**kaneda-influx: gauge() calls + the flush() that writes them**",
    "influx-raw": "influxdb client, write_points of point dicts built in the loop",
}


def instructions(driver: Path, case: str, calls: int, source: Path | None) -> int:
    """Instructions callgrind counts for the driver running ``case`` with ``calls`` calls."""
    # One hash seed for every run: dict and set layouts, and so their work, the same.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if source is not None:
        plugin = source / "plugins" / "kaneda-influx"  # the plugin of that commit too
        env["PYTHONPATH"] = os.pathsep.join([str(source), str(plugin), env.get("PYTHONPATH", "")])
    with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out.name}",
                # The interpreter itself, not a wrapper script (pyenv's shims are shell).
                os.path.realpath(sys.executable),
                str(driver),
                case,
                str(calls),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        for line in Path(out.name).read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no total")


def per_call(driver: Path, case: str, source: Path | None = None) -> int:
    """Instructions of one more call: the difference between 2N and N calls, over N."""
    return (instructions(driver, case, 2 * N, source) - instructions(driver, case, N, source)) // N


def print_rows(driver: Path, cases: dict[str, str], befores: list[tuple[str, Path]]) -> None:
    """A table row per case, and kaneda's rows again at each ``--before`` commit."""
    for case, label in cases.items():
        print(f"| {label} | {per_call(driver, case):,} |", flush=True)
        if case in KANEDA_ROWS:
            for ref, source in befores:
                count = per_call(driver, case, source)
                print(f"| {label.strip('*')} — at {ref} | {count:,} |", flush=True)


@contextlib.contextmanager
def influx_server() -> Iterator[int]:
    """A throwaway influxd on a free loopback port (the kaneda-influx tests' helper)."""
    sys.path.insert(0, str(HERE.parent / "plugins" / "kaneda-influx" / "tests"))
    from influx_server import InfluxServer

    server = InfluxServer()
    server.start()
    try:
        yield server.port
    finally:
        server.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REF", action="append", default=[])
    args = parser.parse_args()
    from bench_hot_path import checkout

    befores = [(ref, checkout(ref)) for ref in args.before]
    with tempfile.TemporaryDirectory() as folder:
        driver = Path(folder) / "driver.py"
        driver.write_text(DRIVER.format(bench=str(HERE)))
        print(f"Python {sys.version.split()[0]}, instructions per call, from {N:,} and {2 * N:,}")
        print("calls under callgrind\n")
        print("| increment with two tags | instructions per call |")
        print("|---|---:|")
        try:
            print_rows(driver, CASES, befores)
            title = "a gauge with two tags into InfluxDB (this process only)"
            print(f"\n| {title} | instructions per point |")
            print("|---|---:|")
            with influx_server() as port:
                os.environ["KANEDA_BENCH_INFLUX_PORT"] = str(port)
                print_rows(driver, INFLUX_CASES, befores)
        finally:
            for _, source in befores:
                subprocess.run(["git", "worktree", "remove", "--force", str(source)], check=False)


if __name__ == "__main__":
    main()
