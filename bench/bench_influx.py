"""Points per second into a real InfluxDB 1.x, side by side in one run.

    python3 bench/bench_influx.py [--points 200000] [--rounds 5] [--tables main,options,batch]
                                  [--before REF]

Starts a throwaway influxd (Debian's ``influxdb`` package) on a free loopback port, then
writes the same gauges, each with two tags, in several ways, each run into a database of
its own (dropped afterwards), and counts what was stored with ``SELECT count(value)``:

- kaneda-influx: ``metrics.gauge(...)`` calls with batching on (batches of 5,000), timed
  from the first call until ``flush()`` returns, calls included; in the default layout
  and in kaneda 1.0's (``layout="kaneda1"``);
- the raw ``influxdb`` client: ``write_points`` of point dicts, batches of 5,000 (the
  dicts are built in the timed loop, as an application would);
- pre-serialized line protocol POSTed to ``/write`` in batches of 5,000 over one
  keep-alive connection: the server's ceiling, nothing left to do on the client. The
  bodies are the very lines kaneda-influx writes for the same gauges (built before the
  clock starts), once per layout, since the server's work differs;
- kaneda 1.0 from PyPI (``pip download kaneda==1.0``), one point per call (fewer points:
  it does one HTTP request per metric), once.

Every row runs in an interpreter of its own; the rows take turns, round after round (the
order rotated each round), so that a machine shared with other work slows them alike.
Each table gives the median points/s over the rounds, the lowest and highest, and the
median of each round's ratio to that round's ceiling.

The ``options`` table turns each choice of the write path on and off, everything else
at the defaults: the request size (``part_size``: a batch of 5,000 in one request, or in
parts with the next part built while one is in flight), that overlap itself (parts sent
one after the other), ``gzip``, and keep-alive (a new connection per request). The
``batch`` table varies ``Metrics(batch_size=...)``, with the ceiling at the same request
size. A last table isolates each layout's client-side cost per metric, with no server:
its ``check`` (run at every reporting call) and the worker's line protocol for a batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "kaneda-influx" / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hot_path import kaneda_1_0, without_hook_plugins  # noqa: E402
from influx_server import InfluxServer  # noqa: E402

BATCH = 5000
TAGS = {"route": "/checkout", "region": "eu-west-1"}


class Clock:
    """Wall time, this process's CPU time and the server's, over the timed part of a row."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.wall = self.cpu = self.server_cpu = 0.0

    def start(self) -> None:
        self._started = (time.perf_counter(), time.process_time(), process_cpu(self.server_pid))

    def stop(self) -> None:
        wall, cpu, server = self._started
        self.wall = time.perf_counter() - wall
        self.cpu = time.process_time() - cpu
        self.server_cpu = process_cpu(self.server_pid) - server

    def result(self, points: int) -> dict[str, float]:
        """Points/s, and the CPU µs per point of this process and of the server."""
        return {
            "rate": points / self.wall,
            "client_us": self.cpu / points * 1e6,
            "server_us": self.server_cpu / points * 1e6,
        }


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) process ``pid`` has used so far, all threads."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count(server: InfluxServer, database: str) -> int:
    answer = server.query("SELECT count(value) FROM /.*/", db=database)
    series = answer["results"][0].get("series", [])
    return sum(s["values"][0][1] for s in series)


# -- the rows, each run in a fresh interpreter (see child()) ------------------------------


def run_kaneda(
    port: int,
    database: str,
    points: int,
    clock: Clock,
    *,
    layout: str = "kaneda2",
    batch_size: int = BATCH,
    overlap: bool = True,
    keepalive: bool = True,
    **backend_options: Any,
) -> dict[str, float]:
    """kaneda-influx end to end: the calls, then ``flush()``."""
    from kaneda_influx import InfluxBackend

    from kaneda_core import Metrics

    without_hook_plugins()
    backend = InfluxBackend(
        database, host="127.0.0.1", port=port, timeout=60, layout=layout, **backend_options
    )
    if not overlap:
        one_at_a_time(backend)
    if not keepalive:
        new_connection_per_request(backend)
    metrics = Metrics(backend, batch_size=batch_size, max_buffer=points + 1)
    metrics.gauge("warmup", 0)  # creates the database before the clock starts
    metrics.flush()
    gauge = metrics.gauge
    clock.start()
    for i in range(points):
        gauge("checkout.total", i, tags=TAGS)
    metrics.flush()
    clock.stop()
    stats = metrics.stats()
    metrics.close()
    assert stats.sent == points + 1 and stats.failed == 0, stats
    return clock.result(points)


def one_at_a_time(backend: Any) -> None:
    """Each part's answer awaited as soon as it is sent: parts without the overlap."""
    start = backend._start

    class Answered:
        def __init__(self, sent: Any) -> None:
            self.error: Exception | None = None
            try:
                if isinstance(sent, Exception):
                    raise sent
                sent.answer()
            except Exception as error:  # noqa: BLE001 - raised again by answer()
                self.error = error

        def answer(self) -> bytes:
            if self.error is not None:
                raise self.error
            return b""

    backend._start = lambda payload: Answered(start(payload))


def new_connection_per_request(backend: Any) -> None:
    """Close the connection before each request: no keep-alive."""
    transport = backend._transport
    send = transport.send

    def fresh(*args: Any, **kwargs: Any) -> Any:
        transport.close()
        return send(*args, **kwargs)

    transport.send = fresh


def run_raw_client(
    port: int, database: str, points: int, clock: Clock, *, batch_size: int = BATCH
) -> dict[str, float]:
    """``influxdb.InfluxDBClient.write_points`` of point dicts built in the loop."""
    from influxdb import InfluxDBClient

    client = InfluxDBClient("127.0.0.1", port, database=database, timeout=60)
    client.create_database(database)
    clock.start()
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
        if len(batch) == batch_size:
            client.write_points(batch, time_precision="u", batch_size=batch_size)
            batch = []
    if batch:
        client.write_points(batch, time_precision="u", batch_size=batch_size)
    clock.stop()
    return clock.result(points)


def run_line_protocol(
    port: int,
    database: str,
    points: int,
    clock: Clock,
    *,
    layout: str = "kaneda2",
    batch_size: int = BATCH,
) -> dict[str, float]:
    """Pre-serialized line protocol (kaneda-influx's own lines), POSTed over keep-alive."""
    import http.client

    from kaneda_influx.layouts import LAYOUTS

    from kaneda_core import Metric

    builder = LAYOUTS[layout]()
    now = time.time_ns()
    metrics = [
        Metric.create("checkout.total", "gauge", i, TAGS)._replace(time_ns=now + 100 * i)
        for i in range(points)
    ]
    bodies = [
        builder.lines(metrics[start : start + batch_size], {}).encode()
        for start in range(0, points, batch_size)
    ]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/query", body=f"q=CREATE DATABASE {database}".encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    connection.getresponse().read()
    path = f"/write?db={database}&precision=n"
    clock.start()
    for body in bodies:
        connection.request("POST", path, body=body)
        response = connection.getresponse()
        response.read()
        assert response.status == 204, response.status
    clock.stop()
    connection.close()
    return clock.result(points)


ROWS = {"kaneda": run_kaneda, "raw": run_raw_client, "lines": run_line_protocol}


def child(spec: dict[str, Any]) -> None:
    """Run one row (in this fresh interpreter) and print what it measured."""
    row = ROWS[spec.pop("row")]
    clock = Clock(spec.pop("server_pid"))
    print(
        json.dumps(row(spec.pop("port"), spec.pop("database"), spec.pop("points"), clock, **spec))
    )


def measure(server: InfluxServer, spec: dict[str, Any], number: int) -> dict[str, float]:
    """One row in a fresh interpreter, its count checked: points/s and CPU per point."""
    assert server.process is not None
    database = f"bench_{number}"
    env = dict(os.environ)
    source = spec.pop("source", None)
    if source is not None:  # kaneda_core and kaneda_influx from another checkout
        plugin = os.path.join(source, "plugins", "kaneda-influx")
        env["PYTHONPATH"] = os.pathsep.join([source, plugin, env.get("PYTHONPATH", "")])
    spec = {**spec, "port": server.port, "database": database, "server_pid": server.process.pid}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode:
        raise RuntimeError(f"row {spec} failed:\n{done.stderr[-3000:]}")
    stored = count(server, database)
    # kaneda's rows also store their warm-up point.
    expected = spec["points"] + (spec["row"] == "kaneda")
    assert stored == expected, f"{spec}: stored {stored} of {expected}"
    server.query(f"DROP DATABASE {database}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


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


def stage_costs(server: InfluxServer, rounds: int = 7) -> list[tuple[str, list[float]]]:
    """µs per point of each stage of kaneda-influx's path, one batch of 5,000, in turn.

    The calls are timed with the worker idle; the worker's stages are run by hand on
    what the calls queued, in this thread; the POST is the plugin's own transport.
    """
    from kaneda_influx import InfluxBackend

    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    without_hook_plugins()
    idle = {"batch_size": 10 * BATCH, "max_buffer": 10 * BATCH, "flush_interval": 3600}
    memory = Metrics(MemoryBackend(), **idle)  # type: ignore[arg-type]
    backend = InfluxBackend("bench_stages", host="127.0.0.1", port=server.port, timeout=60)
    backend.create_database(60)
    influx = Metrics(backend, **idle)  # type: ignore[arg-type]
    labels = [
        "the call, memory backend (the core's own work)",
        "the call, kaneda-influx (the core's, the plugin's check, the record it checks)",
        "of which the plugin's check",
        "worker: the batch handed to the plugin (its records as queued: no Metric built)",
        "worker: line protocol of the records (the plugin)",
        "worker: POST of the batch's lines, until the answer (the server's work)",
    ]
    times: list[list[float]] = [[] for _ in labels]

    def per_point(started: float) -> float:
        return (time.perf_counter() - started) / BATCH * 1e6

    for _ in range(rounds):
        for number, metrics in enumerate((memory, influx)):
            gauge = metrics.gauge
            started = time.perf_counter()
            for i in range(BATCH):
                gauge("checkout.total", i, tags=TAGS)
            times[number].append(per_point(started))
        items = list(influx._dispatcher.queue)  # type: ignore[union-attr]
        for metrics in (memory, influx):
            metrics._dispatcher.queue.clear()  # type: ignore[union-attr]
        # What Delivery.deliver hands a backend that takes records (sends_records).
        started = time.perf_counter()
        records = (
            list(items) if influx._delivery._sends_records else influx._delivery.to_metrics(items)
        )
        times[3].append(per_point(started))
        started = time.perf_counter()
        for record in records:
            backend.check(record)
        times[2].append(per_point(started))
        started = time.perf_counter()
        body = backend.layout.lines(records, {}).encode()
        times[4].append(per_point(started))
        started = time.perf_counter()
        backend._write(body)
        times[5].append(per_point(started))
    memory.close(0)
    influx.close(0)
    stored = count(server, "bench_stages")
    assert stored == rounds * BATCH, stored
    totals = [sum(round_) for round_ in zip(times[1], *times[3:], strict=True)]
    return [*zip(labels, times, strict=True), ("sum: the call and the worker's stages", totals)]


def client_side_costs(rounds: int = 9) -> list[tuple[str, float, float]]:
    """Per layout: µs per metric for ``check`` (at the call) and for ``lines`` (worker).

    The layouts are timed in turn, round after round, and the best round of each kept:
    a machine shared with other work slows both alike.
    """
    from time import perf_counter

    from kaneda_influx.layouts import LAYOUTS

    from kaneda_core.model import host_name

    # The records the calls queue (and the worker hands kaneda-influx as they are).
    host = host_name()
    batch = [
        ("checkout.total", "gauge", i, dict(TAGS), None, host, None, time.time_ns())
        for i in range(BATCH)
    ]
    layouts = {name: layout_class() for name, layout_class in LAYOUTS.items()}
    best = {name: [float("inf"), float("inf")] for name in layouts}
    for _ in range(rounds):
        for name, layout in layouts.items():
            check = layout.check_at_call  # what the reporting calls run
            started = perf_counter()
            for metric in batch:
                check(metric)
            checked = perf_counter()
            layout.lines(batch, {})
            done = perf_counter()
            best[name][0] = min(best[name][0], checked - started)
            best[name][1] = min(best[name][1], done - checked)
    return [(name, c / BATCH * 1e6, w / BATCH * 1e6) for name, (c, w) in best.items()]


# -- the tables ---------------------------------------------------------------------------

Row = tuple[str, dict[str, Any]]


def tables(points: int, before: tuple[str, str] | None = None) -> dict[str, tuple[str, list[Row]]]:
    """Each table: its first column's title and its rows (label, spec); the first row of
    each table is the ceiling its ratios are taken against."""
    kaneda = {"row": "kaneda", "points": points}
    ceiling = {"row": "lines", "points": points}
    batch_rows: list[Row] = []
    for size in (500, 1000, 5000, 20000):
        batch_rows += [
            (
                f"pre-serialized line protocol, requests of {size:,}",
                {**ceiling, "batch_size": size},
            ),
            (f"**kaneda-influx**, `batch_size={size}`", {**kaneda, "batch_size": size}),
        ]
    return {
        "main": (
            "writer",
            [
                ("pre-serialized line protocol, POST /write (server ceiling)", ceiling),
                (
                    "pre-serialized line protocol, kaneda 1.0's layout (its server ceiling)",
                    {**ceiling, "layout": "kaneda1"},
                ),
                ("**kaneda-influx**, metrics.gauge() calls, batching", kaneda),
                (
                    '**kaneda-influx**, `layout="kaneda1"`, same calls',
                    {**kaneda, "layout": "kaneda1"},
                ),
                ("influxdb client, write_points", {"row": "raw", "points": points}),
                *(
                    [(f"kaneda-influx at {before[0]}, same calls", {**kaneda, "source": before[1]})]
                    if before
                    else []
                ),
            ],
        ),
        "options": (
            "kaneda-influx, batches of 5,000",
            [
                ("pre-serialized line protocol (server ceiling)", ceiling),
                ("defaults", kaneda),
                ("`part_size=5000`: one request per batch", {**kaneda, "part_size": 5000}),
                ("`part_size=2500`, overlapped", {**kaneda, "part_size": 2500}),
                ("`part_size=1000`, overlapped", {**kaneda, "part_size": 1000}),
                (
                    "`part_size=1000`, one part after the other",
                    {**kaneda, "part_size": 1000, "overlap": False},
                ),
                ("`gzip=True`", {**kaneda, "gzip": True}),
                ("no keep-alive (a connection per request)", {**kaneda, "keepalive": False}),
            ],
        ),
        "batch": ("writer, by request size", batch_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--points-1-0", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tables", default="main,options,batch")
    parser.add_argument("--before", metavar="REF", help="also kaneda-influx at git REF")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    before = (args.before, str(checkout(args.before))) if args.before else None
    try:
        run(args, before)
    finally:
        if before is not None:
            subprocess.run(["git", "worktree", "remove", "--force", before[1]], check=False)


def checkout(ref: str) -> Path:
    """A worktree of this repository at ``ref``, in a temporary folder."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="kaneda-before-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(folder), ref],
        check=True,
    )
    return folder


def run(args: argparse.Namespace, before: tuple[str, str] | None) -> None:
    """Every row of the chosen tables, round after round; then the tables."""
    chosen = {
        name: table for name, table in tables(args.points, before).items() if name in args.tables
    }
    # Every row of every chosen table once per round, in an order rotated each round.
    order = [(name, index) for name, (_, rows) in chosen.items() for index in range(len(rows))]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {key: [] for key in order}
    server = InfluxServer()
    server.start()
    number = 0
    try:
        for round_ in range(args.rounds):
            shift = round_ * len(order) // args.rounds
            for name, index in order[shift:] + order[:shift]:
                number += 1
                spec = chosen[name][1][index][1]
                runs[(name, index)].append(measure(server, dict(spec), number))
                print(f"round {round_ + 1}: {name} {index}: {runs[(name, index)][-1]}",
                      file=sys.stderr)  # fmt: skip
        legacy = run_kaneda_1_0(server, args.points_1_0) if "main" in chosen else None
        stages = stage_costs(server) if "main" in chosen else []
    finally:
        server.destroy()
    print(
        f"{args.points:,} gauges with two tags per row, {args.rounds} rounds, each row in its "
        "own interpreter, each count checked by query; CPU: this row's process (all its "
        "threads) and influxd's, per point, over the timed part, medians\n"
    )
    for name, (title, rows) in chosen.items():
        rates = {index: [run["rate"] for run in runs[(name, index)]] for index in range(len(rows))}
        ceiling = rates[0]
        raw = rates[4] if name == "main" else None
        print(
            f"| {title} | points/s, median | lowest to highest | of the ceiling, median | "
            f"{'vs raw client | ' if raw else ''}client CPU µs/point | influxd CPU µs/point |"
        )
        print("|---|---:|---:|---:|" + ("---:|" if raw else "") + "---:|---:|")
        for index, (label, _) in enumerate(rows):
            values = rates[index]
            if name == "batch" and index % 2 == 0:
                ceiling = values  # each request size against its own ceiling
            ratio = statistics.median(v / c for v, c in zip(values, ceiling, strict=True))
            versus = ""
            if raw:
                versus = (
                    f"{statistics.median(v / r for v, r in zip(values, raw, strict=True)):.2f}x | "
                )
            client = statistics.median(run["client_us"] for run in runs[(name, index)])
            influxd = statistics.median(run["server_us"] for run in runs[(name, index)])
            print(
                f"| {label} | {statistics.median(values):,.0f} | {min(values):,.0f} to "
                f"{max(values):,.0f} | {ratio:.0%} | {versus}{client:.2f} | {influxd:.2f} |"
            )
        if name == "main" and legacy is not None:
            label = f"kaneda 1.0, one point per call ({args.points_1_0:,})"
            print(f"| {label} | {legacy:,.0f} |" + " |" * 5)
        print()
    if stages:
        title = "where a point's time goes (kaneda-influx, batches of 5,000)"
        print(f"| {title} | µs/point, median | best |")
        print("|---|---:|---:|")
        for label, times in stages:
            print(f"| {label} | {statistics.median(times):.2f} | {min(times):.2f} |")
        print()
    print("| layout | check, µs/metric (at the call) | lines, µs/metric (worker) |")
    print("|---|---:|---:|")
    for layout, check, lines in client_side_costs():
        print(f"| `{layout}` | {check:.2f} | {lines:.2f} |")


if __name__ == "__main__":
    main()
