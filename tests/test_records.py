"""Backends whose send takes the calls' records (``Backend.sends_records``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from kaneda_core import Backend, DeliveryError, Metric, Metrics, RetryPolicy
from kaneda_core.backend import sends_records
from kaneda_core.backends import MemoryBackend
from kaneda_core.hookspecs import hookimpl
from kaneda_core.testing import filters_set_aside

FAST_RETRY = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02)


@pytest.fixture(autouse=True)
def no_installed_filters() -> Iterator[None]:
    """An installed filter (the example plugin's) would make every batch Metrics."""
    with filters_set_aside():
        yield


class RecordStore(Backend):
    """Keeps what send is given, as given; refuses values listed in ``refuse``, and is down
    (a retryable error) while ``down`` is set."""

    sends_records = True

    def __init__(self) -> None:
        self.given: list[Any] = []
        self.refuse: set[Any] = set()
        self.down = False

    def send(self, batch: Sequence[Metric]) -> None:
        if self.down:
            raise ConnectionRefusedError("down")
        bad = [metric for metric in batch if metric[2] in self.refuse]
        if bad:
            self.given.extend(metric for metric in batch if metric[2] not in self.refuse)
            raise DeliveryError("refused", retryable=False, metrics=bad)
        self.given.extend(batch)


def test_only_the_class_whose_send_it_is_says_it_takes_records() -> None:
    class Inherits(RecordStore):
        pass

    class OwnSend(RecordStore):
        def send(self, batch: Sequence[Metric]) -> None:
            self.given.extend(metric.name for metric in batch)  # reads names: needs Metrics

    class OwnSendTakingRecords(OwnSend):
        sends_records = True

    assert sends_records(RecordStore())
    assert sends_records(Inherits())
    assert not sends_records(OwnSend())
    assert sends_records(OwnSendTakingRecords())
    assert not sends_records(MemoryBackend())
    told = MemoryBackend()
    told.sends_records = True  # an instance may say so of itself
    assert sends_records(told)


def test_send_is_given_the_queued_records_and_the_failure_hook_metrics(failures: Any) -> None:
    store = RecordStore()
    store.refuse = {2}
    metrics = Metrics(store, retry=FAST_RETRY)
    for value in range(4):
        metrics.gauge("g", value, tags={"a": "b"})
    assert metrics.flush(10) == 0
    assert [type(record) for record in store.given] == [tuple] * 3
    assert [record[2] for record in store.given] == [0, 1, 3]
    [(lost, error)] = failures.failures
    assert [type(metric) for metric in lost] == [Metric]
    assert (lost[0].name, lost[0].value, lost[0].tags) == ("g", 2, {"a": "b"})
    assert isinstance(error, DeliveryError)
    stats = metrics.stats()
    assert (stats.sent, stats.failed) == (3, 1)
    metrics.close()


def test_a_filter_sees_metrics_and_send_then_gets_metrics(plugin: Any) -> None:
    class DropOdd:
        @hookimpl
        def kaneda_filter_metric(self, metric: Metric) -> bool:
            return metric.value % 2 == 0

    plugin.register(DropOdd())
    store = RecordStore()
    metrics = Metrics(store)
    for value in range(4):
        metrics.gauge("g", value)
    assert metrics.flush(10) == 0
    assert [(type(m), m.value) for m in store.given] == [(Metric, 0), (Metric, 2)]
    metrics.close()


def test_records_kept_for_a_backend_that_is_down_are_delivered_once(tmp_path: Path) -> None:
    """The disk buffer keeps what a down backend could not take, by position in the batch
    it handed over: records, not Metrics, come back from the failure."""
    store = RecordStore()
    store.down = True
    metrics = Metrics(
        store, buffer_path=str(tmp_path / "buffer.sqlite"), retry=FAST_RETRY, flush_interval=0.05
    )
    for value in range(50):
        metrics.increment("c", tags={"n": str(value)})
    metrics.flush(1)
    assert store.given == []
    store.down = False
    assert metrics.flush(10) == 0
    assert sorted(record[3]["n"] for record in store.given) == sorted(str(v) for v in range(50))
    stats = metrics.stats()
    assert (stats.sent, stats.failed) == (50, 0)
    metrics.close()
