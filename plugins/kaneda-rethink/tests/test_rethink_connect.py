"""Connecting within the timeout, against servers on real sockets: the name resolved, the
socket connected and RethinkDB's handshake run, each by the deadline, whatever the
server or the resolver does; and a server that does the handshake right still connects.

Each call runs in a thread the test waits for a bounded time: a connect that hangs fails
the test instead of hanging the suite.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hostile_server import (
    HostileServer,
    asks_iterations,
    drip,
    endless,
    rethinkdb,
    silent,
)
from kaneda_rethink import RethinkBackend
from rethink_helpers import closed_port

from kaneda_core import DeliveryError, Metric, Metrics, RetryPolicy

SECRET = "hZ4-s3cret-pw"
#: How long a call may take beyond its timeout before the test calls it hung.
SLACK = 1.5


def within(seconds: float, call: Callable[[], Any]) -> tuple[Any, BaseException | None, float]:
    """``call()``'s result, its exception and how long it took; fails if it takes longer
    than ``seconds`` (the call is left running in its daemon thread)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except BaseException as error:
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"still running after {elapsed:.1f} s (allowed {seconds} s)")
    return outcome.get("result"), outcome.get("error"), elapsed


def backend_on(port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> RethinkBackend:
    return RethinkBackend("metrics", host=host, port=port, password=SECRET, timeout=timeout)


def send_fails_retryably(backend: RethinkBackend, timeout: float) -> str:
    batch = [Metric.create("g", "gauge", 1)]
    _, error, elapsed = within(timeout + SLACK, lambda: backend.send(batch))
    assert isinstance(error, DeliveryError), error
    assert error.retryable
    message = str(error)
    assert SECRET not in message
    assert elapsed < timeout + SLACK
    return message


def test_a_server_streaming_an_answer_without_end_fails_at_once_not_never() -> None:
    """The hunt's F3: the driver's handshake read a byte at a time for ever."""
    with HostileServer(endless) as server:
        backend = backend_on(server.port)
        message = send_fails_retryably(backend, 1.0)
        assert f"RethinkDB at 127.0.0.1:{server.port}" in message
        assert "without ending its handshake answer" in message
        assert backend.connection is None
        backend.close()


def test_a_server_dripping_its_answer_fails_by_the_timeout() -> None:
    with HostileServer(drip) as server:
        backend = backend_on(server.port, timeout=0.5)
        started = time.monotonic()
        message = send_fails_retryably(backend, 0.5)
        assert time.monotonic() - started >= 0.45
        assert "did not complete RethinkDB's handshake within 0.5 s" in message


def test_a_silent_server_fails_by_the_timeout() -> None:
    with HostileServer(silent) as server:
        message = send_fails_retryably(backend_on(server.port, timeout=0.5), 0.5)
        assert "within 0.5 s (timeout bounds connecting)" in message


def test_a_server_asking_for_endless_password_hashing_is_refused() -> None:
    """PBKDF2 cannot be interrupted: a count no timeout could bound is refused."""
    with HostileServer(asks_iterations(200_000_000)) as server:
        message = send_fails_retryably(backend_on(server.port), 1.0)
        assert "200000000 PBKDF2 iterations" in message


def test_a_batching_metrics_worker_gives_up_on_such_a_server_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """F3 with batching: the worker was stuck for good (queued for ever, nothing logged)."""
    with HostileServer(endless) as server:
        metrics = Metrics(
            backend_on(server.port, timeout=0.5),
            flush_interval=0.05,
            retry=RetryPolicy(attempts=2, initial_delay=0.05, max_delay=0.05),
        )
        metrics.gauge("g", 1)
        ends = time.monotonic() + 10
        while metrics.stats().failed == 0 and time.monotonic() < ends:
            time.sleep(0.05)
        stats = metrics.stats()
        metrics.close(1)
    assert stats.failed == 1 and stats.queued == 0 and stats.retried >= 1
    assert "without ending its handshake answer" in caplog.text
    assert SECRET not in caplog.text


def test_an_unbatched_report_returns_by_the_timeout() -> None:
    with HostileServer(endless) as server:
        metrics = Metrics(backend_on(server.port, timeout=0.5), batching=False)
        _, error, _ = within(0.5 + SLACK, lambda: metrics.gauge("g", 1))
        assert error is None
        assert metrics.stats().failed == 1
        metrics.close(1)


@pytest.fixture
def hanging_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """``getaddrinfo`` hangs for ``slow.invalid`` until the test ends; lists the names
    it was asked."""
    release = threading.Event()
    asked: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        if host == "slow.invalid":
            release.wait(30)
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield asked
    release.set()


def test_a_hung_resolver_costs_the_timeout_not_the_resolvers(
    hanging_resolver: list[str],
) -> None:
    """The hunt's F4: a resolver hanging 20 s held send() 20 s whatever the timeout."""
    backend = backend_on(28015, timeout=0.5, host="slow.invalid")
    message = send_fails_retryably(backend, 0.5)
    assert "resolving the name 'slow.invalid' gave no answer within 0.5 s" in message
    # The next delivery waits for the lookup still in flight: it does not start another.
    send_fails_retryably(backend, 0.5)
    assert hanging_resolver.count("slow.invalid") == 1


def test_a_hung_resolver_holds_an_unbatched_report_the_timeout(
    hanging_resolver: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Another port than the test above's: its lookup, released as it ended, may still
    # be in flight, and would be waited for (one lookup per host and port at a time).
    metrics = Metrics(backend_on(28016, timeout=0.5, host="slow.invalid"), batching=False)
    _, error, elapsed = within(0.5 + SLACK, lambda: metrics.gauge("g", 1))
    assert error is None and elapsed < 0.5 + SLACK
    assert "resolving the name 'slow.invalid'" in caplog.text
    metrics.close(1)


def test_a_name_that_does_not_resolve_says_so() -> None:
    message = send_fails_retryably(backend_on(28015, host="no-such-host.invalid"), 1.0)
    assert "could not resolve the name 'no-such-host.invalid'" in message


def _answers(query: Any) -> Any:
    """What the stand-in server answers: db_list, table_list, insert."""
    term = query[1][0]
    if term == 59:  # DB_LIST
        return ["metrics"]
    if term == 62:  # TABLE_LIST
        return ["gauge"]
    return {"inserted": 1, "errors": 0}


def test_a_server_that_does_the_handshake_right_is_connected_to_once() -> None:
    with HostileServer(rethinkdb(SECRET, _answers)) as server:
        backend = backend_on(server.port)
        assert backend.connect_now() is True
        [answer] = backend.send([Metric.create("g", "gauge", 1)])
        assert answer["inserted"] == 1
        backend.send([Metric.create("g", "gauge", 2)])
        assert server.accepted == 1
        backend.close()


def test_a_host_name_is_resolved_and_connected_to() -> None:
    with HostileServer(rethinkdb(SECRET, _answers)) as server:
        backend = backend_on(server.port, host="localhost")
        assert backend.connect_now() is True
        backend.close()


def test_a_wrong_password_is_refused_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "kaneda")
    with HostileServer(rethinkdb("another password", _answers)) as server:
        backend = backend_on(server.port)
        _, error, _ = within(1 + SLACK, lambda: backend.send([Metric.create("g", "gauge", 1)]))
        assert isinstance(error, DeliveryError) and not error.retryable
        assert "refused the credentials of user 'admin'" in str(error)
        assert SECRET not in str(error)


def test_the_socket_opened_is_shut_down_when_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog reaches the socket: a step that ignores its own bound (here a
    handshake read with no socket timeout) is broken off by the deadline."""
    from kaneda_rethink import connecting

    monkeypatch.setattr(connecting._HandshakenSocket, "_left", lambda self, ends: None)
    with HostileServer(silent) as server:
        message = send_fails_retryably(backend_on(server.port, timeout=0.5), 0.5)
        assert "did not complete RethinkDB's handshake within 0.5 s" in message


def test_a_connection_with_tls_options_is_opened_by_the_drivers_own_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The backend never asks for TLS; one opened with the plugin's ``r`` and ``ssl=``
    keeps the driver's certificate and host name checks."""
    from kaneda_rethink.backend import r
    from rethinkdb import net

    opened: list[float] = []

    def driver_connect(instance: Any, timeout: float) -> Any:
        opened.append(timeout)
        return instance._parent

    monkeypatch.setattr(net.ConnectionInstance, "connect", driver_connect)
    r.connect(host="127.0.0.1", port=closed_port(), ssl={"ca_certs": "ca.pem"}, timeout=3)
    assert opened == [3]
