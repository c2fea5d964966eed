"""What Kaneda adds to an ``os.fork()``, in the parent, when nothing is in flight.

    python3 bench/bench_fork.py                 # prints a Markdown table
    python3 bench/bench_fork.py --before REF    # adds the rows at git REF

Each row runs in an interpreter of its own and times ``FORKS`` forks in the parent (the
child leaves at once through ``os._exit``): Python alone, then a process with a
batching ``Metrics`` (its worker idle) whose fork steps run before and after each fork
(wait for the threads inside a backend, hold the disk buffer and the log handlers, and
in the child make new locks and a new worker). With ``buffer_path`` the disk buffer is
held too; with 400 loggers each with a handler, every handler's lock is taken. Forks
vary by hundreds of µs from run to run, so the "steps" rows time Kaneda's steps in the
parent (before the fork and after it) on their own, without a fork between.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORKS = 200
HERE = Path(__file__).resolve().parent

CASE = """
import json, logging, os, sys, tempfile, time
case, forks = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, {bench!r})
from bench_hot_path import without_hook_plugins
without_hook_plugins()
if case != "python":
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend
    options = {{}}
    if case == "buffer":
        options["buffer_path"] = os.path.join(tempfile.mkdtemp(), "b.sqlite")
    if case.startswith("handlers"):
        for number in range(200):
            logging.getLogger(f"app.{{number}}").addHandler(logging.NullHandler())
            logging.getLogger(f"lib.{{number}}").addHandler(logging.StreamHandler())
    metrics = Metrics(MemoryBackend(), **options)
    metrics.increment("warm")
    metrics.flush(5)
times = []
for _ in range(forks):
    started = time.perf_counter()
    if case.endswith("steps"):  # Kaneda's steps in the parent, without the fork between
        from kaneda_core import forking
        forking._before_fork()
        forking._release_held()
        times.append(time.perf_counter() - started)
        continue
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    times.append(time.perf_counter() - started)
    os.waitpid(pid, 0)
print(json.dumps(times))
"""

CASES = {
    "python": "Python alone",
    "metrics": "a batching Metrics, worker idle",
    "buffer": "a batching Metrics with buffer_path",
    "handlers": "a batching Metrics, 400 loggers with a handler each",
    "metrics steps": "Kaneda's fork steps in the parent alone (a batching Metrics)",
    "handlers steps": "Kaneda's fork steps in the parent alone (400 loggers with a handler)",
}


#: A multiprocessing pool started while the worker's send waits on a server that never
#: answers: the first fork waits for the send (2 s at most), the others do not.
POOL_IN_AN_OUTAGE = """
import multiprocessing, socket, sys, threading, time
sys.path.insert(0, {bench!r})
from bench_hot_path import without_hook_plugins
without_hook_plugins()
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(64)
held = []  # accepted and never answered
threading.Thread(target=lambda: [held.append(server.accept()) for _ in iter(int, 1)],
                 daemon=True).start()
from kaneda_core import connect
metrics = connect(f"influxdb://127.0.0.1:{{server.getsockname()[1]}}/db?timeout=30")
metrics.gauge("x", 1)
time.sleep(1.5)  # the worker is inside its send by now
started = time.monotonic()
with multiprocessing.get_context("fork").Pool(8) as pool:
    assert pool.map(abs, range(-8, 0)) == list(range(8, 0, -1))
    print(time.monotonic() - started)
"""


def pool_in_an_outage() -> float:
    """Seconds to start a fork Pool(8) (and run one map) while a send hangs."""
    script = Path(tempfile.mkdtemp()) / "pool_outage.py"
    script.write_text(POOL_IN_AN_OUTAGE.format(bench=str(HERE)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    return float(done.stdout.splitlines()[-1])


def run(case: str, source: Path | None) -> list[float]:
    """The parent's time of each fork, in an interpreter of its own."""
    script = Path(tempfile.mkdtemp()) / "fork_case.py"
    script.write_text(CASE.format(bench=str(HERE)))
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, str(script), case, str(FORKS)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return [float(x) for x in json.loads(done.stdout.splitlines()[-1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REF", action="append", default=[])
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from bench_hot_path import checkout

    befores = [(ref, checkout(ref)) for ref in args.before]
    print(f"Python {sys.version.split()[0]}, {FORKS} forks per row, {time.strftime('%Y-%m-%d')}")
    print()
    print("| process | fork, median µs | 90th percentile µs |")
    print("|---|---:|---:|")
    for case, label in CASES.items():
        rows = [(label, None)]
        if case != "python":
            rows += [(f"{label} — at {ref}", source) for ref, source in befores]
        for name, source in rows:
            times = sorted(run(case, source))
            median = statistics.median(times) * 1e6
            p90 = times[int(len(times) * 0.9)] * 1e6
            print(f"| {name} | {median:,.0f} | {p90:,.0f} |", flush=True)
    print()
    print(
        "A fork Pool(8) started while the worker's send waits on a server that never "
        f"answers (kaneda-influx): {pool_in_an_outage():.2f} s"
    )


if __name__ == "__main__":
    main()
