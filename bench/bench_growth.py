"""How the cost of ``metrics.increment(...)`` grows with tags, series and the disk buffer.

    python3 bench/bench_growth.py [--calls 100000] [--repeat 5]

Each cell of the table runs in an interpreter of its own and times ``--calls`` calls
with a plain loop, garbage collection on, ``--repeat`` times (the median and the
spread are shown). The calls cycle through a list of ``(name, tags)`` built before the
clock starts, so the loop measures the calls, not the building of their arguments:

- tags: 0 (``tags=None``), 2 or 8 string tags per call;
- series: 1, 1,000 or 100,000 distinct series, cycled through in order (with tags, one
  tag's value tells the series apart; without tags, the name does);
- the caller's cost ("call": batches larger than the calls, so the worker is idle while
  the calls are timed and delivers between repeats) and the whole cost ("whole": the
  calls and the ``flush()`` that delivers them to the memory backend, timed together,
  default batches of 1,000);
- ``buffer_path`` off and on (on: the queue is a SQLite file, each call writes a row);
- the same calls with kaneda-influx as the backend (no server: the worker is idle, so
  this is the caller's cost with the plugin's check at every call, whose series cache is
  bounded in bytes: see ``kaneda_influx/series_cache.py``).

Installed hook plugins are blocked, so the rows measure kaneda alone.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_hot_path import without_hook_plugins  # noqa: E402

TAG_COUNTS = (0, 2, 8)
SERIES = (1, 1000, 100_000)
#: Columns: (title, backend, measure, disk buffer).
COLUMNS = (
    ("call", "memory", "call", False),
    ("whole", "memory", "whole", False),
    ("call, `buffer_path`", "memory", "call", True),
    ("whole, `buffer_path`", "memory", "whole", True),
    ("call, kaneda-influx", "influx", "call", False),
)


def plan(calls: int, tags: int, series: int) -> list[tuple[str, dict[str, str] | None]]:
    """``calls`` (name, tags) arguments cycling through ``series`` distinct series."""
    distinct: list[tuple[str, dict[str, str] | None]] = []
    for index in range(series):
        if tags == 0:
            distinct.append((f"requests.{index}" if series > 1 else "requests", None))
            continue
        made = {"series": f"s{index}"}
        for extra in range(1, tags):
            made[f"tag{extra}"] = f"value-{extra}"
        distinct.append(("requests", made))
    return [distinct[i % series] for i in range(calls)]


def cell(
    calls: int, repeat: int, tags: int, series: int, backend_name: str, measure: str, disk: bool
) -> list[float]:
    """Per-call seconds, one per repeat (run in a fresh interpreter)."""
    without_hook_plugins()
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    arguments = plan(calls, tags, series)
    backend: Any
    if backend_name == "influx":
        from kaneda_influx import InfluxBackend

        backend = InfluxBackend("bench", host="127.0.0.1", port=9)  # never reached
    else:
        backend = MemoryBackend()
    options: dict[str, Any] = {"max_buffer": 2 * calls}
    if measure == "call":  # the worker idle during the timing: the caller's cost alone
        options.update(batch_size=2 * calls, flush_interval=3600)
    folder = tempfile.mkdtemp(prefix="kaneda-growth-")
    if disk:
        options["buffer_path"] = os.path.join(folder, "buffer.sqlite")
    metrics = Metrics(backend, **options)
    increment = metrics.increment
    times = []
    for _ in range(repeat):
        if backend_name == "influx":
            metrics._dispatcher.queue.clear()  # nothing to deliver to: start empty
        else:
            metrics.flush()
            backend.clear()
        started = time.perf_counter()
        for name, tag_dict in arguments:
            increment(name, tags=tag_dict)
        if measure == "whole":
            metrics.flush()
        times.append((time.perf_counter() - started) / calls)
    if backend_name == "memory":
        metrics.flush()
        stats = metrics.stats()
        assert stats.sent == repeat * calls and stats.dropped == stats.failed == 0, stats
    else:
        metrics._dispatcher.queue.clear()
    metrics.close(0)
    return times


def run_cell(spec: dict[str, Any]) -> list[float]:
    done = subprocess.run(
        [sys.executable, __file__, "--cell", json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"{spec} failed:\n{done.stderr[-3000:]}")
    return [float(x) for x in json.loads(done.stdout.splitlines()[-1])]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(**json.loads(args.cell))))
        return
    results: dict[tuple[int, int, int], list[float]] = {}
    # Column by column over the whole grid, so that a busy moment of the machine spreads
    # over many rows rather than spoiling one.
    for column, (_, backend, measure, disk) in enumerate(COLUMNS):
        for tags in TAG_COUNTS:
            for series in SERIES:
                spec = {
                    "calls": args.calls,
                    "repeat": args.repeat,
                    "tags": tags,
                    "series": series,
                    "backend_name": backend,
                    "measure": measure,
                    "disk": disk,
                }
                results[(column, tags, series)] = run_cell(spec)
                print(f"{COLUMNS[column][0]} tags={tags} series={series}: "
                      f"{statistics.median(results[(column, tags, series)]) * 1e6:.2f} µs",
                      file=sys.stderr)  # fmt: skip
    print(
        f"increment(...), {args.calls:,} calls per repeat, {args.repeat} repeats, each cell in "
        "its own interpreter; µs per call, median (lowest to highest)\n"
    )
    print("| tags | series | " + " | ".join(title for title, *_ in COLUMNS) + " |")
    print("|---:|---:|" + "---:|" * len(COLUMNS))
    for tags in TAG_COUNTS:
        for series in SERIES:
            cells = []
            for column in range(len(COLUMNS)):
                times = results[(column, tags, series)]
                cells.append(
                    f"{statistics.median(times) * 1e6:.2f} "
                    f"({min(times) * 1e6:.2f} to {max(times) * 1e6:.2f})"
                )
            print(f"| {tags} | {series:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
