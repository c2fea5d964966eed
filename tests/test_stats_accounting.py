"""stats() accounts for every call once, while the worker is in the middle of a batch.

Each metric a call queued is in one place at any instant: queued (waiting or in a send),
sent, failed, dropped or filtered. A batch the worker holds must leave ``queued`` as its
metrics are counted elsewhere, not when the worker is done with the whole batch: a
failure hook that takes its time, or a part of the batch waiting for a retry, would
otherwise have them counted twice for as long. (With a disk buffer, a row counts as queued
until the worker acknowledges its batch: the file holds it until then.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kaneda_core import DeliveryError, Metrics, RetryPolicy
from kaneda_core.backends import MemoryBackend
from kaneda_core.hookspecs import hookimpl
from kaneda_core.model import Metric
from kaneda_core.plugins import get_plugin_manager


def accounted(metrics: Metrics) -> int:
    stats = metrics.stats()
    return stats.queued + stats.sent + stats.failed + stats.dropped + stats.filtered


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class SlowHook:
    """A failure hook that holds the worker until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    @hookimpl
    def kaneda_batch_failed(self, metrics: list[Metric], error: BaseException) -> None:
        self.entered.set()
        self.release.wait(10)


@pytest.fixture
def slow_hook() -> Iterator[SlowHook]:
    hook = SlowHook()
    manager = get_plugin_manager()
    manager.register(hook)
    yield hook
    hook.release.set()
    manager.unregister(hook)


class Refusing(MemoryBackend):
    """Refuses every metric named ``bad`` for good, stores the others."""

    def send(self, batch: Sequence[Metric]) -> None:
        bad = [m for m in batch if m.name == "bad"]
        if bad:
            super().send([m for m in batch if m.name != "bad"])
            raise DeliveryError("refused", retryable=False, metrics=bad)
        super().send(batch)


def test_metrics_told_to_a_slow_failure_hook_are_counted_once(slow_hook: SlowHook) -> None:
    metrics = Metrics(Refusing(), batch_size=100)
    for i in range(10):
        metrics.gauge("good", i)
    metrics.gauge("bad", 1)
    metrics.flush(0)
    assert slow_hook.entered.wait(10)
    try:
        stats = metrics.stats()
        assert (stats.sent, stats.failed) == (10, 1)
        assert accounted(metrics) == 11, metrics.stats()
    finally:
        slow_hook.release.set()
    metrics.close(10)
    assert accounted(metrics) == 11


class StoresAllButOneUntilReleased(MemoryBackend):
    """Stores every metric but ``late``, which fails for a transient reason until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.refused = threading.Event()

    def send(self, batch: Sequence[Metric]) -> None:
        late = [m for m in batch if m.name == "late"]
        if late and not self.release.is_set():
            super().send([m for m in batch if m.name != "late"])
            self.refused.set()
            raise DeliveryError("busy", retryable=True, metrics=late)
        super().send(batch)


def test_the_stored_part_of_a_batch_waiting_for_a_retry_is_not_queued_too() -> None:
    backend = StoresAllButOneUntilReleased()
    retry = RetryPolicy(attempts=5, initial_delay=0.5, max_delay=0.5, jitter=0)
    metrics = Metrics(backend, batch_size=100, retry=retry)
    for i in range(10):
        metrics.gauge("on.time", i)
    metrics.gauge("late", 1)
    metrics.flush(0)
    assert backend.refused.wait(10)
    wait_for(lambda: metrics.stats().sent == 10)
    stats = metrics.stats()
    assert stats.queued == 1, stats  # the part waiting for its retry
    assert accounted(metrics) == 11
    backend.release.set()
    assert metrics.close(10) == 0
    assert (metrics.stats().sent, accounted(metrics)) == (11, 11)


def test_a_reader_never_sees_a_metric_twice_or_not_at_all_while_batches_go_out() -> None:
    # No calls meanwhile: every snapshot accounts for exactly what was called.
    class Slow(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            time.sleep(0.0005)
            super().send(batch)

    metrics = Metrics(Slow(), batch_size=7, flush_interval=3600)
    calls = 5000
    for i in range(calls):
        metrics.gauge("g", i)
    metrics.flush(0)
    seen = set()
    while metrics.stats().sent < calls:
        seen.add(accounted(metrics))
    assert seen <= {calls}, sorted(seen)
    metrics.close(10)


def test_with_a_disk_buffer_locked_by_another_process_nothing_is_counted_below_zero(
    tmp_path: Path,
) -> None:
    # The worker's acknowledgement waits (up to 5 s) for another process's lock on the
    # file: the rows it sent are counted sent, and still in the file, meanwhile.
    import sqlite3

    path = tmp_path / "buffer.sqlite"
    metrics = Metrics(MemoryBackend(), buffer_path=path, batch_size=1000, flush_interval=3600)
    for i in range(100):
        metrics.gauge("g", i)
    other = sqlite3.connect(path, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    try:
        metrics.flush(0)
        seen = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            stats = metrics.stats()
            seen.add((stats.queued >= 0, accounted(metrics) >= 100))
            time.sleep(0.001)
    finally:
        other.rollback()
        other.close()
    assert seen == {(True, True)}, seen
    metrics.close(10)
    assert metrics.stats().sent == 100 and accounted(metrics) == 100
