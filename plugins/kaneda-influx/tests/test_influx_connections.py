"""Keep-alive retries within the timeout, TLS restarts, redirects and scheme mistakes:
against real influxd servers, or a small fake server over a real socket where the
behaviour is a hostile server's."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from influx_server import InfluxServer, stored_metrics
from kaneda_influx import InfluxBackend

from kaneda_core import DeliveryError, Metric, connect

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


class FakeServer:
    """A raw-socket HTTP server: ``respond(connection_number, path) -> bytes | None``
    gives each request's whole answer; None closes the connection without one."""

    def __init__(self, respond: object, *, cut_above: int | None = None) -> None:
        self.respond = respond
        self.cut_above = cut_above  # a body larger: reset in the middle, no answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            number = self.connections
            threading.Thread(target=self._handle, args=(connection, number), daemon=True).start()

    def _handle(self, connection: socket.socket, number: int) -> None:
        reader = connection.makefile("rb")
        with connection, reader:
            while True:
                request = reader.readline()
                if not request:
                    return
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                if self.cut_above is not None and length > self.cut_above:
                    reader.read(65536)
                    # A reset (linger 0), as a server that will not read the rest.
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    return
                reader.read(length)
                answer = self.respond(number, request.split()[1].decode())  # type: ignore[operator]
                if answer is None:
                    return
                connection.sendall(answer)

    def close(self) -> None:
        self.listener.close()


def answer(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


OK_QUERY = answer(
    "200 OK", b'{"results":[{"statement_id":0}]}', "Content-Type: application/json\r\n"
)


@pytest.fixture
def fake() -> Iterator[list[FakeServer]]:
    servers: list[FakeServer] = []
    yield servers
    for server in servers:
        server.close()


def test_a_keep_alive_retry_stays_within_the_requests_timeout(fake: list[FakeServer]) -> None:
    """On the reused connection the server reads the write, says nothing for 0.9 s of the
    1 s timeout, then closes: the retry on a new connection has what is left, not 1 s more."""
    silence = threading.Event()  # never set: the server's silence, bounded by its wait

    def respond(number: int, path: str) -> bytes | None:
        if path.startswith("/query"):
            return OK_QUERY
        if number == 1 and respond.writes == 0:  # type: ignore[attr-defined]
            respond.writes += 1  # type: ignore[attr-defined]
            return answer("204 No Content")
        silence.wait(0.9)
        return None

    respond.writes = 0  # type: ignore[attr-defined]
    server = FakeServer(respond)
    fake.append(server)
    backend = InfluxBackend("db", host="127.0.0.1", port=server.port, timeout=1)
    backend.send([Metric.create("g", "gauge", 1.0)])  # the connection, kept alive
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 2.0)])
    elapsed = time.monotonic() - started
    assert elapsed < 1.35, f"the request took {elapsed:.2f} s with a 1 s timeout"
    assert caught.value.retryable
    backend.close()


def test_a_large_request_cut_off_without_an_answer_fails_its_own_metric_only(
    fake: list[FakeServer],
) -> None:
    """A server (a proxy, say) that resets the connection in the middle of a large body
    and answers nothing: taken for a refusal of the size, not for "unreachable"."""
    writes: list[int] = []

    def respond(number: int, path: str) -> bytes:
        if path.startswith("/query"):
            return OK_QUERY
        writes.append(number)
        return answer("204 No Content")

    server = FakeServer(respond, cut_above=1_000_000)
    fake.append(server)
    backend = InfluxBackend("db", host="127.0.0.1", port=server.port, timeout=5)
    large = Metric.create("dump", "event", "y" * 3_000_000)
    small = [Metric.create("small", "gauge", i) for i in range(2)]
    with pytest.raises(DeliveryError) as caught:
        backend.send([small[0], large, small[1]])  # one request of 3 MB, then halves
    error = caught.value
    assert error.metrics == [large] and not error.retryable, str(error)
    message = str(error)
    assert "max-body-size" in message and "3000" in message and "unreachable" not in message
    assert len(writes) == 2, "each small metric was stored, in its half"
    backend.close()


def test_a_stale_tls_connection_after_a_restart_is_retried_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = InfluxServer(tls=True)
    server.start()
    try:
        url = f"https+influxdb://127.0.0.1:{server.port}/tls_restart?verify_ssl=false&timeout=5"
        with connect(url, flush_interval=60) as metrics:
            metrics.gauge("before", 1.0)
            assert metrics.flush(10) == 0
            server.stop()
            server.start()
            with caplog.at_level(logging.WARNING, logger="kaneda"):
                metrics.gauge("after", 2.0)
                assert metrics.flush(10) == 0
            stats = metrics.stats()
        assert (stats.sent, stats.failed, stats.retried) == (2, 0, 0)
        assert not [r for r in caplog.records if r.name.startswith("kaneda")], caplog.text
        assert sorted(m.name for m in stored_metrics(server, "tls_restart")) == ["after", "before"]
    finally:
        server.destroy()


def test_a_tls_error_without_a_reason_never_reads_none() -> None:
    """The ssl module sets ``reason`` to None on an EOF; it read "unreachable ...: None"."""
    backend = InfluxBackend("db", host="127.0.0.1", port=1)
    for error in (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), ssl.SSLError()):
        error.reason = None  # type: ignore[attr-defined]  # as the ssl module leaves it
        message = str(backend._delivery_error("writing", error))
        assert "None" not in message, message
    error = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    error.reason = None  # type: ignore[attr-defined]
    assert "EOF occurred in violation of protocol" in str(backend._delivery_error("writing", error))


@pytest.mark.parametrize(
    "status",
    ["301 Moved Permanently", "302 Found", "307 Temporary Redirect", "308 Permanent Redirect"],
)
def test_a_redirect_says_so_shows_where_to_and_masks_credentials(
    fake: list[FakeServer], status: str
) -> None:
    location = "http://admin:hunter2@influx.internal:8086/write?db=db&p=s3cret"

    def respond(number: int, path: str) -> bytes:
        if path.startswith("/query"):
            return OK_QUERY
        return answer(status, b"", f"Location: {location}\r\n")

    server = FakeServer(respond)
    fake.append(server)
    backend = InfluxBackend(
        "db", host="127.0.0.1", port=server.port, username="app", password="s3cret", timeout=2
    )
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1.0)])
    message = str(caught.value)
    assert "redirect" in message and status.split()[0] in message, message
    assert "influx.internal:8086" in message and "does not follow redirects" in message
    assert "hunter2" not in message and "s3cret" not in message, message
    assert not caught.value.retryable


def test_https_against_a_plain_http_server_says_it_does_not_speak_tls(
    influx_server: InfluxServer,
) -> None:
    url = f"https+influxdb://127.0.0.1:{influx_server.port}/db?timeout=2"
    backend = InfluxBackend.from_url(url)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1.0)])
    message = str(caught.value)
    assert "does not speak TLS" in message and "influxdb://" in message, message
    assert "https+influxdb:// for TLS" not in message, message
    assert not caught.value.retryable
    backend.close()
