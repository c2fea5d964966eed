"""A store down long enough to fill the buffer, then back: the drops are said while they
happen, and the backlog goes in as soon as the store answers again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest

from kaneda_core import Backend, DeliveryError, Metric, Metrics, RetryPolicy
from kaneda_core.hookspecs import hookimpl
from kaneda_core.plugins import get_plugin_manager


class Outage(Backend):
    """Down (a transient failure) until ``up`` is set."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.stored: list[Metric] = []

    def send(self, batch: Sequence[Metric]) -> None:
        if not self.up.is_set():
            raise DeliveryError("connection refused", retryable=True)
        self.stored.extend(batch)


class ToldOfDrops:
    def __init__(self) -> None:
        self.dropped = 0

    @hookimpl
    def kaneda_batch_failed(
        self, metrics: Sequence[Metric], error: BaseException, backend: Backend
    ) -> None:
        self.dropped += len(metrics)


def test_a_full_buffer_is_said_during_the_outage_and_emptied_once_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker slept out its backoff (up to 15 s) with the buffer full: the drops were
    logged, and shown to the failure hook, only once the store was back, and calls made
    after it was back were still dropped for seconds (25-30 % of them, against InfluxDB)."""
    hook = ToldOfDrops()
    get_plugin_manager().register(hook)
    backend = Outage()
    # Long waits between retries, as after a minute of outage.
    retry = RetryPolicy(attempts=1000, initial_delay=10, max_delay=10)
    metrics = Metrics(backend, max_buffer=100, batch_size=10, flush_interval=0.05, retry=retry)
    try:
        with caplog.at_level(logging.WARNING, logger="kaneda"):
            for _ in range(300):
                metrics.increment("requests")
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not (hook.dropped and "full" in caplog.text):
                time.sleep(0.05)
        assert not backend.up.is_set()
        assert "the buffer was full" in caplog.text  # said while the store is down
        assert hook.dropped > 0 and metrics.stats().dropped > 0
        backend.up.set()
        started = time.monotonic()
        assert metrics.flush(timeout=10) == 0
        assert time.monotonic() - started < 3  # not the rest of a 10 s backoff
        stats = metrics.stats()
        assert len(backend.stored) == stats.sent == 300 - stats.dropped
    finally:
        metrics.close(timeout=5)
        get_plugin_manager().unregister(hook)
