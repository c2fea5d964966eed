"""``timeout`` bounds a whole enqueue: a real redis-server behind a proxy that answers slowly.

The proxy forwards every request to Redis at once and slows the replies down: each one
held 0.9 s (``delay``), sent a byte every 0.5 s (``drip``), or dropped once the client has
sent what pushes a job on the queue (``lose``: Redis enqueued the job, the answer never
comes back; on that one connection, after which the proxy passes replies on again). A
socket timeout bounds each read, so none of them times out a send by itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from brokers import RedisServer
from kaneda_rq import RQBackend
from redis import Redis
from rq import Queue

from kaneda_core import DeliveryError, Metric, Metrics, connect
from kaneda_core.message import decode_batch
from kaneda_core.model import timestamp_from_ns

PASSWORD = "pw-s3cret"
TIMEOUT = 1.0
#: How much later than ``timeout`` a send may return (a thread switch, a slow machine).
SLACK = 0.6


class SlowProxy:
    """A TCP proxy on a free loopback port in front of ``target``, slowing replies down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            sent_script = threading.Event()
            threading.Thread(target=self._requests, args=(client, server, sent_script)).start()
            threading.Thread(target=self._replies, args=(server, client, sent_script)).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, sent: threading.Event
    ) -> None:
        with _closing(client, server):
            while data := client.recv(65536):
                pushes = b"RPUSH" in data.upper() or b"EVALSHA" in data.upper()
                if pushes and self.mode == "lose":  # a job's push: its answer is lost
                    sent.set()
                server.sendall(data)

    def _replies(self, server: socket.socket, client: socket.socket, sent: threading.Event) -> None:
        with _closing(client, server):
            losing = False
            while data := server.recv(65536):
                if self.mode == "lose" and sent.is_set():
                    losing, self.mode = True, "pass"
                if losing:
                    continue
                if self.mode == "delay":
                    time.sleep(0.9)
                elif self.mode == "drip":
                    for byte in data:
                        time.sleep(0.5)
                        client.sendall(bytes([byte]))
                    continue
                client.sendall(data)

    def close(self) -> None:
        self._closed = True
        for sock in self._sockets:
            _shut(sock)


class _closing:
    def __init__(self, *sockets: socket.socket) -> None:
        self.sockets = sockets

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> bool:
        for sock in self.sockets:
            _shut(sock)
        return True  # a socket the other side or close() shut: the pump just ends


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A redis-server of this module's, with a password (that no message may show)."""
    server = RedisServer(password=PASSWORD)
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def proxy(locked_redis: RedisServer) -> Iterator[SlowProxy]:
    proxy = SlowProxy(locked_redis.port)
    yield proxy
    proxy.close()


@pytest.fixture
def queue(locked_redis: RedisServer) -> Iterator[Queue]:
    connection = Redis.from_url(locked_redis.url)
    yield Queue(f"kaneda-{os.urandom(4).hex()}", connection=connection)
    connection.close()


def url(proxy: SlowProxy, queue: Queue) -> str:
    return f"rq://:{PASSWORD}@127.0.0.1:{proxy.port}/0?timeout={TIMEOUT}&queue_name={queue.name}"


def produced(name: str) -> Metric:
    ns = 1_600_000_000_000_000_001
    return Metric(name, "gauge", 1, {}, timestamp_from_ns(ns), "app-7", None, ns)


def within(limit: float, call: Callable[[], object]) -> tuple[float, object]:
    """How long ``call`` took and what it returned or raised; fails past ``limit`` seconds."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as error:  # handed to the test
            outcome.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    took = time.monotonic() - started
    assert not thread.is_alive(), f"still waiting for Redis after {took:.1f} s"
    return took, outcome[0]


def enqueued(queue: Queue) -> list[str]:
    """The metric names of every job in ``queue``, in order."""
    return [m.name for job in queue.get_jobs() for m in decode_batch(job.args[0])]


@pytest.mark.parametrize("mode", ["delay", "drip"])
def test_a_redis_that_answers_late_or_a_byte_at_a_time_cannot_hold_a_call_past_timeout(
    proxy: SlowProxy, queue: Queue, mode: str
) -> None:
    proxy.mode = mode
    metrics = connect(url(proxy, queue), batching=False)
    took, _ = within(TIMEOUT + SLACK, lambda: metrics.gauge("a", 1))
    assert took >= TIMEOUT - 0.05
    assert metrics.stats().failed == 1  # the application never sees it
    metrics.close()


@pytest.mark.parametrize("mode", ["delay", "drip"])
def test_a_send_past_timeout_fails_for_now_naming_redis_not_its_password(
    proxy: SlowProxy, queue: Queue, mode: str
) -> None:
    backend = RQBackend.from_url(url(proxy, queue))
    backend.send([produced("warm")])  # connected, RQ's script loaded: a send is 2 round trips
    proxy.mode = mode
    _, error = within(TIMEOUT + SLACK, lambda: backend.send([produced("a")]))
    assert isinstance(error, DeliveryError) and error.retryable
    message = str(error)
    assert f"Redis at 127.0.0.1:{proxy.port} (queue {queue.name!r})" in message
    assert f"within {TIMEOUT} s" in message and PASSWORD not in message
    backend.close()


def test_the_send_after_one_cut_off_mid_reply_stores_on_a_sound_connection(
    proxy: SlowProxy, queue: Queue
) -> None:
    backend = RQBackend.from_url(url(proxy, queue))
    backend.send([produced("warm")])
    proxy.mode = "drip"  # the connection is shut down with half a reply read
    _, error = within(TIMEOUT + SLACK, lambda: backend.send([produced("cut")]))
    assert isinstance(error, DeliveryError)
    proxy.mode = "pass"
    backend.send([produced("cut")])  # the batching core sends the same batch again
    backend.send([produced("next")])
    assert enqueued(queue) == ["warm", "cut", "next"]  # each once, each whole
    backend.close()


def test_a_job_redis_enqueued_but_whose_answer_was_lost_is_not_enqueued_again(
    proxy: SlowProxy, queue: Queue
) -> None:
    backend = RQBackend.from_url(url(proxy, queue))
    backend.send([produced("warm")])
    proxy.mode = "lose"  # Redis runs the enqueue; its answer never comes back
    _, error = within(TIMEOUT + SLACK, lambda: backend.send([produced("lost")]))
    assert isinstance(error, DeliveryError) and error.retryable
    assert enqueued(queue) == ["warm", "lost"]
    backend.send([produced("lost")])  # sent again: Redis has it already
    backend.send([produced("next")])
    assert enqueued(queue) == ["warm", "lost", "next"]
    backend.close()


def test_the_batching_worker_retries_a_send_cut_off_and_stores_it_once(
    proxy: SlowProxy, queue: Queue
) -> None:
    from kaneda_core import RetryPolicy

    backend = RQBackend.from_url(url(proxy, queue))
    backend.send([produced("warm")])
    proxy.mode = "lose"  # the first attempt's answer; the retry's comes back
    metrics = Metrics(backend, retry=RetryPolicy(attempts=2, initial_delay=0.1, jitter=0))
    metrics.gauge("g", 1)
    assert metrics.flush(timeout=TIMEOUT + SLACK + 1) == 0
    stats = metrics.stats()
    assert (stats.retried, stats.failed) == (1, 0)
    assert enqueued(queue) == ["warm", "g"]
    metrics.close()
