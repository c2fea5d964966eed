"""A server (or a proxy, or a resolver) that misbehaves cannot hold a delivery longer than
its timeout, nor take the process's memory: answers are read up to a bound, and the
host's name is resolved within the timeout. Real sockets, real client."""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_elasticsearch import FakeElasticsearch
from kaneda_elasticsearch import ElasticsearchBackend

from kaneda_core import DeliveryError, Metric, Metrics

TLS = Path(__file__).parent / "tls"
MiB = 1024 * 1024
Answer = Callable[[socket.socket], None]


def head(status: str, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "X-Elastic-Product: Elasticsearch", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def fixed(status: str, body: bytes, *headers: str) -> Answer:
    def answer(sock: socket.socket) -> None:
        sock.sendall(head(status, f"Content-Length: {len(body)}", *headers) + body)

    return answer


def endless(status: str, framing: str) -> Answer:
    """A body that never ends, as fast as the client takes it: chunked, delimited by the
    connection's close (HTTP/1.0), or under a Content-Length of 100 GB."""

    def answer(sock: socket.socket) -> None:
        blob = b"x" * MiB
        if framing == "chunked":
            sock.sendall(
                head(status, "Content-Type: application/json", "Transfer-Encoding: chunked")
            )
            blob = b"%x\r\n" % len(blob) + blob + b"\r\n"
        elif framing == "close":
            sock.sendall(
                f"HTTP/1.0 {status}\r\nX-Elastic-Product: Elasticsearch\r\n"
                "Content-Type: application/json\r\n\r\n".encode()
            )
        else:
            sock.sendall(
                head(status, "Content-Type: application/json", "Content-Length: 100000000000")
            )
        for _ in range(20_000):  # 20 GB at most; the client hangs up long before
            sock.sendall(blob)

    return answer


def dripping(status: str) -> Answer:
    """Headers at once, then a body of 1,000 bytes sent a byte every 0.1 s."""

    def answer(sock: socket.socket) -> None:
        sock.sendall(head(status, "Content-Type: application/json", "Content-Length: 1000"))
        for _ in range(1000):
            sock.sendall(b" ")
            time.sleep(0.1)

    return answer


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """64 MiB of zeros, gzipped into about 64 KB."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join([packer.compress(zeros) for _ in range(64)] + [packer.flush()])


def backend_for(server: FakeElasticsearch, timeout: float = 1.0) -> ElasticsearchBackend:
    backend = ElasticsearchBackend("k", "web", connection_url=server.url, timeout=timeout)
    backend.send([Metric.create("warm", "gauge", 0)])  # the template is in
    return backend


def failed_send(backend: ElasticsearchBackend) -> tuple[DeliveryError, float, int]:
    """The error a send raised, how long it took, and the peak of memory it allocated."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError) as caught:
            backend.send([Metric.create("g", "gauge", 1)])
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return caught.value, elapsed, peak


# -- answers read up to a bound -----------------------------------------------------------


def test_a_gzip_bomb_is_not_inflated_past_the_bound(
    fake_es: FakeElasticsearch, gzip_bomb: bytes
) -> None:
    """Was: inflated whole (6.8 GB for a 522 KB bomb), past the timeout, then blamed on a
    server that gave "no answer within the timeout"."""
    backend = backend_for(fake_es)
    fake_es.misbehave_next = [
        fixed("200 OK", gzip_bomb, "Content-Type: application/json", "Content-Encoding: gzip")
    ]
    error, elapsed, peak = failed_send(backend)
    message = str(error)
    assert error.retryable, message
    assert "larger than" in message and "gzip" in message, message
    assert "no answer" not in message and len(message) < 1000
    assert elapsed < 2.0, elapsed  # (timing bounds leave room for a loaded machine)
    assert peak < 40 * MiB, peak
    # The connection was dropped, not kept with the rest of the bomb unread: the next
    # delivery goes through.
    assert backend.send([Metric.create("g", "gauge", 2)])[0]["status"] == 201
    backend.close()


def test_a_gzipped_answer_under_the_bound_is_read(fake_es: FakeElasticsearch) -> None:
    """A proxy that compresses answers nobody asked it to compress still works (in two
    gzip members here, as a proxy gzipping each piece of a stream sends it)."""
    backend = backend_for(fake_es)
    answer = (
        b'{"took":1,"errors":false,"items":'
        b'[{"index":{"_index":"k","_id":"x","status":201,"result":"created"}}]}'
    )
    body = zlib.compress(answer[:20], wbits=31) + zlib.compress(answer[20:], wbits=31)
    fake_es.misbehave_next = [
        fixed("200 OK", body, "Content-Type: application/json", "Content-Encoding: gzip")
    ]
    assert backend.send([Metric.create("g", "gauge", 1)])[0]["result"] == "created"
    backend.close()


def test_an_encoding_the_client_did_not_ask_for_and_cannot_read_is_refused(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es)
    fake_es.misbehave_next = [
        fixed(
            "200 OK",
            b"\x8b\x00\x80garbled",
            "Content-Type: application/json",
            "Content-Encoding: br",
        )
    ]
    error, _, _ = failed_send(backend)
    assert error.retryable and "Content-Encoding" in str(error) and "'br'" in str(error)
    assert "unreachable" not in str(error)
    backend.close()


@pytest.mark.parametrize("status", ["200 OK", "500 Internal Server Error"])
@pytest.mark.parametrize("framing", ["chunked", "close", "length"])
def test_an_answer_without_end_is_cut_off_at_the_bound_not_buffered_until_the_timeout(
    fake_es: FakeElasticsearch, framing: str, status: str
) -> None:
    """Was: buffered until the watchdog fired (1.7 GB in 1 s), or 79 s and 11 GB for a
    body delimited by the connection's close; a Content-Length of 100 GB raised
    MemoryError, which was not retried."""
    backend = backend_for(fake_es, timeout=5.0)
    fake_es.misbehave_next = [endless(status, framing)]
    error, elapsed, peak = failed_send(backend)
    message = str(error)
    assert error.retryable, message
    assert "larger than" in message and "no answer" not in message, message
    assert elapsed < 4.0, elapsed
    assert peak < 40 * MiB, peak
    backend.close()


def test_an_answer_that_started_but_did_not_finish_in_time_is_not_called_no_answer(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es, timeout=0.5)
    fake_es.misbehave_next = [dripping("200 OK")]
    error, elapsed, _ = failed_send(backend)
    message = str(error)
    assert error.retryable, message
    assert "no answer" not in message and "unreachable" not in message, message
    assert "did not finish within 0.5" in message and "200" in message, message
    assert elapsed < 2.5, elapsed
    backend.close()


def test_an_answer_broken_off_by_the_server_is_not_called_unreachable(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es)

    def broken_off(sock: socket.socket) -> None:
        sock.sendall(head("200 OK", "Content-Type: application/json", "Content-Length: 1000"))
        sock.sendall(b'{"took":1,')

    fake_es.misbehave_next = [broken_off]
    error, _, _ = failed_send(backend)
    message = str(error)
    assert error.retryable, message
    assert "answered 200" in message and "broke off after 10 bytes" in message, message
    assert "unreachable" not in message and "no answer" not in message, message
    backend.close()


def test_a_large_answer_that_is_not_json_is_quoted_in_a_few_hundred_characters(
    fake_es: FakeElasticsearch,
) -> None:
    """The client's error quoted the whole body (its repr: four characters a NUL byte),
    and the backend copied it twice more."""
    backend = backend_for(fake_es)
    body = bytes(8 * MiB)
    fake_es.misbehave_next = [fixed("200 OK", body, "Content-Type: application/json")]
    error, _, peak = failed_send(backend)
    message = str(error)
    assert error.retryable and "not valid JSON" in message and len(message) < 1000, message
    assert peak < 3 * len(body), peak
    backend.close()


def test_a_large_error_page_is_quoted_in_a_few_hundred_characters(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es)
    page = b"<html>" + b"Bad Gateway " * MiB + b"</html>"
    fake_es.misbehave_next = [fixed("502 Bad Gateway", page, "Content-Type: text/html")]
    error, _, _ = failed_send(backend)
    message = str(error)
    assert error.retryable and "502" in message and len(message) < 1000, message
    backend.close()


# -- the name resolved within the timeout -------------------------------------------------


class HungResolver:
    """Stands in for DNS: ``slow`` names hang until released; ``names`` map to 127.0.0.1."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.slow: set[str] = set()
        self.names: set[str] = set()
        self.asked: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            self.asked.append(host)
            if host in self.slow:
                self.release.wait(30)
                return real("127.0.0.1", port, *args, **kwargs)
            if host in self.names:
                return real("127.0.0.1", port, *args, **kwargs)
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HungResolver]:
    stand_in = HungResolver(monkeypatch)
    yield stand_in
    stand_in.release.set()


def resolving_threads() -> int:
    return sum(t.name.startswith("kaneda-resolve") for t in threading.enumerate())


def test_a_hung_resolver_holds_a_send_no_longer_than_its_timeout(
    resolver: HungResolver,
) -> None:
    """Was: as long as the resolver hung (20 s with timeout=1)."""
    resolver.slow.add("slow.invalid")
    backend = ElasticsearchBackend("k", "web", host="slow.invalid", port=9200, timeout=0.5)
    before = resolving_threads()
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            backend.send([Metric.create("g", "gauge", 1)])
        assert time.monotonic() - started < 2.5
        message = str(caught.value)
        assert caught.value.retryable, message
        assert "resolving the name 'slow.invalid'" in message and "within 0.5" in message
    # The later sends waited for the resolution in flight, they did not start more.
    assert resolving_threads() - before <= 1
    assert resolver.asked.count("slow.invalid") == 1
    backend.close()


def test_a_call_without_batching_is_not_held_by_a_hung_resolver(resolver: HungResolver) -> None:
    resolver.slow.add("slow.invalid")
    backend = ElasticsearchBackend("k", "web", host="slow.invalid", port=9200, timeout=0.5)
    metrics = Metrics(backend, batching=False)
    started = time.monotonic()
    metrics.gauge("g", 1)
    assert time.monotonic() - started < 2.5
    assert metrics.stats().failed == 1
    metrics.close(1)


def test_a_name_resolved_in_the_background_still_names_the_host_to_the_server(
    resolver: HungResolver, fake_es: FakeElasticsearch
) -> None:
    resolver.names.add("es.kaneda.test")
    port = fake_es.server_address[1]
    backend = ElasticsearchBackend("k", "web", connection_url=f"http://es.kaneda.test:{port}")
    backend.send([Metric.create("g", "gauge", 1)])
    assert "es.kaneda.test" in resolver.asked
    assert {headers["Host"] for _, _, headers, _ in fake_es.requests} == {f"es.kaneda.test:{port}"}
    backend.close()


def test_tls_still_checks_the_certificate_against_the_name_not_the_address(
    resolver: HungResolver, self_signed_server: int
) -> None:
    """The certificate is for localhost and 127.0.0.1: a name that resolves to 127.0.0.1
    but is not on it is refused, though the address is."""
    resolver.names.add("es.kaneda.test")
    url = f"https://es.kaneda.test:{self_signed_server}"
    backend = ElasticsearchBackend("k", "web", connection_url=url, ca_certs=str(TLS / "cert.pem"))
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert not caught.value.retryable and "certificate did not verify" in message, message
    assert "es.kaneda.test" in message or "hostname" in message.lower(), message
    backend.close()

    url = f"https://localhost:{self_signed_server}"
    backend = ElasticsearchBackend(
        "k", "web", connection_url=url, ca_certs=str(TLS / "cert.pem"), timeout=5
    )
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    assert "certificate" not in str(caught.value)  # TLS passed; no HTTP answer then
    backend.close()
