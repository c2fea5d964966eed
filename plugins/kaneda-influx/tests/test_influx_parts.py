"""Batches written in parts, one request in flight while the next is built; gzip.

Against the real server; a proxy in front of it fails or holds chosen write requests.
Every count is checked by query.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from influx_server import InfluxServer
from kaneda_influx import InfluxBackend

from kaneda_core import ConfigurationError, DeliveryError, Metric, Metrics, RetryPolicy, connect

FAST = RetryPolicy(attempts=5, initial_delay=0.01, max_delay=0.05)


def gauges(count: int) -> list[Metric]:
    return [Metric.create("g", "gauge", i, {"part": "x"}) for i in range(count)]


def stored_values(server: InfluxServer, database: str) -> list[float]:
    answer = server.query('SELECT "value" FROM "gauge"', db=database)
    series = answer["results"][0].get("series", [])
    return sorted(row[1] for s in series for row in s["values"])


def count(server: InfluxServer, database: str) -> int:
    answer = server.query('SELECT count("value") FROM "gauge"', db=database)
    series = answer["results"][0].get("series", [])
    return sum(s["values"][0][1] for s in series)


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards to the real server; the n-th write request follows ``script[n]``.

    ``"forward"``, an HTTP status to answer instead, or ``"hang"`` (never answer).
    Writes past the script are forwarded.
    """

    daemon_threads = True

    def __init__(self, target: InfluxServer, script: list[Any]) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.target = target
        self.script = list(script)
        self.writes: list[tuple[dict[str, str], bytes]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def action(self, headers: dict[str, str], body: bytes) -> Any:
        with self._lock:
            self.writes.append((headers, body))
            return self.script.pop(0) if self.script else "forward"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: Proxy
    protocol_version = "HTTP/1.1"  # keep-alive, as InfluxDB does

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {
            key: self.headers[key]
            for key in ("Content-Type", "Content-Encoding", "Authorization")
            if self.headers.get(key)
        }
        action = self.server.action(headers, body) if self.path.startswith("/write") else "forward"
        if action == "hang":
            self.server.release.wait(30)
            self.close_connection = True
            return
        if action != "forward":
            self._answer(int(action), b'{"error":"injected failure"}')
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.target.port, timeout=30)
        upstream.request("POST", self.path, body=body, headers=headers)
        response = upstream.getresponse()
        self._answer(response.status, response.read())
        upstream.close()

    def _answer(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def proxy_for(influx_server: InfluxServer) -> Iterator[Any]:
    """``proxy_for(script)``: a running proxy to the session's server."""
    proxies: list[Proxy] = []

    def start(script: list[Any]) -> Proxy:
        proxy = Proxy(influx_server, script)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.release.set()
        proxy.shutdown()
        proxy.server_close()


def backend_via(proxy: Proxy, database: str, **options: Any) -> InfluxBackend:
    backend = InfluxBackend(database, host="127.0.0.1", port=proxy.port, **options)
    assert backend.create_database(5)  # before the scripted writes
    return backend


# -- parts ------------------------------------------------------------------------------------


def test_a_batch_larger_than_part_size_is_written_in_parts(
    influx_server: InfluxServer, database: str, proxy_for: Any
) -> None:
    proxy = proxy_for([])
    backend = backend_via(proxy, database, part_size=1000, timeout=5)
    assert backend.send(gauges(2500)) == [True] * 2500
    assert [body.count(b"\n") + 1 for _, body in proxy.writes] == [1000, 1000, 500]
    assert stored_values(influx_server, database) == [float(i) for i in range(2500)]
    assert count(influx_server, database) == 2500


def test_the_next_part_is_built_while_one_is_in_flight(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, part_size=100)
    backend.create_database(5)
    events: list[str] = []
    lines, send = backend.layout.lines, backend._transport.send

    def building(batch: Any, known: Any) -> str:
        events.append(f"build {batch[0].value // 100}")
        return lines(batch, known)

    def sending(endpoint: str, params: dict[str, str], body: bytes = b"", **kw: Any) -> Any:
        number = int(body.split(b"value=")[1].split(b" ")[0]) // 100
        events.append(f"send {number}")
        request = send(endpoint, params, body, **kw)
        answer = request.answer

        def answering() -> bytes:
            events.append(f"answer {number}")
            return answer()

        request.answer = answering
        return request

    monkeypatch.setattr(backend.layout, "lines", building)
    monkeypatch.setattr(backend._transport, "send", sending)
    backend.send(gauges(300))
    assert events == [
        "build 0", "send 0",
        "build 1", "answer 0", "send 1",  # part 1 built while part 0 is in flight
        "build 2", "answer 1", "send 2",
        "answer 2",
    ]  # fmt: skip
    assert count(influx_server, database) == 300


def test_a_failing_second_part_reports_exactly_what_was_not_stored(
    influx_server: InfluxServer, database: str, proxy_for: Any
) -> None:
    proxy = proxy_for(["forward", 503])
    backend = backend_via(proxy, database, part_size=1000, timeout=5)
    batch = gauges(3000)
    with pytest.raises(DeliveryError) as caught:
        backend.send(batch)
    # The second part failed for a reason that may pass: the third was not sent either.
    assert caught.value.retryable and caught.value.metrics == batch[1000:]
    assert len(proxy.writes) == 2
    assert stored_values(influx_server, database) == [float(i) for i in range(1000)]
    # What the error names is what a retry sends: then everything is stored, once.
    backend.send(caught.value.metrics)
    assert count(influx_server, database) == 3000
    assert stored_values(influx_server, database) == [float(i) for i in range(3000)]


def test_a_part_refused_for_good_fails_alone(
    influx_server: InfluxServer, database: str, proxy_for: Any
) -> None:
    proxy = proxy_for(["forward", 400, "forward"])
    backend = backend_via(proxy, database, part_size=1000, timeout=5)
    batch = gauges(3000)
    with pytest.raises(DeliveryError) as caught:
        backend.send(batch)
    assert not caught.value.retryable and caught.value.metrics == batch[1000:2000]
    assert count(influx_server, database) == 2000
    assert stored_values(influx_server, database) == [
        float(i) for i in (*range(1000), *range(2000, 3000))
    ]


def test_through_metrics_a_failed_part_is_retried_and_stored_once(
    influx_server: InfluxServer, database: str, proxy_for: Any
) -> None:
    proxy = proxy_for(["forward", 500, 500])
    backend = backend_via(proxy, database, part_size=500, timeout=5)
    metrics = Metrics(backend, batch_size=2000, flush_interval=60, retry=FAST)
    for i in range(2000):
        metrics.gauge("g", i, tags={"part": "x"})
    assert metrics.flush(30) == 0
    stats = metrics.stats()
    metrics.close()
    assert (stats.sent, stats.failed, stats.retried) == (2000, 0, 3000)  # 1500 twice
    assert count(influx_server, database) == 2000  # the retried parts overwrote nothing twice
    assert stored_values(influx_server, database) == [float(i) for i in range(2000)]


def test_a_part_that_cannot_be_built_fails_alone_and_the_connection_stays_usable(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, part_size=100)
    backend.create_database(5)
    lines = backend.layout.lines

    def breaking(batch: Any, known: Any) -> str:
        if batch[0].value == 100:  # the second part, built while the first is in flight
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "injected")
        return lines(batch, known)

    monkeypatch.setattr(backend.layout, "lines", breaking)
    batch = gauges(300)
    with pytest.raises(DeliveryError) as caught:
        backend.send(batch)
    error = caught.value
    assert error.metrics == batch[100:200] and not error.retryable and error.isolate
    assert stored_values(influx_server, database) == [
        float(i) for i in (*range(100), *range(200, 300))
    ]
    backend.send(gauges(1))  # the first part's answer was read: the connection works on


def test_a_part_whose_answer_never_comes_is_bounded_by_the_timeout(
    influx_server: InfluxServer, database: str, proxy_for: Any
) -> None:
    proxy = proxy_for(["forward", "hang"])
    backend = backend_via(proxy, database, part_size=1000, timeout=0.5)
    batch = gauges(3000)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        backend.send(batch)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 2.0, elapsed
    assert caught.value.retryable and caught.value.metrics == batch[1000:]
    assert "timed out" in str(caught.value) or "within 0.5 s" in str(caught.value)
    assert count(influx_server, database) == 1000


# -- gzip, and the options ------------------------------------------------------------------


def test_gzip_compresses_each_request_and_the_server_stores_it(
    influx_server: InfluxServer, database: str, proxy_for: Any
) -> None:
    proxy = proxy_for([])
    url = f"influxdb://127.0.0.1:{proxy.port}/{database}?gzip=true&part_size=400&timeout=5"
    with connect(url) as metrics:
        assert metrics.backend.gzip and metrics.backend.part_size == 400  # type: ignore[attr-defined]
        for i in range(1000):
            metrics.gauge("g", i, tags={"part": "x"})
    writes = [(headers, body) for headers, body in proxy.writes]
    assert writes and all(h.get("Content-Encoding") == "gzip" for h, _ in writes)
    assert all(body[:2] == b"\x1f\x8b" for _, body in writes)  # gzip's magic number
    assert count(influx_server, database) == 1000
    assert stored_values(influx_server, database) == [float(i) for i in range(1000)]


def test_without_gzip_requests_are_plain(
    influx_server: InfluxServer, database: str, proxy_for: Any
) -> None:
    proxy = proxy_for([])
    backend_via(proxy, database, timeout=5).send(gauges(10))
    [(headers, body)] = proxy.writes
    assert "Content-Encoding" not in headers and body.startswith(b"gauge,")


def test_part_size_and_gzip_by_argument_and_url() -> None:
    assert InfluxBackend("db").part_size == 5000 and not InfluxBackend("db").gzip
    backend = connect("influxdb://127.0.0.1:1/db?part_size=250&gzip=false").backend
    assert backend.part_size == 250 and not backend.gzip  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="part_size must be a positive number"):
        InfluxBackend("db", part_size=0)
    with pytest.raises(ConfigurationError, match="part_size"):
        InfluxBackend("db", part_size="big")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="part_size"):
        connect("influxdb://127.0.0.1:1/db?part_size=many")
