"""Delivery under faults, against a real InfluxDB, counted by query afterwards."""

from __future__ import annotations

import http.server
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from influx_server import InfluxServer
from kaneda_influx import InfluxBackend

from kaneda_core import Metrics, RetryPolicy

PATIENT = RetryPolicy(attempts=30, initial_delay=0.05, max_delay=0.5)


def count_points(
    server: InfluxServer, database: str, measurement: str = "gauge"
) -> tuple[int, int]:
    """(points stored, distinct values among them)."""
    answer = server.query(f'SELECT "value" FROM "{measurement}"', db=database)
    series = answer["results"][0].get("series", [])
    values = [row[1] for s in series for row in s["values"]]
    return len(values), len(set(values))


@pytest.fixture
def own_server() -> Iterator[InfluxServer]:
    """A server of this test's own, which the test stops and starts."""
    server = InfluxServer()
    server.start()
    yield server
    server.destroy()


def test_server_stopped_for_seconds_then_back_nothing_lost(own_server: InfluxServer) -> None:
    database = "outage"
    backend = InfluxBackend(database, host="127.0.0.1", port=own_server.port, timeout=2)
    metrics = Metrics(backend, batch_size=500, flush_interval=0.05, retry=PATIENT)
    sent = 0
    started = time.monotonic()
    stopped_at = restarted_at = None
    while time.monotonic() - started < 7:
        elapsed = time.monotonic() - started
        if stopped_at is None and elapsed > 1:
            own_server.stop()
            stopped_at = elapsed
        if stopped_at is not None and restarted_at is None and elapsed > 5:
            own_server.start()
            restarted_at = elapsed
        for _ in range(100):
            metrics.gauge("stream", sent)
            sent += 1
        time.sleep(0.01)
    assert metrics.flush(60) == 0
    stats = metrics.stats()
    metrics.close()
    stored, distinct = count_points(own_server, database)
    print(
        f"\noutage: sent={sent} stored={stored} lost={sent - distinct} "
        f"duplicated={stored - distinct} retried={stats.retried}"
    )
    assert stats.retried > 0, "the outage was never noticed"
    assert (stored, distinct) == (sent, sent)
    assert stats.failed == 0 and stats.dropped == 0


def test_sigkill_mid_stream_then_restart_with_the_same_buffer(
    influx_server: InfluxServer, tmp_path: Path
) -> None:
    database = f"crash_{uuid.uuid4().hex[:6]}"
    buffer_path = tmp_path / "buffer.sqlite"
    progress = tmp_path / "accepted"
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5"
    script = textwrap.dedent(f"""
        from kaneda_core import connect
        metrics = connect({url!r}, buffer_path={str(buffer_path)!r}, batch_size=200,
                          flush_interval=0.05)
        with open({str(progress)!r}, "w") as out:
            for i in range(10**7):
                metrics.gauge("stream", i)
                if i % 50 == 0:
                    out.write(f"{{i}}\\n")
                    out.flush()
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if progress.exists() and len(progress.read_text().splitlines()) > 100:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    accepted = int(progress.read_text().split()[-1]) + 1  # at least this many returned
    before_restart, _ = count_points(influx_server, database)

    restart = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from kaneda_core import connect\n"
            f"m = connect({url!r}, buffer_path={str(buffer_path)!r})\n"
            f"print(m.stats().queued)\n"
            f"print(m.close(60))\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    left_on_disk, left_after = (int(x) for x in restart.stdout.split())
    stored, distinct = count_points(influx_server, database)
    answer = influx_server.query('SELECT max("value") FROM "gauge"', db=database)
    highest = int(answer["results"][0]["series"][0]["values"][0][1])
    print(
        f"\nSIGKILL: accepted>={accepted} stored={stored} distinct={distinct} "
        f"(stored before restart {before_restart}, redelivered from disk {left_on_disk}) "
        f"lost={highest + 1 - distinct} duplicated={stored - distinct}"
    )
    assert left_on_disk > 0, "the crash left nothing to redeliver: the test proved nothing"
    assert left_after == 0
    assert distinct >= accepted
    assert distinct == highest + 1, "a gap: some accepted metric was lost"
    assert stored == distinct, "duplicates that ids (point keys) did not resolve"


class FailingProxy(http.server.ThreadingHTTPServer):
    """Forwards to InfluxDB, but answers 500 to writes until ``fail_until``."""

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = target
        self.fail_until = 0.0
        self.failed = 0
        self.forwarded = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: FailingProxy

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/write") and time.monotonic() < self.server.fail_until:
            self.server.failed += 1
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error":"injected failure"}')
            return
        request = urllib.request.Request(
            self.server.target + self.path,
            data=body if self.command == "POST" else None,
            method=self.command,
            headers={"Content-Type": self.headers.get("Content-Type", "")},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload, headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, payload, headers = error.code, error.read(), error.headers
        self.server.forwarded += 1
        self.send_response(status)
        for key in ("Content-Type", "X-Influxdb-Version", "Request-Id"):
            if headers.get(key):
                self.send_header(key, headers[key])
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _forward
    do_POST = _forward


def test_server_answering_500_for_a_while_is_retried_then_delivered(
    influx_server: InfluxServer,
) -> None:
    proxy = FailingProxy(influx_server.url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    database = f"flaky_{uuid.uuid4().hex[:6]}"
    backend = InfluxBackend(database, host="127.0.0.1", port=proxy.port, timeout=5)
    metrics = Metrics(backend, batch_size=250, flush_interval=0.05, retry=PATIENT)
    metrics.gauge("warmup", -1)
    assert metrics.flush(10) == 0
    proxy.fail_until = time.monotonic() + 2
    for i in range(3000):
        metrics.gauge("stream", i)
        if i % 300 == 0:
            time.sleep(0.05)
    assert metrics.flush(60) == 0
    stats = metrics.stats()
    metrics.close()
    proxy.shutdown()
    stored, distinct = count_points(influx_server, database)
    print(
        f"\n500s: sent=3001 stored={stored} failed responses={proxy.failed} "
        f"retried={stats.retried} lost={3001 - distinct}"
    )
    assert proxy.failed > 0 and stats.retried > 0
    assert (stored, distinct) == (3001, 3001)
    assert stats.failed == 0
