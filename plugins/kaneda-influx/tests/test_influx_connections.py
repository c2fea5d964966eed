"""Keep-alive retries within the timeout, TLS restarts, redirects and scheme mistakes:
against real influxd servers, or a small fake server over a real socket where the
behaviour is a hostile server's."""

from __future__ import annotations

import contextlib
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


# Connecting within the request's bound: name resolution (a monkeypatched getaddrinfo
# stands in for DNS), each address in turn (listeners with a full backlog black-hole a
# SYN, as a firewall that drops does), the TLS handshake.

_Entry = tuple[int, int, int, str, tuple[str, int]]


def entries(*addresses: tuple[str, int]) -> list[_Entry]:
    """What getaddrinfo answers for ``addresses`` (IPv4, TCP)."""
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in addresses]


class Resolver:
    """Stands in for DNS: ``answers[host]()`` is what getaddrinfo gives (or raises) for
    ``host``; other hosts resolve as usual. ``calls`` records (host, thread name)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, object] = {}
        self.calls: list[tuple[str, str]] = []
        self.release = threading.Event()  # set at teardown: hung resolvers return
        real = socket.getaddrinfo

        def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> object:
            self.calls.append((host, threading.current_thread().name))
            answer = self.answers.get(host)
            if answer is None:
                return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
            return answer()  # type: ignore[operator]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def asked(self, host: str) -> int:
        return sum(1 for name, _ in self.calls if name == host)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Resolver]:
    stand_in = Resolver(monkeypatch)
    yield stand_in
    stand_in.release.set()


@pytest.fixture
def dead() -> Iterator[list[tuple[str, int]]]:
    """Three addresses whose listeners' backlog is full: a SYN to them is never answered."""
    sockets: list[socket.socket] = []
    addresses = []
    for _ in range(3):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler = socket.socket()
        filler.connect(listener.getsockname())
        sockets += [listener, filler]
        addresses.append(listener.getsockname())
    yield addresses
    for sock in sockets:
        sock.close()


def refused_address() -> tuple[str, int]:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()  # type: ignore[no-any-return]


def timed_send(backend: InfluxBackend) -> tuple[float, DeliveryError | None]:
    started = time.monotonic()
    try:
        backend.send([Metric.create("g", "gauge", 1.0)])
    except DeliveryError as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


def test_black_holed_addresses_end_within_the_timeout_and_are_each_named(
    resolver: Resolver, dead: list[tuple[str, int]]
) -> None:
    """Each address got the whole timeout: three dead ones held the request 3 s for 1."""
    resolver.answers["influx-3dead.internal"] = lambda: entries(*dead)
    backend = InfluxBackend("db", host="influx-3dead.internal", port=8086, timeout=1)
    elapsed, error = timed_send(backend)
    assert error is not None and error.retryable
    assert elapsed < 1.3, f"the request took {elapsed:.2f} s with a 1 s timeout"
    message = str(error)
    assert "connect" in message and "timeout bounds the whole request" in message, message
    for host, port in dead:
        assert f"{host}:{port}" in message, message


def test_a_resolver_that_does_not_answer_is_bounded_by_the_timeout_and_named(
    resolver: Resolver,
) -> None:
    """getaddrinfo had no bound at all; the error blamed "no complete answer"."""

    def hangs() -> object:
        resolver.release.wait(2.5)
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    resolver.answers["slow-dns.internal"] = hangs
    backend = InfluxBackend("db", host="slow-dns.internal", port=8086, timeout=1)
    elapsed, error = timed_send(backend)
    assert error is not None and error.retryable
    assert elapsed < 1.3, f"the request took {elapsed:.2f} s with a 1 s timeout"
    message = str(error)
    assert "resolv" in message and "'slow-dns.internal'" in message, message
    assert "timeout bounds the whole request" in message, message


def test_a_hung_resolver_is_asked_once_at_a_time_and_its_late_answer_not_kept(
    resolver: Resolver,
) -> None:
    """Requests while a resolution hangs wait for that one (each within its own timeout)
    rather than start threads without bound; an answer that came after its request gave
    up is not used later: the next connection asks again."""
    first = threading.Event()
    refused = refused_address()

    def answer() -> object:
        if not first.is_set():
            first.set()
            resolver.release.wait(2.5)
        return entries(refused)

    resolver.answers["hung-dns.internal"] = answer
    backend = InfluxBackend("db", host="hung-dns.internal", port=8086, timeout=0.3)
    for _ in range(3):
        elapsed, error = timed_send(backend)
        assert error is not None and elapsed < 0.6, f"{elapsed:.2f} s, {error}"
        assert "'hung-dns.internal'" in str(error), str(error)
    assert resolver.asked("hung-dns.internal") == 1
    resolver.release.set()
    for _ in range(100):  # the hung resolution returns, late
        if not [t for t in threading.enumerate() if t.name == "kaneda-resolve"]:
            break
        time.sleep(0.01)
    _, error = timed_send(backend)
    assert resolver.asked("hung-dns.internal") == 2
    assert error is not None and f"127.0.0.1:{refused[1]}" in str(error), str(error)
    assert "refused" in str(error) and "timeout bounds" not in str(error), str(error)


def test_after_a_fork_the_parents_resolution_in_flight_is_not_waited_for(
    resolver: Resolver,
) -> None:
    """Its thread is not in the child: waiting for it would time every request out."""
    refused = refused_address()
    hung = threading.Event()

    def answer() -> object:
        if not hung.is_set():
            hung.set()
            resolver.release.wait(2.5)
        return entries(refused)

    resolver.answers["forked-dns.internal"] = answer
    backend = InfluxBackend("db", host="forked-dns.internal", port=8086, timeout=0.3)
    _, error = timed_send(backend)
    assert error is not None and "gave no answer" in str(error), str(error)
    backend.after_fork()  # as in a forked child (the parent's resolution still hangs)
    _, error = timed_send(backend)
    assert resolver.asked("forked-dns.internal") == 2
    assert error is not None and "Connection refused" in str(error), str(error)


def test_a_refused_address_after_a_dead_one_is_named_not_taken_for_the_timeout(
    resolver: Resolver, dead: list[tuple[str, int]]
) -> None:
    """The dead address took the whole timeout, so the refusal read as a timeout."""
    refused = refused_address()
    resolver.answers["influx-two.internal"] = lambda: entries(dead[0], refused)
    backend = InfluxBackend("db", host="influx-two.internal", port=8086, timeout=1)
    elapsed, error = timed_send(backend)
    assert error is not None and elapsed < 1.3, f"{elapsed:.2f} s"
    message = str(error)
    assert f"127.0.0.1:{dead[0][1]}" in message and f"127.0.0.1:{refused[1]}" in message, message
    assert "refused" in message and "timeout bounds the whole request" not in message, message


def test_a_live_address_after_a_dead_one_is_used_within_the_timeout(
    resolver: Resolver, dead: list[tuple[str, int]], influx_server: InfluxServer, database: str
) -> None:
    """On the real influxd: the dead first address has its share of the time, not all."""
    live = ("127.0.0.1", influx_server.port)
    resolver.answers["influx-dead-then-live.internal"] = lambda: entries(dead[0], live)
    backend = InfluxBackend(database, host="influx-dead-then-live.internal", port=8086, timeout=2)
    elapsed, error = timed_send(backend)
    assert error is None, str(error)
    assert elapsed < 1.6, f"the write took {elapsed:.2f} s with a 2 s timeout"
    assert [m.value for m in stored_metrics(influx_server, database)] == [1.0]
    backend.close()


def test_an_ip_address_is_not_resolved_in_a_thread_and_a_kept_alive_connection_not_at_all(
    resolver: Resolver, influx_server: InfluxServer, database: str
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=2)
    backend.send([Metric.create("g", "gauge", 1.0)])
    here = threading.current_thread().name
    assert resolver.calls and all(thread == here for _, thread in resolver.calls)
    asked = len(resolver.calls)
    backend.send([Metric.create("g", "gauge", 2.0)])
    assert len(resolver.calls) == asked, "the kept-alive connection was used as it is"
    backend.close()


def test_a_tls_handshake_that_drips_is_bounded_and_named() -> None:
    """A server that accepts and answers the handshake a byte at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                connection.sendall(b"\x16\x03\x03\x40\x00")  # a 16 KB handshake record
                while not stop.wait(0.1):
                    connection.sendall(b"\0")

    threading.Thread(target=drip, daemon=True).start()
    try:
        backend = InfluxBackend(
            "db", connection_url=f"https+influxdb://127.0.0.1:{port}/db", timeout=1
        )
        elapsed, error = timed_send(backend)
        assert error is not None and elapsed < 1.3, f"{elapsed:.2f} s"
        message = str(error)
        assert "TLS handshake" in message and f"127.0.0.1:{port}" in message, message
        assert "timeout bounds the whole request" in message, message
    finally:
        stop.set()
        listener.close()
