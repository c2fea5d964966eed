"""Aggregation under the loads of a long-running service: slow and failing backends,
many series, close() at any moment."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from kaneda_core import ConfigurationError, Metric, Metrics
from kaneda_core.backends import MemoryBackend


class Held(MemoryBackend):
    """Holds its first send until ``release`` is set (a slow request)."""

    def __init__(self) -> None:
        super().__init__()
        self.sending = threading.Event()
        self.release = threading.Event()

    def send(self, batch: Sequence[Metric]) -> None:
        self.sending.set()
        self.release.wait(20)
        super().send(batch)


def total(backend: MemoryBackend, name: str) -> int:
    return sum(int(m.value) for m in backend.metrics if m.name == name)


def test_calls_made_while_a_send_is_slow_are_delivered_by_close() -> None:
    backend = Held()
    metrics = Metrics(backend, aggregate=True, flush_interval=60)
    for _ in range(100):
        metrics.increment("hits")
    metrics.flush(0)  # the worker folds, emits and sends the first point: held
    assert backend.sending.wait(5)
    for _ in range(50):
        metrics.increment("hits")  # before close(), while the worker is in its send
    closing = threading.Thread(target=metrics.close, args=(10,))
    closing.start()
    while not metrics._dispatcher._closed:  # type: ignore[union-attr]
        time.sleep(0.001)
    backend.release.set()
    closing.join(15)
    assert total(backend, "hits") == 150
    assert metrics.stats().dropped == 0 and metrics.stats().failed == 0


def test_flush_waits_for_the_points_of_many_series() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, aggregate=True, flush_interval=60)
    for index in range(30_000):
        metrics.increment("requests", tags={"user": str(index)})
    assert metrics.flush(30) == 0
    assert len(backend.metrics) == 30_000  # delivered when flush() returned, not after
    metrics.close(5)


def test_more_series_than_the_queue_holds_are_all_delivered() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, aggregate=True, flush_interval=60, max_buffer=1000)
    for index in range(5000):
        metrics.gauge("load", index, tags={"host": f"h{index}"})
    metrics.close(30)
    assert len(backend.metrics) == 5000
    assert metrics.stats().dropped == 0


def test_calls_waiting_to_be_folded_are_bounded_while_the_worker_is_held() -> None:
    backend = Held()
    metrics = Metrics(backend, aggregate=True, flush_interval=60, max_buffer=1000)
    metrics.increment("hits")
    metrics.flush(0)
    assert backend.sending.wait(5)  # the worker is held in its send: it folds nothing
    for _ in range(100_000):
        metrics.increment("hits")
    aggregator = metrics._dispatcher.aggregator  # type: ignore[union-attr]
    waiting, dropped = aggregator.pending(), metrics.stats().dropped
    backend.release.set()
    metrics.close(10)
    assert waiting <= 40_001, waiting  # ten times max_buffer, or two folds' worth
    assert dropped == 100_000 - waiting  # every call past the bound counted
    assert total(backend, "hits") == 1 + waiting


def test_percentiles_of_one_series_reported_with_its_tags_in_two_orders() -> None:
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        for _ in range(2000):
            metrics.timing("q", 0.01, tags={"route": "/a", "method": "GET"})
        for _ in range(2000):
            metrics.timing("q", 1.0, tags={"method": "GET", "route": "/a"})
    (point,) = backend.metrics
    assert point.value["count"] == 4000
    assert point.value["p90"] == point.value["p99"] == 1.0  # both halves' values kept


@pytest.mark.parametrize("option", ["flush_interval", "exit_timeout", "block_timeout"])
def test_waits_longer_than_a_day_are_refused(option: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{option} must be .* at most 86,400"):
        Metrics(MemoryBackend(), **{option: 1e10})


def test_percentiles_that_would_share_a_label_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="both be stored as 'p33_3333'"):
        Metrics(MemoryBackend(), aggregate=True, percentiles=(33.3333333, 33.33333331))


def test_a_worker_failing_for_ever_keeps_its_pause_a_number(monkeypatch: Any) -> None:
    # 2 ** 1024 is too large for a float: the pause after the 1024th failure in a row
    # raised OverflowError, and the worker died.
    metrics = Metrics(MemoryBackend(), flush_interval=60)
    dispatcher = metrics._dispatcher
    rounds = {"n": 0}

    def failing() -> bool:
        rounds["n"] += 1
        if rounds["n"] > 1100:
            return True
        raise RuntimeError("round failed")

    monkeypatch.setattr(dispatcher, "_iteration", failing)
    monkeypatch.setattr(dispatcher._stop, "wait", lambda timeout=None: False)
    monkeypatch.setattr("kaneda_core.dispatch.log.error", lambda *a, **k: None)
    dispatcher._rounds()  # type: ignore[union-attr]
    assert rounds["n"] == 1101
    metrics.close(1)


class SlowSends(MemoryBackend):
    def send(self, batch: Sequence[Metric]) -> None:
        time.sleep(0.002)
        super().send(batch)


def test_flush_waits_for_every_call_made_before_it_while_others_flush_too() -> None:
    """The worker cleared the emit a flush() had asked for once it finished the emit it
    was in: a flush() that asked meanwhile returned with calls folded but not emitted
    (3 trials in 58 returned 1, with 300 of 24,000 calls undelivered)."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        ended = time.monotonic() + 6
        trials = 0
        while time.monotonic() < ended and trials < 80:
            trials += 1
            backend = SlowSends()
            metrics = Metrics(backend, aggregate=True, flush_interval=0.02)
            stop = threading.Event()

            def report(metrics: Metrics) -> None:
                for _ in range(1000):
                    metrics.increment("requests")

            def flush(metrics: Metrics, stop: threading.Event) -> None:
                while not stop.is_set():
                    metrics.flush(timeout=1)

            callers = [threading.Thread(target=report, args=(metrics,)) for _ in range(4)]
            flushers = [threading.Thread(target=flush, args=(metrics, stop)) for _ in range(2)]
            for thread in callers + flushers:
                thread.start()
            for thread in callers:
                thread.join(30)
            left = metrics.flush()
            delivered = total(backend, "requests")
            stop.set()
            for thread in flushers:
                thread.join(30)
            metrics.close()
            assert (left, delivered) == (0, 4000), f"trial {trials}"
    finally:
        sys.setswitchinterval(switch)
