"""What a user reads when MongoDB cannot be reached: one short line, not pymongo's topology."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kaneda_mongo import MongoBackend

from kaneda_core import ConfigurationError, DeliveryError, Metric


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_is_summarised_in_one_line() -> None:
    port = closed_port()
    backend = MongoBackend("db", "metrics", host="127.0.0.1", port=port, timeout=50)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert caught.value.retryable
    assert f"127.0.0.1:{port}: [Errno 111] Connection refused" in message
    assert "within 50 ms" in message and "Check that mongod runs" in message
    assert "Topology Description" not in message and "configured timeouts" not in message
    assert len(message) < 300 and "\n" not in message
    backend.close()


def test_every_address_of_a_replica_set_is_named() -> None:
    first, second = closed_port(), closed_port()
    url = f"mongodb://kaneda:qz7xk9@127.0.0.1:{first},127.0.0.1:{second}/?replicaSet=rs"
    backend = MongoBackend("db", "metrics", connection_url=url, timeout=50)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert f"127.0.0.1:{first}" in message and f"127.0.0.1:{second}" in message
    assert "qz7xk9" not in message
    backend.close()


def test_what_pymongo_refuses_in_a_url_is_a_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        MongoBackend("db", "m", connection_url="mongodb://kaneda:qz7xk9@h/?w")
    assert "pymongo refuses" in str(caught.value) and "qz7xk9" not in str(caught.value)


def test_a_tls_ca_file_that_is_missing_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="tlscafile"):
        MongoBackend("db", "m", connection_url="mongodb://h/?tls=true&tlsCAFile=/nonexistent.pem")


@pytest.fixture
def self_signed_server(tmp_path: Path) -> Iterator[int]:
    """A TLS server on a loopback port whose certificate (made now) no one trusts."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"]
    subprocess.run(
        ["openssl", *request, "-days", "1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(5)
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client hung up: it did not trust us

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    listener.close()
    thread.join(5)


def test_a_certificate_that_does_not_verify_is_not_retried(self_signed_server: int) -> None:
    url = f"mongodb://127.0.0.1:{self_signed_server}/?tls=true"
    backend = MongoBackend("db", "metrics", connection_url=url, timeout=500)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert not caught.value.retryable
    assert f"127.0.0.1:{self_signed_server}" in message and "CERTIFICATE_VERIFY_FAILED" in message
    assert "tlsCAFile" in message and "\n" not in message
    backend.close()


# -- how long a send may take -------------------------------------------------------------


@pytest.mark.parametrize("timeout", [50, 100, 300])
def test_the_timeout_bounds_a_send_to_no_server(timeout: int) -> None:
    url = f"mongodb://127.0.0.1:{closed_port()}/"
    backend = MongoBackend("db", "metrics", connection_url=url, timeout=timeout)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    elapsed = time.monotonic() - started
    # Bounded by the timeout, not pymongo's 30 s; the slack is the first connection's
    # own start-up, 0.35 s once beside the two-process suite.
    assert elapsed < timeout / 1000 + 0.5, f"{elapsed:.3f} s for timeout={timeout}"
    assert caught.value.retryable and f"within {timeout} ms" in str(caught.value)
    backend.close()


@pytest.fixture
def dns_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    """A resolver on a loopback UDP port that every lookup goes to: ``answer(True)`` makes
    it say no such name; otherwise it never answers."""
    import dns.message
    import dns.rcode
    import dns.resolver

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.05)
    answering = threading.Event()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if answering.is_set():
                response = dns.message.make_response(dns.message.from_wire(data))
                response.set_rcode(dns.rcode.NXDOMAIN)
                server.sendto(response.to_wire(), peer)

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.getsockname()[1]
    monkeypatch.setattr(dns.resolver, "default_resolver", resolver)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield lambda nxdomain: answering.set() if nxdomain else answering.clear()
    stop.set()
    thread.join(5)
    server.close()


def test_an_srv_lookup_nobody_answers_is_bounded_and_retried(
    dns_server: Callable[[bool], None],
) -> None:
    url = "mongodb+srv://cluster0.example.net/"
    backend = MongoBackend("db", "metrics", connection_url=url, timeout=200)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    elapsed = time.monotonic() - started
    assert elapsed < 0.2 + 0.3, f"{elapsed:.3f} s"
    message = str(caught.value)
    assert caught.value.retryable, message
    assert "cluster0.example.net" in message and "DNS" in message
    backend.close()


def test_an_srv_name_that_does_not_exist_says_so(dns_server: Callable[[bool], None]) -> None:
    dns_server(True)
    url = "mongodb+srv://u:qz7xk9@cluster0.exmaple.net/"
    backend = MongoBackend("db", "metrics", connection_url=url, timeout=200)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert not caught.value.retryable, message
    assert "cluster0.exmaple.net" in message and "does not exist" in message
    assert "check the cluster's host name" in message and "qz7xk9" not in message
    assert "\n" not in message
    backend.close()
