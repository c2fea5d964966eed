"""``batching=False`` (kaneda 1.0's way): calls that deliver in the caller's thread, with
hooks and backends that report through the same Metrics, deadlines, signal handlers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from kaneda_core import Backend, DeliveryError, Metric, Metrics
from kaneda_core.backends import MemoryBackend
from kaneda_core.hookspecs import hookimpl
from kaneda_core.plugins import get_plugin_manager


class Down(Backend):
    def __init__(self) -> None:
        self.sends = 0

    def send(self, batch: Sequence[Metric]) -> None:
        self.sends += 1
        raise DeliveryError("the store is down", retryable=False)


class CountsLosses:
    """A failure hook that counts what was lost through the Metrics that lost it."""

    def __init__(self) -> None:
        self.metrics: Metrics | None = None

    @hookimpl
    def kaneda_batch_failed(
        self, metrics: Sequence[Metric], error: BaseException, backend: Backend
    ) -> None:
        if self.metrics is not None:
            self.metrics.increment("metrics.lost")


@pytest.fixture
def counts_losses() -> Iterator[CountsLosses]:
    hook = CountsLosses()
    manager = get_plugin_manager()
    manager.register(hook)
    try:
        yield hook
    finally:
        manager.unregister(hook)


def _returns_within(seconds: float, call: object) -> bool:
    done = threading.Event()

    def run() -> None:
        call()  # type: ignore[operator]
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_a_failure_hook_counting_through_the_metrics_does_not_hold_the_call(
    counts_losses: CountsLosses,
) -> None:
    """The hook's own call was delivered by the same loop, failed, called the hook again:
    one increment() never returned (70,000 sends a second)."""
    backend = Down()
    metrics = Metrics(backend, batching=False)
    counts_losses.metrics = metrics
    assert _returns_within(3, lambda: metrics.increment("requests"))
    sends = backend.sends
    time.sleep(0.3)
    assert backend.sends == sends <= 3
    # Each call: its own send, and one for what the hook deferred before (halved, as a
    # refused batch is): a few sends, not more with every call the store is down.
    rounds = []
    for _ in range(2):
        before = backend.sends
        for _ in range(20):
            metrics.increment("requests")
        rounds.append(backend.sends - before)
    assert rounds[0] <= 4 * 20 and rounds[1] <= rounds[0] + 2, rounds
    counts_losses.metrics = None
    metrics.close()


def test_a_backend_reporting_about_itself_does_not_hold_the_call() -> None:
    class SelfReporting(MemoryBackend):
        reporter: Metrics | None = None

        def send(self, batch: Sequence[Metric]) -> None:
            super().send(batch)
            if self.reporter is not None:
                self.reporter.increment("backend.sends")

    backend = SelfReporting()
    metrics = Metrics(backend, batching=False)
    backend.reporter = metrics
    assert _returns_within(3, lambda: metrics.increment("requests"))
    assert len(backend.metrics) <= 3
    metrics.close()


class Slow(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.closed_while_sending = False
        self.sending = False
        self.closes = 0

    def send(self, batch: Sequence[Metric]) -> None:
        self.sending = True
        self.entered.set()
        time.sleep(1.5)
        self.sending = False
        super().send(batch)

    def close(self) -> None:
        self.closed_while_sending |= self.sending
        self.closes += 1


@pytest.mark.parametrize("what", ["flush", "close"])
def test_flush_and_close_keep_their_deadline_while_another_thread_sends(what: str) -> None:
    """close(timeout=0.5) returned after the other thread's 5 s send (three request
    threads waiting on the store: 15 s)."""
    backend = Slow()
    metrics = Metrics(backend, batching=False)
    callers = [threading.Thread(target=metrics.increment, args=("slow",)) for _ in range(2)]
    for caller in callers:
        caller.start()
    assert backend.entered.wait(5)
    started = time.monotonic()
    getattr(metrics, what)(timeout=0.3)
    assert time.monotonic() - started < 1.0
    for caller in callers:
        caller.join(10)
    if what == "close":
        deadline = time.monotonic() + 5
        while backend.closes == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    metrics.close()
    assert backend.closes == 1
    assert not backend.closed_while_sending  # a backend is used by one thread at a time
    assert len(backend.metrics) == 2


def test_a_signal_handler_reporting_while_its_thread_counts_does_not_deadlock() -> None:
    """The main thread inside stats() held the counters' lock; the handler's call waited
    for the delivery lock, which another thread held while it waited for the counters'."""
    code = textwrap.dedent(
        """
        import os, signal, sys, threading, time
        from kaneda_core import Metrics
        from kaneda_core.backends import MemoryBackend

        metrics = Metrics(MemoryBackend(), batching=False)
        signal.signal(signal.SIGALRM, lambda *_: metrics.increment("from.handler"))
        stop = threading.Event()
        def other():
            while not stop.is_set():
                metrics.increment("from.thread")
        threading.Thread(target=other, daemon=True).start()
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        end = time.monotonic() + 4
        while time.monotonic() < end:
            metrics.stats()
        signal.setitimer(signal.ITIMER_REAL, 0)
        stop.set()
        print("done", flush=True)
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process deadlocked")
    assert done.stdout.strip() == "done", done.stderr
