"""Where applications really run: forked workers (os.fork, gunicorn --preload) and slow servers.

Against the real InfluxDB: every count is checked by query.
"""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from influx_server import InfluxServer, free_port
from kaneda_influx import InfluxBackend

from kaneda_core import Metrics, connect
from kaneda_core.testing import DripServer

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "support"))
from scripts import COARSE_CLOCK_REPORTER

APPS = Path(__file__).parent / "apps"


def count(server: InfluxServer, database: str, where: str = "") -> int:
    answer = server.query(f'SELECT count("value") FROM "gauge" {where}', db=database)
    series = answer["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


@pytest.mark.parametrize("buffered", [False, True])
def test_fork_after_first_use_parent_and_children_each_store_everything(
    influx_server: InfluxServer, database: str, tmp_path: Path, buffered: bool
) -> None:
    """The parent's keep-alive connection is open at the fork; five processes then write."""
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5"
    options = {"buffer_path": tmp_path / "b.sqlite"} if buffered else {}
    metrics = connect(url, batch_size=500, **options)
    metrics.gauge("first", 0)
    assert metrics.flush(10) == 0
    children = []
    for child in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fresh = metrics.stats().sent == 0
                for i in range(20_000):
                    metrics.gauge("g", i, tags={"p": f"child{child}"})
                left = metrics.close(60)
                stats = metrics.stats()
                code = 0 if fresh and left == 0 and stats.sent == 20_000 else 2
            finally:
                os._exit(code)
        children.append(pid)
    for i in range(20_000):
        metrics.gauge("g", i, tags={"p": "parent"})
    assert metrics.flush(60) == 0
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    assert codes == [0, 0, 0, 0]
    assert metrics.stats().sent == 20_001
    metrics.close()
    assert count(influx_server, database) == 100_001
    for who in ("parent", "child0", "child1", "child2", "child3"):
        assert count(influx_server, database, f"WHERE \"p\" = '{who}'") == 20_000


# -- a real gunicorn, --preload ---------------------------------------------------------


@pytest.fixture
def gunicorn() -> str:
    binary = shutil.which("gunicorn") or str(Path(sys.executable).parent / "gunicorn")
    if not Path(binary).exists():
        raise RuntimeError("gunicorn is not installed: pip install -e plugins/kaneda-influx[test]")
    return binary


def _serve(
    gunicorn: str, port: int, worker_class: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    command = [
        gunicorn, "--preload", "--workers", "4", "--worker-class", worker_class,
        "--threads", "4", "--bind", f"127.0.0.1:{port}", "--chdir", str(APPS),
        "--graceful-timeout", "30", "reporting_app:app",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("gunicorn did not start")


def _get(port: int, query: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", f"/?{query}")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


# gevent: the Metrics made and used in the master is a real thread's until the fork; the
# worker patches after it, and its worker and deliveries are green threads.
@pytest.mark.parametrize("worker_class", ["sync", "gthread", "gevent"])
def test_gunicorn_preload_workers_store_exactly_what_they_report(
    influx_server: InfluxServer, database: str, gunicorn: str, worker_class: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KANEDA_URL": f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    server = _serve(gunicorn, port, worker_class, env)
    try:
        _wait_listening(port, server)
        requests = 2_000
        with ThreadPoolExecutor(8) as pool:  # a bounded loopback load
            statuses = list(pool.map(lambda i: _get(port, f"n={i % 50}"), range(requests)))
        assert statuses == [200] * requests
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: workers exit and flush
        output = server.communicate(timeout=60)[0].decode()
    assert server.returncode == 0, output
    pids = influx_server.query('SHOW TAG VALUES FROM "gauge" WITH KEY = "pid"', db=database)
    workers = {v[1] for v in pids["results"][0]["series"][0]["values"]}
    assert len(workers) >= 3  # the load reached several forked workers
    assert count(influx_server, database, "WHERE \"name\" = 'request'") == requests
    assert count(influx_server, database, "WHERE \"name\" = 'master'") == 1
    assert "unable to parse" not in output, output
    # gevent patches threading in each worker, after the fork: a worker thread started
    # at the fork, a real one, ended after the patch and threading said "Exception
    # ignored ... KeyError" at every worker's exit. A child starts it at its first call.
    assert "Traceback" not in output and "Exception ignored" not in output, output


# -- a server that drips its answer -------------------------------------------------------


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer(answer=b"HTTP/1.1 204 No Content\r\nX-Slow: ")
    yield server
    server.close()


def test_a_dripping_server_cannot_hold_a_call_past_the_timeout(drip: DripServer) -> None:
    backend = InfluxBackend("app", host="127.0.0.1", port=drip.port, timeout=0.3)
    backend._database_ready = True  # straight to the write
    metrics = Metrics(backend, batching=False)
    started = time.monotonic()
    metrics.gauge("g", 1)
    took = time.monotonic() - started
    assert took < 1.0, took  # one attempt, bounded as a whole (a stale-connection retry at most)
    assert metrics.stats().failed == 1
    metrics.close()


def test_a_dripping_server_cannot_hold_the_worker(drip: DripServer) -> None:
    url = f"influxdb://127.0.0.1:{drip.port}/app?timeout=0.3"
    from kaneda_core import RetryPolicy

    metrics = connect(url, retry=RetryPolicy(attempts=3, initial_delay=0.05))
    metrics.gauge("g", 1)
    started = time.monotonic()
    left = metrics.flush(5)
    assert time.monotonic() - started < 4
    assert left == 0 and metrics.stats().failed == 1
    metrics.close()


# -- two processes, one series ----------------------------------------------------------


def _coarse_clock(real: Any) -> Any:
    return lambda: real() // 50 * 50


def test_two_processes_incrementing_one_series_never_overwrite_each_other(
    influx_server: InfluxServer, database: str
) -> None:
    """Each process reads the same clock; a point of each may land on one nanosecond.

    The clock is made coarser (50 ns steps, as on some virtual machines) so that this
    happens often: without per-process timestamps, hundreds of points are lost.
    """
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5"
    calls = 50_000
    children = []
    start_reading, start_writing = os.pipe()  # both start reporting at once
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                import kaneda_core.metrics as module

                module.time_ns = _coarse_clock(module.time_ns)  # type: ignore[assignment]
                metrics = connect(url, batch_size=5000)
                os.read(start_reading, 1)
                for _ in range(calls):
                    metrics.increment("requests", tags={"route": "/"})
                code = 0 if metrics.close(60) == 0 and metrics.stats().sent == calls else 2
            finally:
                os._exit(code)
        children.append(pid)
    os.write(start_writing, b"go")
    assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children] == [0, 0]
    answer = influx_server.query('SELECT count("value") FROM "counter"', db=database)
    assert answer["results"][0]["series"][0]["values"][0][1] == 2 * calls


@pytest.mark.parametrize("step_ns", [1_000, 15_625_000], ids=["microseconds", "windows-ms"])
def test_one_process_on_a_coarse_clock_never_overwrites_its_own_points(
    influx_server: InfluxServer, database: str, step_ns: int
) -> None:
    """Several calls read the same clock value; each must still be a point of its own."""
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5"
    calls = 20_000
    env = {**os.environ, "STEP_NS": str(step_ns), "CALLS": str(calls)}
    done = subprocess.run(
        [sys.executable, "-c", COARSE_CLOCK_REPORTER, url],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    answer = influx_server.query('SELECT count("value") FROM "counter"', db=database)
    assert answer["results"][0]["series"][0]["values"][0][1] == calls


# -- a server that answers what InfluxDB never does ---------------------------------------


class _Answering(http.server.BaseHTTPRequestHandler):
    """Answers a POST with ``self.server.answers[path]`` (status, body); 204 by default."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = self.server.answers.get(self.path.split("?")[0], (204, b""))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answering)
    server.answers = {"/query": (200, b'{"results":[{"statement_id":0}]}')}  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "answer",
    [
        (200, b'{"error":"database not found: \\"app\\""}'),  # a proxy's or a lookalike's
        (200, b"<html><body>Welcome to nginx!</body></html>"),  # not InfluxDB at all
    ],
)
def test_a_write_answered_200_instead_of_204_is_not_counted_as_sent(
    answering: Any, answer: tuple[int, bytes]
) -> None:
    answering.answers["/write"] = answer
    import kaneda

    url = f"influxdb://127.0.0.1:{answering.server_port}/app?timeout=2"
    metrics = connect(url, batching=False)
    metrics.gauge("g", 1)
    assert (metrics.stats().sent, metrics.stats().failed) == (0, 1)
    metrics.close()
    from kaneda.backends import InfluxBackend as Kaneda1Influx

    face = kaneda.Metrics(Kaneda1Influx("app", host="127.0.0.1", port=answering.server_port))
    assert face.gauge("g", 1) is None  # kaneda 1.0 expected 204 too, and returned None
    face.close()


def test_a_query_answered_200_with_an_error_is_an_error(answering: Any) -> None:
    answering.answers["/query"] = (200, b'{"error":"authorization failed"}')
    backend = InfluxBackend("app", host="127.0.0.1", port=answering.server_port, timeout=2)
    assert backend.create_database() is False
    metrics = Metrics(backend, batching=False)
    metrics.gauge("g", 1)
    assert metrics.stats().failed == 1
    metrics.close()
