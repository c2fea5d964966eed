"""Fixtures: a fake Elasticsearch on a loopback port, or the real one when given."""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_elasticsearch import FakeElasticsearch

TLS = Path(__file__).parent / "tls"


@pytest.fixture
def fake_es() -> Iterator[FakeElasticsearch]:
    """A local HTTP server speaking the Elasticsearch endpoints the plugin uses."""
    server = FakeElasticsearch()
    yield server
    server.stop()


class _Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[list[object], BaseException]] = []

    from kaneda_core.hookspecs import hookimpl

    @hookimpl
    def kaneda_batch_failed(self, metrics: object, error: BaseException, backend: object) -> None:
        self.seen.append((list(metrics), error))  # type: ignore[call-overload]


@pytest.fixture
def failures() -> Iterator[_Failures]:
    """Records what the kaneda_batch_failed hook is told."""
    from kaneda_core.plugins import get_plugin_manager

    recorder = _Failures()
    get_plugin_manager().register(recorder)
    yield recorder
    get_plugin_manager().unregister(recorder)


@pytest.fixture
def self_signed_server() -> Iterator[int]:
    """A TLS server on a loopback port whose certificate no one trusts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(TLS / "cert.pem", TLS / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # so the loop sees stop soon
    port = listener.getsockname()[1]
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
    yield port
    stop.set()
    listener.close()
    thread.join(5)
