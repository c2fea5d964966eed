"""Points per second into a real InfluxDB 1.x, side by side in one run.

    python3 bench/bench_influx.py [--points 200000]

Starts a throwaway influxd (Debian's ``influxdb`` package) on a free loopback port, then
writes the same gauges, each with two tags, in four ways, each into a database of its
own, and counts what was stored with ``SELECT count(*)``:

- kaneda-influx: ``metrics.gauge(...)`` calls with batching on (batches of 5,000), timed
  from the first call until ``flush()`` returns, calls included; once in the default
  layout and once in kaneda 1.0's (``layout="kaneda1"``: ``name`` a field, ints as
  integers);
- the raw ``influxdb`` client: ``write_points`` of point dicts, batches of 5,000 (the
  dicts are built in the timed loop, as an application would);
- pre-serialized line protocol POSTed to ``/write`` in batches of 5,000: the server's
  ceiling, nothing left to do on the client; once per layout, since the server's work
  differs (kaneda 1.0's layout stores the name as a string field in every point);
- kaneda 1.0 from PyPI (``pip download kaneda==1.0``), one point per call, in a
  subprocess (fewer points: it does one HTTP request per metric).

A second table isolates each layout's client-side cost per metric, with no server: its
``check`` (run at every reporting call) and the worker's line protocol for a batch.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "kaneda-influx" / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hot_path import kaneda_1_0, without_hook_plugins  # noqa: E402
from influx_server import InfluxServer  # noqa: E402

BATCH = 5000
TAGS = {"route": "/checkout", "region": "eu-west-1"}


def count(server: InfluxServer, database: str) -> int:
    answer = server.query("SELECT count(value) FROM /.*/", db=database)
    series = answer["results"][0].get("series", [])
    return sum(s["values"][0][1] for s in series)


def run_kaneda(server: InfluxServer, points: int, layout: str = "kaneda2") -> float:
    from kaneda_influx import InfluxBackend

    from kaneda_core import Metrics

    without_hook_plugins()
    database = f"bench_{layout}"
    backend = InfluxBackend(database, host="127.0.0.1", port=server.port, timeout=60, layout=layout)
    metrics = Metrics(backend, batch_size=BATCH, max_buffer=points + 1)
    metrics.gauge("warmup", 0)  # creates the database before the clock starts
    metrics.flush()
    gauge = metrics.gauge
    started = time.perf_counter()
    for i in range(points):
        gauge("checkout.total", i, tags=TAGS)
    metrics.flush()
    elapsed = time.perf_counter() - started
    metrics.close()
    assert count(server, database) == points + 1
    return points / elapsed


def run_raw_client(server: InfluxServer, points: int) -> float:
    from influxdb import InfluxDBClient

    client = InfluxDBClient("127.0.0.1", server.port, database="bench_raw", timeout=60)
    client.create_database("bench_raw")
    started = time.perf_counter()
    base = time.time_ns() // 1000
    batch = []
    for i in range(points):
        batch.append(
            {
                "measurement": "gauge",
                "tags": {"name": "checkout.total", "host": "bench", **TAGS},
                "time": base + i,  # distinct microseconds: points at one time would merge
                "fields": {"value": float(i)},
            }
        )
        if len(batch) == BATCH:
            client.write_points(batch, time_precision="u", batch_size=BATCH)
            batch = []
    if batch:
        client.write_points(batch, time_precision="u", batch_size=BATCH)
    elapsed = time.perf_counter() - started
    assert count(server, "bench_raw") == points
    return points / elapsed


def run_line_protocol(server: InfluxServer, points: int, layout: str = "kaneda2") -> float:
    database = f"bench_lines_{layout}"
    server.query(f"CREATE DATABASE {database}")
    base = time.time_ns() // 1000
    if layout == "kaneda1":
        line = (
            'gauge,host=bench,region=eu-west-1,route=/checkout name="checkout.total",value={}i {}'
        )
    else:
        line = "gauge,host=bench,name=checkout.total,region=eu-west-1,route=/checkout value={} {}"
    bodies = [
        "\n".join(
            line.format(i if layout == "kaneda1" else float(i), base + i)
            for i in range(start, min(points, start + BATCH))
        ).encode()
        for start in range(0, points, BATCH)
    ]
    url = f"{server.url}/write?db={database}&precision=u"
    started = time.perf_counter()
    for body in bodies:
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")).close()
    elapsed = time.perf_counter() - started
    assert count(server, database) == points
    return points / elapsed


def run_kaneda_1_0(server: InfluxServer, points: int) -> float:
    script = f"""
import sys, time
sys.path.insert(0, {str(kaneda_1_0())!r})
from kaneda import Metrics
from kaneda.backends import InfluxBackend
backend = InfluxBackend("bench_k10", host="127.0.0.1", port={server.port}, timeout=60)
metrics = Metrics(backend=backend)
started = time.perf_counter()
for i in range({points}):
    metrics.gauge("checkout.total", i, tags={TAGS!r})
print({points} / (time.perf_counter() - started))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    stored = count(server, "bench_k10")
    assert stored == points, f"kaneda 1.0 stored {stored} of {points}"
    return float(out.stdout.strip().splitlines()[-1])


def client_side_costs(rounds: int = 9) -> list[tuple[str, float, float]]:
    """Per layout: µs per metric for ``check`` (at the call) and for ``lines`` (worker).

    The layouts are timed in turn, round after round, and the best round of each kept:
    a machine shared with other work slows both alike.
    """
    from time import perf_counter

    from kaneda_influx.layouts import LAYOUTS

    from kaneda_core import Metric

    batch = [Metric.create("checkout.total", "gauge", i, TAGS) for i in range(BATCH)]
    layouts = {name: layout_class() for name, layout_class in LAYOUTS.items()}
    best = {name: [float("inf"), float("inf")] for name in layouts}
    for _ in range(rounds):
        for name, layout in layouts.items():
            started = perf_counter()
            for metric in batch:
                layout.check(metric)
            checked = perf_counter()
            layout.lines(batch, {})
            done = perf_counter()
            best[name][0] = min(best[name][0], checked - started)
            best[name][1] = min(best[name][1], done - checked)
    return [(name, c / BATCH * 1e6, w / BATCH * 1e6) for name, (c, w) in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--points-1-0", type=int, default=3000)
    args = parser.parse_args()
    server = InfluxServer()
    server.start()
    try:
        rows = [
            (
                "pre-serialized line protocol, POST /write (server ceiling)",
                run_line_protocol(server, args.points),
            ),
            (
                "pre-serialized line protocol, kaneda 1.0's layout (its server ceiling)",
                run_line_protocol(server, args.points, "kaneda1"),
            ),
            ("**kaneda-influx**, metrics.gauge() calls, batching", run_kaneda(server, args.points)),
            (
                '**kaneda-influx**, `layout="kaneda1"`, same calls',
                run_kaneda(server, args.points, "kaneda1"),
            ),
            ("influxdb client, write_points", run_raw_client(server, args.points)),
            ("kaneda 1.0, one point per call", run_kaneda_1_0(server, args.points_1_0)),
        ]
    finally:
        server.destroy()
    raw = rows[4][1]
    print(
        f"{args.points:,} points (kaneda 1.0: {args.points_1_0:,}), batches of {BATCH:,}, "
        "each count checked by query\n"
    )
    print("| writer | points/s | vs raw client |")
    print("|---|---:|---:|")
    for label, rate in rows:
        print(f"| {label} | {rate:,.0f} | {rate / raw:.2f}x |")
    print("\n| layout | check, µs/metric (at the call) | lines, µs/metric (worker) |")
    print("|---|---:|---:|")
    for name, check, lines in client_side_costs():
        print(f"| `{name}` | {check:.2f} | {lines:.2f} |")


if __name__ == "__main__":
    main()
