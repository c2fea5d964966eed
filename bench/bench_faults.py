"""The faults of real deployments, each run once: what was accepted, stored, lost, duplicated.

    python3 bench/bench_faults.py            # prints a Markdown table

Starts a throwaway influxd (Debian's ``influxdb``) for the scenarios that involve a
server and counts what it stored with InfluxQL; the others use the memory backend or a
log file, read back. "lost" is accepted minus stored minus what Kaneda counted as
refused or dropped (and said so): a silent loss. The same scenarios are tests in
``tests/`` and ``plugins/kaneda-influx/tests/``, which assert what this table shows.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "kaneda-influx" / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from bench_hot_path import without_hook_plugins  # noqa: E402
from influx_server import InfluxServer  # noqa: E402

from scripts import FLEET_MEMBER  # noqa: E402

Row = tuple[str, int, int, int, int, str]


def influx_counts(server: InfluxServer, database: str, where: str = "") -> tuple[int, int]:
    """(points stored, distinct values among them) of the gauge measurement."""
    q = f'SELECT count("value"), count(distinct("value")) FROM "gauge" {where} GROUP BY "p"'
    result = server.query(q, db=database)["results"][0]
    total = distinct = 0
    for series in result.get("series", []):
        total += series["values"][0][1]
        distinct += series["values"][0][2]
    return total, distinct


def fork_after_first_use(server: InfluxServer, buffered: bool) -> Row:
    from kaneda_core import connect

    database = f"fork_{int(buffered)}"
    folder = tempfile.mkdtemp()
    options = {"buffer_path": os.path.join(folder, "b.sqlite")} if buffered else {}
    metrics = connect(f"influxdb://127.0.0.1:{server.port}/{database}?timeout=5", **options)
    metrics.gauge("g", -1, tags={"p": "first"})
    metrics.flush(10)
    children = []
    for child in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                for i in range(20_000):
                    metrics.gauge("g", i, tags={"p": f"child{child}"})
                metrics.close(60)
            finally:
                os._exit(0)
        children.append(pid)
    for i in range(20_000):
        metrics.gauge("g", i, tags={"p": "parent"})
    metrics.flush(60)
    for pid in children:
        os.waitpid(pid, 0)
    failed = metrics.stats().failed
    metrics.close()
    stored, distinct = influx_counts(server, database)
    accepted = 100_001
    name = "fork after first use, 5 processes" + (", buffer_path" if buffered else "")
    return name, accepted, stored, accepted - stored - failed, stored - distinct, "InfluxDB"


def gunicorn_preload(server: InfluxServer, worker_class: str) -> Row:
    import http.client
    import shutil
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from influx_server import free_port

    database = f"gunicorn_{worker_class}"
    port = free_port()
    env = {
        **os.environ,
        "KANEDA_URL": f"influxdb://127.0.0.1:{server.port}/{database}?timeout=5",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    binary = shutil.which("gunicorn") or str(Path(sys.executable).parent / "gunicorn")
    apps = ROOT / "plugins" / "kaneda-influx" / "tests" / "apps"
    process = subprocess.Popen(
        [binary, "--preload", "--workers", "4", "--worker-class", worker_class, "--threads",
         "4", "--bind", f"127.0.0.1:{port}", "--chdir", str(apps), "reporting_app:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)

    def get(i: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", f"/?n={i % 50}")
        status = connection.getresponse().status
        connection.close()
        return status

    requests = 2_000
    with ThreadPoolExecutor(8) as pool:
        served = sum(1 for status in pool.map(get, range(requests)) if status == 200)
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    answer = server.query(
        'SELECT count("value") FROM "gauge" WHERE "name" = \'request\'', db=database
    )
    stored = answer["results"][0]["series"][0]["values"][0][1]
    return (
        f"gunicorn --preload, 4 {worker_class} workers, one gauge per request",
        served, stored, served - stored, max(0, stored - served), "InfluxDB",
    )  # fmt: skip


def _coarse(real: Callable[[], int]) -> Callable[[], int]:
    return lambda: real() // 50 * 50  # a clock of 50 ns steps


def two_processes_one_series(server: InfluxServer) -> Row:
    from kaneda_core import connect

    database = "two_processes"
    url = f"influxdb://127.0.0.1:{server.port}/{database}?timeout=5"
    start_reading, start_writing = os.pipe()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                import kaneda_core.metrics as module

                module.time_ns = _coarse(module.time_ns)  # type: ignore[assignment]
                metrics = connect(url, batch_size=5000)
                os.read(start_reading, 1)
                for _ in range(50_000):
                    metrics.increment("requests", tags={"route": "/"})
                metrics.close(60)
            finally:
                os._exit(0)
        children.append(pid)
    os.write(start_writing, b"go")
    for pid in children:
        os.waitpid(pid, 0)
    answer = server.query('SELECT count("value") FROM "counter"', db=database)
    stored = answer["results"][0]["series"][0]["values"][0][1]
    return (
        "two processes increment one series (a 50 ns clock)",
        100_000, stored, 100_000 - stored, 0, "InfluxDB",
    )  # fmt: skip


def coarse_clock(server: InfluxServer, step_ns: int, what: str) -> Row:
    """One process on a clock that reads in ``step_ns`` steps, 20,000 increments of one series."""
    from scripts import COARSE_CLOCK_REPORTER

    database = f"coarse_{step_ns}"
    url = f"influxdb://127.0.0.1:{server.port}/{database}?timeout=5"
    env = {**os.environ, "STEP_NS": str(step_ns), "CALLS": "20000"}
    done = subprocess.run([sys.executable, "-c", COARSE_CLOCK_REPORTER, url], env=env, check=False)
    answer = server.query('SELECT count("value") FROM "counter"', db=database)
    stored = answer["results"][0]["series"][0]["values"][0][1]
    notes = f"InfluxDB; close() left {'none' if done.returncode == 0 else 'some'}"
    return (f"one process on {what}, one series", 20_000, stored, 20_000 - stored, 0, notes)


def dripping_server() -> Row:
    from kaneda_influx import InfluxBackend

    from kaneda_core import Metrics
    from kaneda_core.testing import DripServer

    with DripServer() as drip:
        backend = InfluxBackend("app", host="127.0.0.1", port=drip.port, timeout=0.3)
        metrics = Metrics(backend, batching=False)
        started = time.monotonic()
        metrics.gauge("g", 1)
        took = time.monotonic() - started
        failed = metrics.stats().failed
    return (
        "a server answering one byte per 0.1 s, batching=False, timeout=0.3",
        1, 0, 1 - failed, 0, f"the call returned in {took:.2f} s, counted failed",
    )  # fmt: skip


FULL_DISK = (ROOT / "tests" / "test_disk_faults.py").read_text()


def disk_full() -> Row:
    namespace: dict[str, Any] = {}
    exec(FULL_DISK.split("def test_a_full_disk")[0], namespace)  # the script the test runs
    folder = tempfile.mkdtemp()
    script = Path(folder) / "full.py"
    script.write_text(namespace["FULL_DISK"])
    done = subprocess.run(
        [sys.executable, str(script), os.path.join(folder, "b.sqlite")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.splitlines()[-1])
    stored = sum(result["counts"].values())
    total = result["total"]
    return (
        "disk full (writes fail past 4 KiB) mid-stream, then space returns",
        7148, stored, 7148 - stored - result["failed"] - result["dropped"], total - stored,
        "memory backend; no call raised" if not result["raised"] else "a call raised",
    )  # fmt: skip


def corrupted_rows() -> Row:
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    path = os.path.join(tempfile.mkdtemp(), "b.sqlite")
    Metrics(MemoryBackend(), buffer_path=path).close()
    good = [json.dumps(["g", "gauge", i, {}, None, time.time_ns()]) for i in range(3001)]
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO queue (owner, item) VALUES ('gone', ?)",
            [(row,) for row in [*good[:1000], "{not json", '["short"]', *good[1000:]]],
        )
    backend = MemoryBackend()
    with Metrics(backend, buffer_path=path) as metrics:
        metrics.flush(30)
        unreadable = metrics.stats().unreadable
    stored = len(backend.metrics)
    return (
        "a buffer file with 2 unreadable rows among 3,001",
        3003, stored, 3003 - stored - unreadable, stored - len({m.value for m in backend.metrics}),
        f"{unreadable} moved to the quarantine table",
    )  # fmt: skip


def poison_metric() -> Row:
    from kaneda_core import Metric, Metrics
    from kaneda_core.backends import MemoryBackend

    class Picky(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            if any(m.value == 13 for m in batch):
                raise ValueError("cannot encode 13")
            super().send(batch)

    backend = Picky()
    with Metrics(backend, batch_size=1000, flush_interval=60) as metrics:
        for i in range(1000):
            metrics.gauge("g", i)
        metrics.flush(10)
        failed = metrics.stats().failed
    stored = len(backend.metrics)
    return (
        "one metric of a batch of 1,000 the backend cannot encode",
        1000, stored, 1000 - stored - failed, 0, f"{failed} failed and hooked, alone",
    )  # fmt: skip


def _report_to(path: str, count: int) -> None:
    metrics = _SHARED[0]
    for i in range(count):
        metrics.gauge("child", i)


_SHARED: list[Any] = []


def multiprocessing_exit() -> Row:
    from kaneda_core import Metrics
    from kaneda_core.backends import LoggerBackend

    path = os.path.join(tempfile.mkdtemp(), "m.jsonl")
    metrics = Metrics(LoggerBackend(filename=path), flush_interval=60, batch_size=100_000)
    _SHARED[:] = [metrics]
    context = multiprocessing.get_context("fork")
    process = context.Process(target=_report_to, args=(path, 500))
    process.start()
    process.join()
    with context.Pool(2) as pool:
        pool.starmap(_report_to, [(path, 100)] * 6)
        pool.close()
        pool.join()
    metrics.close()
    lines = Path(path).read_text().splitlines()
    stored = len(lines)
    return (
        "a multiprocessing Process and Pool workers report, then exit",
        1100, stored, 1100 - stored, 0, "log file; delivered at each child's exit",
    )  # fmt: skip


def fleet_on_one_buffer_path(members: int = 8, calls: int = 5000) -> Row:
    """Pre-fork workers given one setting: every process on the same SQLite file."""
    folder = Path(tempfile.mkdtemp())
    path = folder / "shared.sqlite"
    outs = [folder / f"out-{n}.jsonl" for n in range(members)]
    running = [
        subprocess.Popen(
            [sys.executable, "-c", FLEET_MEMBER, str(path), str(out), str(n), str(calls)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, out in enumerate(outs)
    ]
    reports = [json.loads(process.communicate(timeout=300)[0]) for process in running]
    keys = [
        (m["tags"]["worker"], m["tags"]["i"])
        for out in outs
        for m in map(json.loads, out.read_text().splitlines())
    ]
    with sqlite3.connect(path) as db:
        left = db.execute("SELECT count(*) FROM queue").fetchone()[0]
    accepted, stored = members * calls, len(keys)
    failed = sum(r["failed"] for r in reports)
    slowest = max(r["slowest"] for r in reports) * 1000
    return (
        f"{members} processes on one buffer_path, {calls:,} calls each at full speed",
        accepted, stored, accepted - stored - failed, stored - len(set(keys)),
        f"log files; slowest call {slowest:.0f} ms; {left} rows left in the file",
    )  # fmt: skip


SIGTERMED = """
import sys, time
from kaneda_core import Metrics
metrics = Metrics(sys.argv[1], flush_interval=60, batch_size=100_000)
for i in range(5000):
    metrics.gauge("service", i)
print("ready", flush=True)
time.sleep(60)
"""


def ended_by_signal(server: InfluxServer, number: int, what: str) -> Row:
    """A plain process with 5,000 gauges queued, ended by ``number`` (default action)."""
    database = f"faults_signal_{number}"
    url = f"influxdb://127.0.0.1:{server.port}/{database}?timeout=5"
    process = subprocess.Popen(
        [sys.executable, "-c", SIGTERMED, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    process.stdout.readline()
    process.send_signal(number)
    process.communicate(timeout=60)
    stored, _ = influx_counts(server, database)
    return (
        f"{what}, 5,000 queued",
        5000, stored, 5000 - stored, 0, f"InfluxDB; exit status {process.returncode}",
    )  # fmt: skip


UWSGI_LIKE = """
import ctypes, os, sys, time, types
uwsgi = types.ModuleType("uwsgi")  # what uWSGI gives the application: a stand-in
sys.modules["uwsgi"] = uwsgi
from kaneda_core import Metrics
metrics = Metrics(sys.argv[1], flush_interval=0.1)
metrics.gauge("master", 1)
metrics.flush(5)
workers = []
for _ in range(3):
    pid = ctypes.PyDLL(None).fork()  # uWSGI forks its workers in C
    if pid == 0:
        uwsgi.post_fork_hook()
        for i in range(1000):
            metrics.gauge("worker", i)
        time.sleep(2)  # serving: delivered by the worker's thread, not at exit
        os._exit(0)
    workers.append(pid)
for pid in workers:
    os.waitpid(pid, 0)
"""


def uwsgi_like_workers(server: InfluxServer) -> Row:
    database = "faults_uwsgi"
    url = f"influxdb://127.0.0.1:{server.port}/{database}?timeout=5"
    subprocess.run([sys.executable, "-c", UWSGI_LIKE, url], check=True, timeout=120)
    stored, _ = influx_counts(server, database, "WHERE \"name\" = 'worker'")
    return (
        "3 workers forked in C as uWSGI's are, 1,000 gauges each, while they run",
        3000, stored, 3000 - stored, 0, "InfluxDB; uwsgi.post_fork_hook (a stand-in module)",
    )  # fmt: skip


def after_close() -> Row:
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    path = os.path.join(tempfile.mkdtemp(), "b.sqlite")
    metrics = Metrics(MemoryBackend(), buffer_path=path)
    metrics.close()
    for _ in range(100):
        metrics.increment("late")
    dropped = metrics.stats().dropped
    return (
        "calls after close(), with buffer_path",
        100, 0, 100 - dropped, 0, f"{dropped} counted dropped, said once",
    )  # fmt: skip


def signal_handlers() -> Row:
    script = (ROOT / "tests" / "test_signal_safety.py").read_text()
    namespace: dict[str, Any] = {}
    exec(script.split("@pytest.mark")[0], namespace)
    folder = tempfile.mkdtemp()
    path = Path(folder) / "signals.py"
    path.write_text(namespace["SCRIPT"])
    done = subprocess.run(
        [sys.executable, str(path), "disk", os.path.join(folder, "b.sqlite")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.splitlines()[-1])
    accepted = result["calls"] + result["handled"]
    return (
        "reporting from a SIGALRM handler every 2 ms, buffer_path",
        accepted, result["stored"], accepted - result["stored"] - result["dropped"], 0,
        f"{result['handled']} from the handler; no deadlock",
    )  # fmt: skip


def _reap(children: list[int], within: float) -> tuple[int, int]:
    """Wait for ``children``; kill those still running after ``within`` s.

    Returns how many hung, and how many exited with status 0.
    """
    hung = succeeded = 0
    deadline = time.monotonic() + within
    for pid in children:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                succeeded += os.waitstatus_to_exitcode(status) == 0
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                hung += 1
                break
            time.sleep(0.005)
    return hung, succeeded


def fork_while_locked() -> Row:
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    path = os.path.join(tempfile.mkdtemp(), "b.sqlite")
    metrics = Metrics(MemoryBackend(), buffer_path=path, max_buffer=20, flush_interval=0.001)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            metrics.increment("busy")
            metrics.stats()

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    children = []
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            try:
                metrics.increment("child")
                metrics.flush(2)
                metrics.close(2)
            finally:
                os._exit(0)
        children.append(pid)
    stop.set()
    for thread in threads:
        thread.join()
    hung, _ = _reap(children, within=60)
    metrics.close(5)
    return (
        "200 forks while two threads report into a full disk buffer",
        200, 200 - hung, 0, 0, f"{hung} children hung",
    )  # fmt: skip


def fork_while_logging() -> Row:
    """Kaneda's worker logs refusals into a small pipe read slowly (stderr under a
    supervisor that lags); the process forks; each child logs one line."""
    import logging

    from full_pipe import kaneda_logging_into_a_full_pipe

    children = []
    with kaneda_logging_into_a_full_pipe() as received:
        for number in range(40):
            pid = os.fork()
            if pid == 0:
                try:
                    logging.getLogger("kaneda").warning("child %d logged", number)
                finally:
                    os._exit(0)
            children.append(pid)
            time.sleep(0.01)
        hung, _ = _reap(children, within=20)
    logged = received.count(b"logged\n")
    return (
        "40 forks while Kaneda's worker writes log lines into a full pipe (child log lines)",
        40, logged, 40 - logged - hung, 0, f"{hung} children hung",
    )  # fmt: skip


def fork_during_first_send() -> Row:
    """The first send imports a module (0.5 s here; Celery's, RQ's and RethinkDB's
    clients import some at theirs); 8 children are forked meanwhile and report."""
    from kaneda_core import Backend, Metrics
    from kaneda_core.backends import MemoryBackend

    folder = tempfile.mkdtemp()
    Path(folder, "kaneda_bench_client.py").write_text("import time\ntime.sleep(0.5)\n")
    sys.path.insert(0, folder)
    stored = MemoryBackend()

    class ImportsAtFirstSend(Backend):
        def send(self, batch: Sequence[Any]) -> None:
            import kaneda_bench_client  # noqa: F401

            stored.send(batch)

    metrics = Metrics(ImportsAtFirstSend(), flush_interval=0.01)
    metrics.increment("parent")
    time.sleep(0.05)  # the worker is importing
    children = []
    for _ in range(8):
        pid = os.fork()
        if pid == 0:
            metrics.increment("child")
            left = metrics.flush(10)
            delivered = any(metric.name == "child" for metric in stored.metrics)
            os._exit(0 if left == 0 and delivered else 3)
        children.append(pid)
        time.sleep(0.05)
    hung, delivered = _reap(children, within=30)
    metrics.close(5)
    sys.path.remove(folder)
    return (
        "8 forks during the worker's first send, which imports a module (child metrics)",
        8, delivered, 8 - delivered, 0,
        f"{hung} children hung, {8 - delivered - hung} delivered nothing in 10 s",
    )  # fmt: skip


def main() -> None:
    without_hook_plugins()
    server = InfluxServer()
    server.start()
    scenarios: list[Callable[[], Row]] = [
        lambda: fork_after_first_use(server, False),
        lambda: fork_after_first_use(server, True),
        lambda: gunicorn_preload(server, "sync"),
        lambda: gunicorn_preload(server, "gthread"),
        fork_while_locked,
        fork_while_logging,
        fork_during_first_send,
        signal_handlers,
        disk_full,
        corrupted_rows,
        poison_metric,
        dripping_server,
        multiprocessing_exit,
        fleet_on_one_buffer_path,
        after_close,
        lambda: two_processes_one_series(server),
        lambda: coarse_clock(server, 1_000, "a microsecond clock (macOS)"),
        lambda: coarse_clock(server, 15_625_000, "a 15.6 ms clock (Windows)"),
        lambda: ended_by_signal(
            server, signal.SIGTERM, "a service stopped by SIGTERM (docker stop)"
        ),
        lambda: ended_by_signal(server, signal.SIGHUP, "a process whose terminal closed (SIGHUP)"),
        lambda: uwsgi_like_workers(server),
    ]
    print("| fault | accepted | stored | lost | duplicated | notes |")
    print("|---|---:|---:|---:|---:|---|")
    try:
        for scenario in scenarios:
            name, accepted, stored, lost, duplicated, notes = scenario()
            print(f"| {name} | {accepted:,} | {stored:,} | {lost:,} | {duplicated:,} | {notes} |")
    finally:
        server.destroy()


if __name__ == "__main__":
    main()
