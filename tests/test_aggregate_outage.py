"""Aggregation while the store is down or the buffer is small: intervals stay intervals."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from typing import Any

import pytest

from kaneda_core import Metrics, RetryPolicy
from kaneda_core.backends import MemoryBackend
from kaneda_core.errors import DeliveryError
from kaneda_core.model import Metric

INTERVAL = 0.1


class Outage(MemoryBackend):
    """A store that refuses every batch (a transient failure) while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def send(self, metrics: Sequence[Metric]) -> Any:
        if self.down:
            raise DeliveryError("the store is down", retryable=True)
        return super().send(metrics)


def _report(metrics: Metrics, seconds: float) -> int:
    calls = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        metrics.increment("hits")
        calls += 1
        time.sleep(0.002)
    return calls


@pytest.mark.parametrize("disk", [False, True], ids=["memory", "buffer_path"])
def test_an_outage_keeps_one_point_per_interval_stamped_with_its_end(
    disk: bool, tmp_path: Any
) -> None:
    backend = Outage()
    options: dict[str, Any] = {"buffer_path": os.fspath(tmp_path / "k.db")} if disk else {}
    # One batch retried for the whole outage (a backoff longer than the outage).
    retry = RetryPolicy(attempts=5, initial_delay=1.0, jitter=0.0)
    metrics = Metrics(backend, aggregate=True, flush_interval=INTERVAL, retry=retry, **options)
    calls = _report(metrics, 0.3)
    backend.down = True
    down = time.time_ns()
    calls += _report(metrics, 0.8)
    up = time.time_ns()
    backend.down = False
    calls += _report(metrics, 0.3)
    assert metrics.flush(10) == 0
    stats = metrics.stats()
    metrics.close()
    stored = sorted(backend.metrics, key=lambda m: m.epoch_ns)
    assert sum(m.value for m in stored) == calls and stats.failed == stats.dropped == 0
    # Before: every call of the outage was one point, stamped after the store was back.
    inside = [m for m in stored if down < m.epoch_ns < up]
    assert len(inside) >= 5, [(m.epoch_ns, m.value) for m in stored]
    assert max(m.value for m in stored) < calls / 4
    times = [m.epoch_ns for m in stored]
    assert max(b - a for a, b in itertools.pairwise(times)) < 4 * INTERVAL * 1e9


def test_an_outage_past_the_retry_budget_loses_only_what_fails_or_overflows_counted() -> None:
    backend = Outage()
    retry = RetryPolicy(attempts=2, initial_delay=0.3, jitter=0.0)
    metrics = Metrics(
        backend, aggregate=True, flush_interval=INTERVAL, retry=retry, max_buffer=3, batch_size=2
    )
    calls = _report(metrics, 0.2)
    backend.down = True
    calls += _report(metrics, 1.0)
    backend.down = False
    calls += _report(metrics, 0.2)
    assert metrics.flush(10) == 0
    stats = metrics.stats()
    metrics.close()
    # Every point is stored, failed after its retries, or dropped by the full buffer
    # (drop_oldest), and counted; no point folds more than an interval of calls.
    assert stats.sent == len(backend.metrics) and stats.folded == calls
    assert stats.failed > 0 and stats.dropped > 0 and stats.queued == 0
    assert max(m.value for m in backend.metrics) < calls / 4
    # The calls those points carried: each call is stored, or counted lost.
    assert sum(m.value for m in backend.metrics) + stats.folded_lost == calls


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest", "block"])
@pytest.mark.parametrize(("max_buffer", "batch_size"), [(10, 1000), (100, 100), (7, 3)])
def test_an_interval_of_more_series_than_max_buffer_is_delivered_whole(
    overflow: Any, max_buffer: int, batch_size: int
) -> None:
    backend = MemoryBackend()
    metrics = Metrics(
        backend,
        aggregate=True,
        flush_interval=3600,
        max_buffer=max_buffer,
        batch_size=batch_size,
        overflow=overflow,
        block_timeout=1.0,
    )
    for i in range(300):
        metrics.increment(f"s{i}")
    started = time.monotonic()
    assert metrics.flush(30) == 0
    took = time.monotonic() - started
    stats = metrics.stats()
    metrics.close()
    # Before: 10 of 300 stored where max_buffer < batch_size (drop_*), and with "block"
    # the worker waited block_timeout for each point on its own queue.
    assert len(backend.metrics) == stats.sent == 300 and stats.dropped == 0
    assert took < 5


def test_the_worker_never_waits_on_its_own_full_queue_while_the_store_is_down() -> None:
    backend = Outage()
    retry = RetryPolicy(attempts=3, initial_delay=0.5, jitter=0.0)
    metrics = Metrics(
        backend,
        aggregate=True,
        flush_interval=INTERVAL,
        retry=retry,
        max_buffer=3,
        batch_size=2,
        overflow="block",
        block_timeout=2.0,
    )
    backend.down = True
    metrics.increment("first")
    time.sleep(0.2)  # its point is sent, refused, and waits for a retry
    for i in range(20):
        metrics.increment(f"s{i}")
    time.sleep(0.8)
    backend.down = False
    started = time.monotonic()
    assert metrics.flush(30) == 0
    took = time.monotonic() - started
    stats = metrics.stats()
    metrics.close()
    # The interval's 20 points met a queue of 3 behind a batch being retried: those
    # with no room are dropped and counted, none waited block_timeout for the worker.
    assert took < 2 and stats.dropped > 0
    assert stats.sent + stats.failed + stats.dropped == 21 == len(backend.metrics) + stats.dropped


class Refusing(MemoryBackend):
    """A store that refuses for good every point named "refused" (a type conflict, say)."""

    def send(self, metrics: Sequence[Metric]) -> Any:
        refused = [m for m in metrics if m.name == "refused"]
        if refused:
            kept = [m for m in metrics if m.name != "refused"]
            super().send(kept)
            raise DeliveryError("field type conflict", retryable=False, metrics=refused)
        return super().send(metrics)


@pytest.mark.parametrize("disk", [False, True], ids=["memory", "buffer_path"])
def test_a_refused_point_counts_the_calls_it_carried_as_lost(disk: bool, tmp_path: Any) -> None:
    backend = Refusing()
    options: dict[str, Any] = {"buffer_path": os.fspath(tmp_path / "k.db")} if disk else {}
    with Metrics(backend, aggregate=True, flush_interval=60, **options) as metrics:
        for i in range(100):
            metrics.timing("refused", i)
        for _ in range(50):
            metrics.increment("refused", tags={"a": "1"})
        metrics.decrement("refused", tags={"a": "1"})
        for i in range(7):
            metrics.gauge("refused", i, tags={"b": "2"})
        for _ in range(5):
            metrics.increment("kept")
        assert metrics.flush(10) == 0
        stats = metrics.stats()
    # Before: one failed point each, and no count of the 158 calls folded into them.
    assert (stats.failed, stats.sent, stats.folded) == (3, 1, 163)
    assert stats.folded_lost == 158
