"""ZMQBackend and ZMQWorker in one process: the answers, the failures, the fork."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import zmq
from kaneda_zmq import WorkerUnavailable, ZMQBackend, ZMQWorker

from kaneda_core import (
    ConfigurationError,
    DeliveryError,
    Metric,
    Metrics,
    RetryPolicy,
    connect,
)
from kaneda_core.backends import MemoryBackend
from kaneda_core.message import encode_batch
from kaneda_core.model import timestamp_from_ns
from kaneda_core.worker import MessageHandler


def free_endpoint() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def wait_until_connected(
    socket: zmq.Socket[Any], endpoints: list[str], timeout: float = 10
) -> None:
    """Connect ``socket`` to ``endpoints`` afresh, watched, and wait for every handshake."""
    from zmq.utils.monitor import recv_monitor_message

    monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        for endpoint in endpoints:  # connected before the monitor could see it: again
            socket.disconnect(endpoint)
            socket.connect(endpoint)
        connected, deadline = 0, time.monotonic() + timeout
        while connected < len(endpoints):
            remaining = deadline - time.monotonic()
            assert remaining > 0 and monitor.poll(int(remaining * 1000)), f"{connected} up"
            connected += recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    finally:
        socket.disable_monitor()
        monitor.close(linger=0)


class DownBackend(MemoryBackend):
    """A store that is down."""

    def send(self, batch: Sequence[Metric]) -> None:
        raise ConnectionRefusedError("store down")


class RunningWorker:
    """A ZMQWorker in a thread, delivering to ``backend``."""

    def __init__(self, endpoint: str, backend: MemoryBackend, **options: Any) -> None:
        self.backend = backend
        self.handler = MessageHandler(Metrics(backend, retry=RetryPolicy(attempts=1)))
        self.worker = ZMQWorker([endpoint], self.handler, poll_interval=0.05, **options)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.worker.bound.wait(5)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.handler.close()


@pytest.fixture
def endpoint() -> str:
    return free_endpoint()


@pytest.fixture
def worker(endpoint: str) -> Iterator[RunningWorker]:
    running = RunningWorker(endpoint, MemoryBackend())
    yield running
    running.close()


def produced(name: str, host: str = "app-7") -> Metric:
    ns = 1_600_000_000_000_000_001
    return Metric(name, "gauge", 1, {"zone": "eu"}, timestamp_from_ns(ns), host, None, ns)


@contextlib.contextmanager
def raw_dealer(endpoint: str) -> Iterator[zmq.Socket[Any]]:
    """A DEALER socket connected to ``endpoint``, to send a worker frames by hand."""
    context: zmq.Context[Any] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    try:
        yield dealer
    finally:
        dealer.close()
        context.term()


# -- URLs ----------------------------------------------------------------------------


def test_urls_name_one_or_several_workers_and_options() -> None:
    backend = connect("zmq+tcp://127.0.0.1:5599,10.0.0.2:5600?timeout=2", batching=False).backend
    assert isinstance(backend, ZMQBackend)
    assert backend.endpoints == ["tcp://127.0.0.1:5599", "tcp://10.0.0.2:5600"]
    assert backend.timeout == 2.0
    assert ZMQBackend("tcp://a:1,tcp://b:2").endpoints == ["tcp://a:1", "tcp://b:2"]
    ipc = connect("zmq+ipc:///tmp/kaneda.sock", batching=False).backend
    assert ipc.endpoints == ["ipc:///tmp/kaneda.sock"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("zmq+tcp://127.0.0.1", "needs host:port, got '127.0.0.1'"),
        ("zmq+tcp://127.0.0.1:99999", "needs host:port"),
        ("zmq+udp://127.0.0.1:5555", "not a ZeroMQ queue URL"),
        ("zmq+tcp://127.0.0.1:5555?timeout=0", "timeout must be above zero"),
        ("zmq+tcp://127.0.0.1:5555?timeout=soon", "timeout='soon' .* must be a number"),
        ("zmq+tcp://127.0.0.1:5555?colour=red", "Unknown option 'colour'"),
    ],
)
def test_bad_urls_are_refused_naming_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        connect(url)


def test_a_worker_url_option_given_twice_is_refused_naming_both_values() -> None:
    from kaneda_zmq import protocol

    with pytest.raises(ConfigurationError, match=r"max_messages twice \('1' and '5'\)"):
        protocol.split_url("zmq+tcp://127.0.0.1:5555?max_messages=1&max_messages=5")


# -- answers ---------------------------------------------------------------------------


def test_a_batch_arrives_whole_with_its_host_time_and_ids(
    endpoint: str, worker: RunningWorker
) -> None:
    backend = ZMQBackend(endpoint, timeout=5)
    backend.send([produced("a"), produced("b")])
    stored = worker.backend.metrics
    assert [(m.name, m.host, m.epoch_ns) for m in stored] == [
        ("a", "app-7", 1_600_000_000_000_000_001),
        ("b", "app-7", 1_600_000_000_000_000_001),
    ]
    ids = [m.id for m in stored]
    assert ids[0] != ids[1] and all(str(i).startswith(backend.new_id.token) for i in ids)
    assert worker.handler.stats.messages == 1  # one message for the whole batch
    backend.close()


def test_without_a_worker_a_batch_fails_for_now_and_is_retried(endpoint: str) -> None:
    backend = ZMQBackend(endpoint, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable, match=f"no kaneda worker took the batch at {endpoint}"):
        backend.send([produced("a")])
    assert time.monotonic() - started < 2
    assert backend.is_retryable(WorkerUnavailable("x"))
    backend.close()


def test_a_batch_reported_before_the_worker_starts_is_delivered_once_it_does(
    endpoint: str,
) -> None:
    metrics = Metrics(
        ZMQBackend(endpoint, timeout=0.5),
        flush_interval=0.05,
        retry=RetryPolicy(attempts=50, initial_delay=0.05, max_delay=0.2),
    )
    metrics.gauge("early", 1)
    time.sleep(0.8)  # the first attempt found no worker
    running = RunningWorker(endpoint, MemoryBackend())
    try:
        assert metrics.flush(15) == 0
        assert [m.name for m in running.backend.metrics] == ["early"]
        assert metrics.stats().retried >= 1 and metrics.stats().failed == 0
    finally:
        metrics.close()
        running.close()


class SlowFirstBackend(MemoryBackend):
    """A store that takes the first batch after ``delay`` seconds, the others at once."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def send(self, batch: Sequence[Metric]) -> None:
        if not self.batches:
            time.sleep(self.delay)
        super().send(batch)


def test_a_batch_sent_again_after_a_slow_answer_keeps_its_ids(endpoint: str) -> None:
    # The worker stores the first copy after the producer's timeout: the producer sends
    # the batch again, and the worker stores it twice. A store keying by id keeps one
    # copy of each metric only if both copies carry the same ids.
    running = RunningWorker(endpoint, SlowFirstBackend(delay=1.0))
    metrics = Metrics(
        ZMQBackend(endpoint, timeout=0.4),
        flush_interval=0.05,
        retry=RetryPolicy(attempts=10, initial_delay=0.05, max_delay=0.2),
    )
    try:
        metrics.gauge("slow", 1)
        metrics.increment("slow.count")
        assert metrics.flush(15) == 0
        deadline = time.monotonic() + 5
        while running.backend.batches < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stored = running.backend.metrics
        names = [m.name for m in stored]
        assert names.count("slow") >= 2 and names.count("slow") == names.count("slow.count")
        ids = {name: {m.id for m in stored if m.name == name} for name in ("slow", "slow.count")}
        assert all(len(found) == 1 for found in ids.values()), ids  # one copy kept by id
        assert ids["slow"] != ids["slow.count"]
        assert metrics.stats().retried >= 2 and metrics.stats().failed == 0
    finally:
        metrics.close()
        running.close()


def test_the_worker_says_when_the_store_is_down_and_the_batch_is_kept(endpoint: str) -> None:
    running = RunningWorker(endpoint, DownBackend())
    backend = ZMQBackend(endpoint, timeout=5)
    try:
        with pytest.raises(DeliveryError, match=r"could not store the batch.*store down") as caught:
            backend.send([produced("a")])
        assert caught.value.retryable
        assert running.handler.stats.requeued == 1
    finally:
        backend.close()
        running.close()


def test_a_poison_batch_is_refused_for_good_and_the_worker_carries_on(
    endpoint: str, worker: RunningWorker
) -> None:
    backend = ZMQBackend(endpoint, timeout=5)
    with pytest.raises(DeliveryError, match=r"refused the batch.*name must be") as caught:
        backend.send([produced("")])
    assert not caught.value.retryable
    backend.send([produced("after")])
    assert [m.name for m in worker.backend.metrics] == ["after"]
    assert worker.handler.stats.poison == 1
    backend.close()


def test_frames_that_are_not_a_batch_get_a_poison_answer(
    endpoint: str, worker: RunningWorker
) -> None:
    with raw_dealer(endpoint) as dealer:
        dealer.send_multipart([b"m-1", b"\x00 not json"])
        assert dealer.poll(5000)
        message_id, verdict, reason = dealer.recv_multipart()
        assert (message_id, verdict) == (b"m-1", b"poison") and b"not JSON" in reason
        dealer.send_multipart([b"m-2", b"a", b"b"])
        assert dealer.poll(5000)
        message_id, verdict, reason = dealer.recv_multipart()
        assert (message_id, verdict) == (b"m-2", b"poison") and b"2 frames" in reason
        dealer.send_multipart([b"m-3", encode_batch([produced("good")]).encode()])
        assert dealer.poll(5000) and dealer.recv_multipart()[1] == b"stored"
    assert [m.name for m in worker.backend.metrics] == ["good"]


def test_batches_take_turns_between_workers_and_skip_a_dead_one() -> None:
    first, second = free_endpoint(), free_endpoint()
    one, two = RunningWorker(first, MemoryBackend()), RunningWorker(second, MemoryBackend())
    backend = ZMQBackend(f"{first},{second}", timeout=0.5)
    try:
        wait_until_connected(backend._connected(), [first, second])  # else one takes all
        for n in range(6):
            backend.send([produced(f"m{n}")])
        assert one.backend.metrics and two.backend.metrics  # each took some
        assert len(one.backend.metrics) + len(two.backend.metrics) == 6
        one.close()
        metrics = Metrics(backend, retry=RetryPolicy(attempts=10, initial_delay=0.05))
        for n in range(6):
            metrics.gauge(f"later{n}", n)
            assert metrics.flush(10) == 0
        assert len(one.backend.metrics) + len(two.backend.metrics) == 12
        assert metrics.stats().failed == 0
    finally:
        backend.close()
        two.close()


def test_a_forked_child_sends_on_a_socket_of_its_own(endpoint: str, worker: RunningWorker) -> None:
    backend = ZMQBackend(endpoint, timeout=5)
    backend.send([produced("parent")])
    parent_socket = backend._socket
    for call_after_fork in (True, False):  # the pid guard covers a fork nobody announced
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if call_after_fork:
                    backend.after_fork()
                backend.send([produced(f"child-{call_after_fork}")])
                code = 0 if backend._socket is not parent_socket else 2
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
    backend.send([produced("parent-again")])
    names = sorted(m.name for m in worker.backend.metrics)
    assert names == ["child-False", "child-True", "parent", "parent-again"]
    backend.close()


def test_a_worker_that_cannot_listen_says_so_in_one_line() -> None:
    """Another program on the endpoint: one line naming it, not a traceback."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "kaneda_core", "worker", f"zmq+tcp://127.0.0.1:{port}",
             "--to", "memory://"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"cannot listen on tcp://127.0.0.1:{port}" in done.stderr.splitlines()[-1]


class HeldBackend(MemoryBackend):
    """A store whose first delivery waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()

    def send(self, batch: Sequence[Metric]) -> None:
        if not self.holding.is_set():
            self.holding.set()
            self.release.wait(10)
        super().send(batch)


def test_a_stopping_worker_answers_the_messages_it_did_not_take_send_it_again(
    endpoint: str,
) -> None:
    # Closed unread with the socket, they were lost, and each producer waited out its
    # timeout (30 s by default) before sending the batch to the next worker.
    backend = HeldBackend()
    handler = MessageHandler(Metrics(backend, retry=RetryPolicy(attempts=1)))
    worker = ZMQWorker([endpoint], handler, max_messages=1, poll_interval=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    assert worker.bound.wait(5)
    try:
        with raw_dealer(endpoint) as dealer:
            for n in range(3):
                batch = encode_batch([produced(f"g{n}")]).encode()
                dealer.send_multipart([f"m-{n}".encode(), batch])
            assert backend.holding.wait(5)  # the first taken, the others waiting unread
            time.sleep(0.2)
            stop.set()
            backend.release.set()
            answers = {}
            while len(answers) < 3 and dealer.poll(5000):
                message_id, verdict, _ = dealer.recv_multipart()
                answers[message_id] = verdict
    finally:
        thread.join(5)
        handler.close()
    assert answers == {b"m-0": b"stored", b"m-1": b"retry", b"m-2": b"retry"}


def test_a_message_no_check_foresaw_is_answered_and_the_worker_goes_on(
    endpoint: str, worker: RunningWorker
) -> None:
    deep = '{"kaneda": 1, "metrics": ' + "[" * 100_000 + "]" * 100_000 + "}"
    odd_kind = encode_batch([produced("x")._replace(kind=["gauge"])])  # type: ignore[arg-type]
    with raw_dealer(endpoint) as dealer:
        for n, payload in enumerate([deep, odd_kind, encode_batch([produced("good")])]):
            dealer.send_multipart([f"m-{n}".encode(), payload.encode()])
            assert dealer.poll(5000), "the worker died"
            assert dealer.recv_multipart()[1] == (b"stored" if n == 2 else b"poison")
    assert [m.name for m in worker.backend.metrics] == ["good"]


# -- the bound on a message's size -----------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """The most memory the process ``pid`` ever held (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def test_a_frame_over_the_bound_drops_its_sender_and_the_worker_stays_small(
    processes: Any,
) -> None:
    # One 500 MB frame took the worker to 1.5 GB (three copies: libzmq's, pyzmq's bytes,
    # the text json.loads decodes), and answered it.
    endpoint = free_endpoint()
    worker = processes.worker(f"zmq+{endpoint}", "memory://")
    worker.wait_for_log("listening on")
    before = peak_rss_mb(worker.pid)
    with raw_dealer(endpoint) as dealer:
        dealer.send_multipart([b"big", zmq.Frame(b"x" * (128 * 2**20))], copy=False)
        assert not dealer.poll(3000), "a frame over the bound was answered"
        # Several frames under the bound, at once on one connection: libzmq queues a
        # couple of them (not 1,000), and the worker takes them a few at a time.
        for n in range(24):
            dealer.send_multipart([f"m-{n}".encode(), b"y" * (8 * 2**20)])
        answers = 0
        while answers < 24 and dealer.poll(10_000):
            assert dealer.recv_multipart()[1] == b"poison"
            answers += 1
        assert answers == 24
    grown = peak_rss_mb(worker.pid) - before
    assert grown < 120, f"the worker took {grown:.0f} MB more"
    backend = ZMQBackend(endpoint, timeout=5)
    try:
        backend.send([produced("after")])  # a well-behaved producer is served
    finally:
        backend.close()
    assert worker.stop() == 0
    assert '"stored": 1' in worker.log() and '"poison": 24' in worker.log()


def test_a_batch_over_the_bound_is_sent_in_parts_each_under_it(endpoint: str) -> None:
    running = RunningWorker(endpoint, MemoryBackend(), max_message_bytes=4096)
    backend = ZMQBackend(endpoint, timeout=5, max_message_bytes=4096)
    try:
        batch = [produced(f"m{n:03}") for n in range(200)]  # about 17 KB as one message
        backend.send(batch)
        stored = running.backend.metrics
        assert [m.name for m in stored] == [m.name for m in batch]
        assert len({m.id for m in stored}) == 200
        assert running.handler.stats.messages == 5  # each part under 4096 bytes
    finally:
        backend.close()
        running.close()


def test_a_metric_that_could_not_travel_alone_fails_alone_counted_and_named(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    running = RunningWorker(endpoint, MemoryBackend(), max_message_bytes=4096)
    metrics = Metrics(ZMQBackend(endpoint, timeout=5, max_message_bytes=4096))
    try:
        with caplog.at_level(logging.WARNING, logger="kaneda"):
            metrics.gauge("before", 1)
            metrics.event("deploy", "x" * 5000)  # the call takes it: checked where encoded
            metrics.gauge("g", 1, tags={"note": "\u00e9" * 3000})  # 2 bytes each in UTF-8
            metrics.event("deploy", "x" * 3000)  # room for it, and for its id
            metrics.gauge("after", 2)
            metrics.flush(10)
        stats = metrics.stats()
        assert (stats.sent, stats.failed, stats.retried) == (3, 2, 0)
        assert "value takes 5,002 bytes" in caplog.text
        assert "(1 more metrics of the batch too)" in caplog.text
        stored = [
            (m.name, len(m.value) if m.kind == "event" else m.value)
            for m in running.backend.metrics
        ]
        assert stored == [("before", 1), ("deploy", 3000), ("after", 2)]
    finally:
        metrics.close(timeout=1)
        running.close()


def test_a_metric_too_large_given_to_send_fails_alone_and_the_rest_is_stored(
    endpoint: str,
) -> None:
    running = RunningWorker(endpoint, MemoryBackend(), max_message_bytes=4096)
    backend = ZMQBackend(endpoint, timeout=5, max_message_bytes=4096)
    big = produced("big")._replace(value="x" * 5000)
    try:
        batch = [produced("a"), big, produced("b")]
        with pytest.raises(DeliveryError, match=r"value takes 5,002 bytes") as caught:
            backend.send(batch)
        assert not caught.value.retryable and caught.value.metrics == [big]
        assert [m.name for m in running.backend.metrics] == ["a", "b"]
    finally:
        backend.close()
        running.close()


def test_a_message_a_worker_drops_is_counted_failed_and_says_why(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker with a lower bound than its producer: libzmq drops the connection, no
    # answer comes, the producer sends it again until its retries end and counts it.
    running = RunningWorker(endpoint, MemoryBackend(), max_message_bytes=4096)
    metrics = Metrics(
        ZMQBackend(endpoint, timeout=0.5),
        flush_interval=0.05,
        retry=RetryPolicy(attempts=2, initial_delay=0.05),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="kaneda"):
            metrics.event("deploy", "x" * 6000)
            assert metrics.flush(10) == 0
        stats = metrics.stats()
        assert (stats.sent, stats.failed, stats.retried) == (0, 1, 1)
        assert "to a message of 6," in caplog.text and "max_message_bytes" in caplog.text
        assert running.handler.stats.messages == 0
        metrics.gauge("small", 1)  # the worker, and the producer, go on
        assert metrics.flush(10) == 0
        assert [m.name for m in running.backend.metrics] == ["small"]
    finally:
        metrics.close(timeout=1)
        running.close()


def test_the_bound_is_an_option_of_the_producer_and_of_the_worker() -> None:
    backend = connect("zmq+tcp://127.0.0.1:5599?max_message_bytes=65536", batching=False).backend
    assert backend.max_message_bytes == 65536  # type: ignore[attr-defined]
    assert ZMQBackend().max_message_bytes == 16 * 2**20
    with pytest.raises(ConfigurationError, match=r"max_message_bytes must be .* at least 1024"):
        ZMQBackend(max_message_bytes=100)
    handler = MessageHandler(Metrics(MemoryBackend()))
    try:
        for value in ("100", "lots", "-5"):
            with pytest.raises(ConfigurationError, match="max_message_bytes must be"):
                ZMQBackend.serve(f"zmq+tcp://127.0.0.1:1?max_message_bytes={value}", handler)
    finally:
        handler.close()
