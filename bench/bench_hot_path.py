"""What one tagged counter increment costs, next to the alternatives, in one run.

    python3 bench/bench_hot_path.py                 # prints a Markdown table
    python3 bench/bench_hot_path.py --before REF    # adds kaneda_core's rows at git REF
                                                    # (--before may be given more than once)

Every row runs in an interpreter of its own (a peer's background threads slow whatever
shares its process), rows of kaneda_core at ``--before`` interleaved with today's.

Each row times ``N`` calls recording ``requests`` with tags route="/" and code="200",
repeated; the table shows the median and best per-call time. kaneda's batching rows:
"the call" is what the caller spends (validation, copy, timestamp, enqueue; the worker
delivers between repeats); "call + worker" has the worker building metrics and
delivering to the memory backend during the timing, sharing the GIL, so it is the
whole cost per metric. "sync" delivers in the caller's thread. Installed hook plugins
are blocked, so the rows measure the core alone. kaneda 1.0 is fetched from PyPI
(``pip download kaneda==1.0``) into a cache folder and given a do-nothing backend.
Also: ``import kaneda_core`` cumulative time from ``python -X importtime``, median of
fresh interpreters, with bytecode compiled (as an installed package has it).
"""

from __future__ import annotations

import collections
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

N = 100_000
REPEAT = 9
TAGS_LIST = ["route:/", "code:200"]
CACHE = Path(tempfile.gettempdir()) / "kaneda-bench-cache"


def per_call(stmt: Callable[[], object], setup: Callable[[], object] | None = None) -> list[float]:
    """Per-call seconds for each repeat of N calls."""
    times = []
    for _ in range(REPEAT):
        if setup:
            setup()
        times.append(timeit.timeit(stmt, number=N) / N)
    return times


def case_floor() -> list[float]:
    queue: collections.deque[tuple[object, ...]] = collections.deque()
    append = queue.append

    def call() -> None:
        append(("requests", 1, ("/", "200")))

    return per_call(call, queue.clear)


def without_hook_plugins() -> None:
    """Load no installed hook plugin (the example plugin's filter, say): measure the core.

    Called before kaneda_core builds its plugin manager, so none is even imported.
    """
    import pluggy

    pluggy.PluginManager.load_setuptools_entrypoints = lambda self, group, name=None: 0  # type: ignore[method-assign]


def case_stamp_and_append() -> list[float]:
    """The least a recorder of timestamped calls can do: stamp, then append a tuple."""
    from time import time_ns

    class Bare:
        def __init__(self) -> None:
            self.queue: collections.deque[tuple[object, ...]] = collections.deque()

        def increment(self, name: str, tags: dict[str, str]) -> None:
            self.queue.append((name, 1, tags, time_ns()))

    bare = Bare()

    def call() -> None:
        bare.increment("requests", tags={"route": "/", "code": "200"})

    return per_call(call, bare.queue.clear)


def case_kaneda_whole(aggregate: bool = False) -> list[float]:
    """The calls and the flush() that delivers them: the whole cost per metric."""
    without_hook_plugins()
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    backend = MemoryBackend()
    options = {"aggregate": True} if aggregate else {}  # (older versions lack it)
    metrics = Metrics(backend, max_buffer=10 * N, **options)
    times = []
    for _ in range(REPEAT):
        backend.clear()
        started = timeit.default_timer()
        for _ in range(N):
            metrics.increment("requests", tags={"route": "/", "code": "200"})
        metrics.flush()
        times.append((timeit.default_timer() - started) / N)
    stats = metrics.stats()
    assert (stats.folded if aggregate else stats.sent) == REPEAT * N, stats
    metrics.close()
    return times


def case_kaneda(batching: bool, worker_during_timing: bool = True) -> list[float]:
    without_hook_plugins()
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    backend = MemoryBackend()
    # With worker_during_timing False, batches are large enough that the worker only
    # delivers between repeats: the time is the caller's alone.
    batch = 1000 if worker_during_timing else 2 * N
    interval = 1.0 if worker_during_timing else 3600
    metrics = Metrics(
        backend, batching=batching, max_buffer=10 * N, batch_size=batch, flush_interval=interval
    )

    def call() -> None:
        metrics.increment("requests", tags={"route": "/", "code": "200"})

    def setup() -> None:
        metrics.flush()
        backend.clear()

    times = per_call(call, setup)
    metrics.flush()
    assert metrics.stats().sent == REPEAT * N and metrics.stats().dropped == 0
    metrics.close()
    return times


def case_prometheus() -> list[float]:
    from prometheus_client import CollectorRegistry, Counter

    counter = Counter("requests", "requests", ["route", "code"], registry=CollectorRegistry())

    def call() -> None:
        counter.labels(route="/", code="200").inc()

    return per_call(call)


def case_opentelemetry() -> list[float]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    counter = provider.get_meter("bench").create_counter("requests")

    def call() -> None:
        counter.add(1, {"route": "/", "code": "200"})

    return per_call(call)


def case_dogstatsd(aggregation: bool) -> list[float]:
    from datadog.dogstatsd.base import DogStatsd

    client = DogStatsd(
        host="127.0.0.1",
        port=9,
        disable_buffering=False,
        disable_aggregation=not aggregation,
        disable_telemetry=True,
    )

    def call() -> None:
        client.increment("requests", tags=TAGS_LIST)

    times = per_call(call)
    client.close_socket()
    return times


def kaneda_1_0() -> Path:
    """kaneda 1.0's sources from PyPI, unpacked once into the cache folder."""
    root = CACHE / "kaneda-1.0"
    if not root.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "kaneda==1.0",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
        with tarfile.open(CACHE / "kaneda-1.0.tar.gz") as archive:
            archive.extractall(CACHE, filter="data")
    return root


def case_kaneda_1_0() -> list[float]:
    script = f"""
import sys, timeit, json
sys.path.insert(0, {str(kaneda_1_0())!r})
from kaneda import Metrics
from kaneda.backends import BaseBackend
class Nothing(BaseBackend):
    def report(self, name, metric, value, tags, id_=None):
        pass
metrics = Metrics(backend=Nothing())
call = lambda: metrics.increment("requests", tags={{"route": "/", "code": "200"}})
print(json.dumps([timeit.timeit(call, number={N}) / {N} for _ in range({REPEAT})]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    import json

    return [float(x) for x in json.loads(out.stdout)]


def import_time_ms(statement: str, path: str | None = None, runs: int = 9) -> float:
    """Median time of an import ``statement`` in fresh interpreters, in ms.

    The sum of the cumulative times ``python -X importtime`` gives the top-level imports
    the statement makes (``from kaneda_core import Metrics`` imports the package, then
    the module the name comes from). Measured as installed code runs: with bytecode. A
    first, unmeasured run writes the .pyc files even where PYTHONDONTWRITEBYTECODE is
    set in this environment.
    """
    import os

    results = []
    prefix = f"import sys; sys.path.insert(0, {path!r}); " if path else ""
    code = prefix + statement
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    baseline = {
        line.split("|")[2].strip()
        for line in subprocess.run(
            [sys.executable, "-X", "importtime", "-c", prefix or "pass"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stderr.splitlines()
        if line.count("|") == 2
    }
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        total = 0
        for line in done.stderr.splitlines():
            parts = line.split("|")
            if len(parts) != 3 or parts[1].strip() == "cumulative":
                continue
            name = parts[2]
            top_level = name.startswith(" ") and not name.startswith("  ")
            if top_level and name.strip() not in baseline:
                total += int(parts[1])
        results.append(total / 1000)
    return statistics.median(results)


CASES: dict[str, tuple[str, Callable[[], list[float]]]] = {
    "floor": ("floor: deque.append of a tuple", case_floor),
    "bare": ("a bare method: stamp time_ns() and append a tuple", case_stamp_and_append),
    "call": ("**kaneda_core, batching: the call**", lambda: case_kaneda(True, False)),
    "whole": ("**kaneda_core: the calls + the flush() that delivers them**", case_kaneda_whole),
    "aggregate": (
        "**kaneda_core, aggregate=True: the calls + the flush() that delivers them**",
        lambda: case_kaneda_whole(aggregate=True),
    ),
    "worker": (
        "kaneda_core, batching: call + worker delivering to memory",
        lambda: case_kaneda(True),
    ),
    "sync": ("kaneda_core, sync (memory backend)", lambda: case_kaneda(False)),
    "dogstatsd-aggregated": ("DogStatsD, client-side aggregation", lambda: case_dogstatsd(True)),
    "dogstatsd": ("DogStatsD, buffered", lambda: case_dogstatsd(False)),
    "prometheus": ("prometheus_client, labels().inc()", case_prometheus),
    "opentelemetry": ("OpenTelemetry SDK, counter.add", case_opentelemetry),
    "kaneda1": ("kaneda 1.0, do-nothing backend", case_kaneda_1_0),
}
#: The rows measured again at --before.
KANEDA_ROWS = ("call", "whole", "worker", "sync")


def run_case(name: str, source: Path | None = None) -> list[float]:
    """Run one case in a fresh interpreter (importing kaneda_core from ``source``)."""
    import json
    import os

    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, __file__, "--case", name],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return [float(x) for x in json.loads(done.stdout.splitlines()[-1])]


def checkout(ref: str) -> Path:
    """A worktree of this repository at ``ref``, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="kaneda-before-"))
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        ["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(folder), ref],
        check=True,
    )
    return folder


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument(
        "--before",
        metavar="REF",
        action="append",
        default=[],
        help="also measure kaneda_core at git REF (repeatable)",
    )
    args = parser.parse_args()
    if args.case:
        print(json.dumps(CASES[args.case][1]()))
        return
    befores = [(ref, checkout(ref)) for ref in args.before]
    print(f"Python {platform.python_version()}, {N:,} calls x {REPEAT} repeats\n")
    print("| increment with two tags | median µs/call | best µs/call |")
    print("|---|---:|---:|")

    def row(label: str, times: list[float]) -> None:
        print(f"| {label} | {statistics.median(times) * 1e6:.2f} | {min(times) * 1e6:.2f} |")

    try:
        for name, (label, _) in CASES.items():
            row(label, run_case(name))
            if name in KANEDA_ROWS:
                for ref, folder in befores:
                    row(f"{label.strip('*')} — at {ref}", run_case(name, folder))
    finally:
        for _, folder in befores:
            subprocess.run(["git", "worktree", "remove", "--force", str(folder)], check=False)
    print()
    print("| import (python -X importtime, cumulative, median of 9) | ms |")
    print("|---|---:|")
    one = str(kaneda_1_0())
    rows = [
        ("import kaneda_core", "import kaneda_core", None),
        ("import kaneda (1.0)", "import kaneda", one),
        ("from kaneda_core import Metrics", "from kaneda_core import Metrics", None),
        ("from kaneda import Metrics (1.0)", "from kaneda import Metrics", one),
    ]
    for label, statement, path in rows:
        print(f"| {label} | {import_time_ms(statement, path):.1f} |")


if __name__ == "__main__":
    main()
