"""Answers the plugin reads: bounded in size as in time, and what is not InfluxDB's answer
is retried rather than failed for good. Against a hostile server over a real socket
(endless bodies, a huge Content-Length, a proxy's page), and a real influxd for the
large error answers it does give."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from influx_server import InfluxServer
from influxdb.exceptions import InfluxDBClientError
from kaneda_influx import InfluxBackend, transport

from kaneda_core import DeliveryError, Metric, RetryPolicy, connect

#: What the hostile server does with a request: the bytes to send, or a function that
#: writes on the socket itself (for as long as it likes: it ends when the client goes).
Answer = bytes | Callable[[socket.socket], None]

OK_QUERY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 33\r\n\r\n"
    b'{"results":[{"statement_id":0}]}\n'
)
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
BLOB = b"x" * 65536


class HostileServer:
    """A raw-socket HTTP/1.1 server: ``answers[path]`` (``/query``, ``/write``) says how
    each request is answered; by default as InfluxDB does, briefly."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {"/query": OK_QUERY, "/write": NO_CONTENT}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        reader = connection.makefile("rb")
        try:
            while request := reader.readline():
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                reader.read(length)
                path = request.split()[1].decode().split("?")[0]
                self.requests.append(path)
                answer = self.answers[path]
                if callable(answer):
                    answer(connection)
                    return
                connection.sendall(answer)
        except OSError:  # the client went away: what an endless answer waits for
            pass
        finally:
            reader.close()
            connection.close()

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


def chunked_endless(status: str) -> Answer:
    def send(connection: socket.socket) -> None:
        connection.sendall(f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"%x\r\n" % len(BLOB) + BLOB + b"\r\n"
        while True:
            connection.sendall(piece)

    return send


def close_delimited_endless(status: str) -> Answer:
    """HTTP/1.0 without a Content-Length: the body ends when the connection does."""

    def send(connection: socket.socket) -> None:
        connection.sendall(f"HTTP/1.0 {status}\r\nContent-Type: text/html\r\n\r\n".encode())
        while True:
            connection.sendall(BLOB)

    return send


def declared(status: str, length: int) -> Answer:
    """An answer that declares ``length`` bytes and sends them (as long as it is read)."""

    def send(connection: socket.socket) -> None:
        connection.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {length}\r\n\r\n".encode())
        left = length
        while left > 0:
            connection.sendall(BLOB[: min(left, len(BLOB))])
            left -= len(BLOB)

    return send


def page(status: str, body: bytes, content_type: str = "text/html") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def backend_for(server: HostileServer, timeout: float = 1.0) -> InfluxBackend:
    return InfluxBackend("db", host="127.0.0.1", port=server.port, timeout=timeout)


def measured_send(backend: InfluxBackend) -> tuple[DeliveryError, float, int]:
    """Send one metric that fails: (the error, seconds taken, peak bytes allocated)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError) as caught:
            backend.send([Metric.create("g", "gauge", 1.0)])
        took = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return caught.value, took, peak


# -- an answer larger than the plugin reads --------------------------------------------------

HUGE = [
    pytest.param(chunked_endless, "200 OK", id="chunked-endless-200"),
    pytest.param(chunked_endless, "500 Internal Server Error", id="chunked-endless-500"),
    pytest.param(close_delimited_endless, "200 OK", id="close-delimited-endless-200"),
    pytest.param(close_delimited_endless, "503 Service Unavailable", id="close-delimited-503"),
    pytest.param(lambda status: declared(status, 10**11), "200 OK", id="content-length-1e11"),
    pytest.param(lambda status: declared(status, 64 << 20), "400 Bad Request", id="cl-64MiB-400"),
]


@pytest.mark.parametrize("endpoint", ["/query", "/write"])
@pytest.mark.parametrize(("answer", "status"), HUGE)
def test_an_answer_over_the_cap_is_cut_off_at_once_and_retried(
    hostile: HostileServer,
    endpoint: str,
    answer: Callable[[str], Answer],
    status: str,
) -> None:
    """Buffered whole until the timeout, it took hundreds of MB a second (GBs with a
    longer timeout), and a Content-Length of 1e11 raised MemoryError at once: the batch
    was failed for good."""
    hostile.answers[endpoint] = answer(status)
    backend = backend_for(hostile, timeout=2.0)
    error, took, peak = measured_send(backend)
    cap = transport.MAX_ANSWER_BYTES
    assert error.retryable, error
    said = re.search(r"larger than (\d+) bytes", str(error))
    assert said, error
    # A write's bound grows with its body (4 bytes a byte): this one's is a few bytes.
    assert cap <= int(said.group(1)) <= cap + 1000, error
    assert took < 1.5, f"{took:.2f} s: the answer was read to the timeout, not to the cap"
    assert peak < 3 * cap, f"{peak / 2**20:.0f} MiB allocated reading the answer"
    if endpoint == "/query":
        assert "creating the database" in str(error)
    # The connection was dropped (its answer is unread): the next request opens another.
    hostile.answers[endpoint] = OK_QUERY if endpoint == "/query" else NO_CONTENT
    assert backend.send([Metric.create("g", "gauge", 2.0)]) == [True]
    backend.close()


def test_an_answer_of_exactly_the_cap_is_read(hostile: HostileServer) -> None:
    body = b'{"results":[{"statement_id":0}]}'
    padded = body + b" " * (transport.MAX_ANSWER_BYTES - len(body))
    hostile.answers["/query"] = page("200 OK", padded, "application/json")
    backend = backend_for(hostile, timeout=5.0)
    assert backend._transport.query("CREATE DATABASE db") == {"statement_id": 0}
    padded += b" "
    hostile.answers["/query"] = page("200 OK", padded, "application/json")
    with pytest.raises(transport.AnswerTooLarge, match=r"larger than \d+ bytes"):
        backend._transport.query("CREATE DATABASE db")
    backend.close()


def test_an_answer_over_the_cap_is_retried_through_metrics(hostile: HostileServer) -> None:
    """Through Metrics: retried with backoff, not failed at the first attempt."""
    hostile.answers["/write"] = chunked_endless("200 OK")
    url = f"influxdb://127.0.0.1:{hostile.port}/db?timeout=2"
    metrics = connect(url, retry=RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02))
    for i in range(3):
        metrics.gauge("g", i)
    started = time.monotonic()
    assert metrics.flush(10) == 0
    took = time.monotonic() - started
    stats = metrics.stats()
    metrics.close()
    assert (stats.sent, stats.failed, stats.retried) == (0, 3, 6), stats
    # Each attempt ends at the cap, not at its 2 s timeout.
    assert took < 3, f"three attempts took {took:.2f} s"


def test_a_memory_error_while_reading_an_answer_is_retryable(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory while reading says nothing of the batch: not a permanent failure."""

    def out_of_memory(self: http.client.HTTPResponse, amt: int | None = None) -> bytes:
        raise MemoryError

    monkeypatch.setattr(http.client.HTTPResponse, "read", out_of_memory)
    error, _, _ = measured_send(backend_for(hostile))
    assert error.retryable, error
    assert "memory" in str(error).lower(), error


def test_an_answer_dripped_under_the_cap_still_ends_at_the_timeout(
    hostile: HostileServer,
) -> None:
    def drip(connection: socket.socket) -> None:
        # (A 204 has no body, whatever its Content-Length says: a 500 here.)
        connection.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n")
        while True:
            connection.sendall(b" ")
            time.sleep(0.02)

    hostile.answers["/write"] = drip
    backend = backend_for(hostile, timeout=0.5)
    error, took, _ = measured_send(backend)
    assert error.retryable and "no complete answer" in str(error), error
    assert took < 1.2, took


# -- what is not InfluxDB's answer to a query -------------------------------------------------

NOT_INFLUX = [
    pytest.param(b"<html><body>Down for maintenance</body></html>", id="html-page"),
    pytest.param(b"<html>login</html>", id="login-page"),
    pytest.param(b"[]", id="a-json-list"),
    pytest.param(b'"ok"', id="a-json-string"),
    pytest.param(b'{"results":"ok"}', id="results-not-a-list"),
    pytest.param(b'{"results":["ok"]}', id="a-result-not-an-object"),
    pytest.param(b"\xff\xfe\x00garbage", id="not-utf-8"),
]


@pytest.mark.parametrize("body", NOT_INFLUX)
def test_a_proxys_page_answering_create_database_is_retried(
    hostile: HostileServer, body: bytes
) -> None:
    """A load balancer's maintenance page (200, HTML) raised JSONDecodeError, which failed
    the batch for good; the same page answering a write was retried."""
    hostile.answers["/query"] = page("200 OK", body)
    error, _, _ = measured_send(backend_for(hostile))
    assert error.retryable, error
    assert "creating the database" in str(error)
    assert "not InfluxDB's answer" in str(error), error
    assert "proxy" in str(error)


def test_the_write_paths_proxy_page_says_the_same(hostile: HostileServer) -> None:
    hostile.answers["/write"] = page("200 OK", b"<html>login</html>")
    error, _, _ = measured_send(backend_for(hostile))
    assert error.retryable and "not InfluxDB's answer" in str(error), error
    assert "where InfluxDB answers 204" in str(error)


def test_a_proxys_page_is_retried_through_metrics(hostile: HostileServer) -> None:
    """The hunt's numbers: failed=3 retried=0 before; a JSON error body gave retried=3."""
    hostile.answers["/query"] = page("200 OK", b"<html>login</html>")
    url = f"influxdb://user:s3cretPW@127.0.0.1:{hostile.port}/db?timeout=1"
    metrics = connect(url, retry=RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02))
    for i in range(3):
        metrics.gauge("g", i)
    assert metrics.flush(5) == 0
    stats = metrics.stats()
    metrics.close()
    assert (stats.failed, stats.retried) == (3, 3), stats


def test_a_proxys_page_with_a_disk_buffer_keeps_the_metrics(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Failed for good, they were lost from the buffer too; retryable, they are kept."""
    hostile.answers["/query"] = page("200 OK", b"<html>login</html>")
    url = f"influxdb://127.0.0.1:{hostile.port}/db?timeout=1"
    buffer = tmp_path / "buffer.sqlite"
    retry = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02)
    metrics = connect(url, buffer_path=buffer, retry=retry)
    for i in range(3):
        metrics.gauge("g", i)
    metrics.flush(3)
    metrics.close(1)
    assert metrics.stats().failed == 0
    hostile.answers["/query"] = OK_QUERY  # the proxy in front of InfluxDB is back
    metrics = connect(url, buffer_path=buffer, retry=retry)
    assert metrics.close(5) == 0
    assert metrics.stats().sent == 3
    assert hostile.requests.count("/write") >= 1


def test_create_database_on_a_proxys_page_returns_false(hostile: HostileServer) -> None:
    hostile.answers["/query"] = page("200 OK", b"<html>login</html>")
    backend = backend_for(hostile)
    assert backend.create_database() is False
    hostile.answers["/query"] = chunked_endless("200 OK")
    assert backend.create_database() is False
    hostile.answers["/query"] = OK_QUERY
    assert backend.create_database() is True
    backend.close()


# -- InfluxDB's own large answers are read whole ----------------------------------------------


def test_influxdbs_answer_repeating_a_large_writes_lines_is_read_whole(
    influx_server: InfluxServer, database: str
) -> None:
    """influxd's 400 to a write repeats each line it cannot parse, escaped, and ends with
    what the backend reads (``dropped=N`` of a partial write): nearly 4 MiB of short lines
    it cannot parse are answered with about three times that. Larger than the cap for a
    query's answer, it is still read: a write's answer may grow with its body."""
    influx_server.query(f'CREATE DATABASE "{database}"')
    lines = [b"m,t=a\\ value=1x%d" % i for i in range(180_000)]
    body = b"m value=1 1\n" + b"\n".join(lines)
    assert len(body) < 4 * 1024 * 1024  # the largest part the backend sends
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=30)
    with pytest.raises(InfluxDBClientError) as caught:
        backend._transport.post("write", {"db": database}, body)
    assert caught.value.code == 400
    content = caught.value.content
    assert len(content) > transport.MAX_ANSWER_BYTES
    assert re.search(r"invalid tag format dropped=0\"\}\s*$", content), content[-200:]
    backend.close()


def test_a_refusal_repeating_megabytes_of_lines_is_shown_shortened(
    influx_server: InfluxServer, database: str
) -> None:
    """The error (and so the log line) of a large write influxd cannot parse shows the
    start and the end of its answer, not the megabytes in between."""
    influx_server.query(f'CREATE DATABASE "{database}"')
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=30)
    lines = [b"m,t=a\\ value=1x%d" % i for i in range(100_000)]
    with pytest.raises(InfluxDBClientError) as answer:
        backend._transport.post("write", {"db": database}, b"\n".join(lines))
    assert len(answer.value.content) > 1_000_000
    error = backend._delivery_error("writing", answer.value)
    assert len(str(error)) < 3000
    assert "characters left out" in str(error)
    assert "unable to parse" in str(error)
    assert str(error).rstrip().endswith(answer.value.content.rstrip()[-50:])
    backend.close()


def test_a_connection_opened_past_the_requests_bound_is_a_retryable_timeout(
    hostile: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connect that ends just after the request's bound (its thread kept off the CPU on
    a loaded machine) left a negative socket timeout: ValueError, a batch failed for good."""
    connect = transport.connect_to_any

    def descheduled(host: str, port: int, addresses: object, ends: float, within: str) -> object:
        sock = connect(host, port, addresses, ends, within)
        time.sleep(max(0.0, ends - time.monotonic()) + 0.01)
        return sock

    monkeypatch.setattr(transport, "connect_to_any", descheduled)
    backend = backend_for(hostile, timeout=0.3)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1.0)])
    assert caught.value.retryable, caught.value
    assert "no time left" in str(caught.value)
    monkeypatch.setattr(transport, "connect_to_any", connect)
    backend.send([Metric.create("g", "gauge", 1.0)])  # the next try delivers
    backend.close()
