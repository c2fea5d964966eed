"""What a user reads when InfluxDB cannot be reached: one line, the address, what to check."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator

import pytest
from influx_server import InfluxServer
from kaneda_influx import InfluxBackend

from kaneda_core import DeliveryError, Metric


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()
    listener.settimeout(0.1)

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def send_error(backend: InfluxBackend) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    backend.close()
    return caught.value


def test_a_closed_port_names_the_address_the_reason_and_what_to_check() -> None:
    port = closed_port()
    error = send_error(InfluxBackend("metrics", host="127.0.0.1", port=port))
    message = str(error)
    assert error.retryable
    assert f"InfluxDB at 127.0.0.1:{port}" in message and "Connection refused" in message
    assert "Check that influxd runs there" in message
    assert "Max retries exceeded" not in message and "\n" not in message


def test_a_server_that_never_answers_says_it_timed_out(silent_port: int) -> None:
    error = send_error(InfluxBackend("metrics", host="127.0.0.1", port=silent_port, timeout=0.2))
    assert error.retryable
    message = str(error)
    assert f"127.0.0.1:{silent_port}" in message
    assert "within 0.2" in message or "timed out" in message, message
    # Up and slow, not a wrong address: the message sends no one to check the host.
    assert "accepted the connection but gave no complete answer" in message, message
    assert "slow or overloaded" in message and "Check that influxd runs there" not in message


def test_a_paused_server_is_said_to_be_slow_not_unreachable(
    influx_server: InfluxServer, database: str
) -> None:
    """The real influxd stopped (kill -STOP: a long GC pause, a host out of memory): the
    kernel still accepts connections, and the error sent operators to check the address."""
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=0.3)
    backend.send([Metric.create("g", "gauge", 1)])  # connected, the database made
    assert influx_server.process is not None
    influx_server.process.send_signal(signal.SIGSTOP)
    try:
        error = send_error(backend)
    finally:
        influx_server.process.send_signal(signal.SIGCONT)
    message = str(error)
    assert error.retryable
    assert "slow or overloaded" in message and "Check that influxd runs there" not in message
