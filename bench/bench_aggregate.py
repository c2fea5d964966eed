"""Ten million calls from one process into a real InfluxDB, aggregated, every count checked.

    python3 bench/bench_aggregate.py [--calls 10000000] [--series 10] [--interval 1.0]

Starts a throwaway influxd (Debian's ``influxdb`` package) on a free loopback port and
reports ``metrics.increment("requests", tags={"route": ...})`` ``--calls`` times over
``--series`` routes with ``aggregate=True``, then flushes. It prints the calls per
second (the calls and the flush that delivers them), and checks by query that the sum
of the stored counters equals the calls for every series, and that each series has one
point per interval (about the run's length over ``--interval``), not one per call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "kaneda-influx" / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hot_path import without_hook_plugins  # noqa: E402
from influx_server import InfluxServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    without_hook_plugins()
    from kaneda_core import connect

    server = InfluxServer()
    server.start()
    try:
        url = f"influxdb://127.0.0.1:{server.port}/aggregated?timeout=10"
        tags = [{"route": f"/r{i}"} for i in range(args.series)]
        started = time.perf_counter()
        with connect(url, aggregate=True, flush_interval=args.interval) as metrics:
            increment = metrics.increment
            for i in range(args.calls):
                increment("requests", tags=tags[i % args.series])
            metrics.flush(60)
            seconds = time.perf_counter() - started
            stats = metrics.stats()
        answer = server.query(
            'SELECT sum("value"), count("value") FROM "counter" GROUP BY "route"', db="aggregated"
        )
        rows = {
            series["tags"]["route"]: series["values"][0][1:]
            for series in answer["results"][0]["series"]
        }
    finally:
        server.destroy()
    expected = {f"/r{i}": len(range(i, args.calls, args.series)) for i in range(args.series)}
    sums = {route: int(total) for route, (total, _) in rows.items()}
    points = [count for _, count in rows.values()]
    assert sums == expected, (sums, expected)
    assert stats.folded == args.calls and stats.failed == 0 and stats.dropped == 0, stats
    intervals = seconds / args.interval
    assert max(points) <= intervals + 2, (points, intervals)
    print(f"{args.calls:,} calls over {args.series} series in {seconds:.2f} s")
    print(f"{args.calls / seconds:,.0f} calls/s, {seconds / args.calls * 1e6:.2f} µs per call")
    print(f"stored: {sum(points)} points ({min(points)}-{max(points)} per series over")
    print(f"{intervals:.1f} intervals); every series' sum equals its calls")


if __name__ == "__main__":
    main()
