"""overflow="drop_oldest" with the disk buffer never drops a row the worker is sending.

The worker's take() leaves its batch in the file until the backend has it (ack). A full
buffer drops the oldest row that is not in that batch; when every row is in it, the new
metric is dropped instead. A metric is either sent or dropped, never both.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kaneda_core import Metrics
from kaneda_core.backends import MemoryBackend
from kaneda_core.disk_buffer import DiskBuffer
from kaneda_core.model import Metric


class Blocking(MemoryBackend):
    """Stores batches; the first one only after :attr:`release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.first: list[Metric] = []

    def send(self, batch: Sequence[Metric]) -> None:
        if not self.entered.is_set():
            self.first = list(batch)
            self.entered.set()
            assert self.release.wait(10), "the test never released the backend"
        super().send(batch)


def values(metrics: Sequence[object]) -> list[float]:
    return sorted(metric.value for metric in metrics)  # type: ignore[attr-defined]


def hooked(failures: Any) -> list[float]:
    return values([metric for batch, _ in failures.failures for metric in batch])


def overflow_while_sending(
    path: Path, *, max_buffer: int, batch_size: int, calls: int
) -> tuple[Blocking, Metrics]:
    """``batch_size`` metrics taken by the worker and held in its send while the
    remaining calls overflow the buffer; then released, flushed and closed."""
    backend = Blocking()
    metrics = Metrics(
        backend,
        buffer_path=str(path),
        max_buffer=max_buffer,
        batch_size=batch_size,
        overflow="drop_oldest",
        flush_interval=60,  # the worker wakes only when a batch fills
    )
    try:
        for i in range(batch_size):
            metrics.gauge("g", i)
        assert backend.entered.wait(10), "the worker never sent the first batch"
        for i in range(batch_size, calls):
            metrics.gauge("g", i)
    finally:
        backend.release.set()
        metrics.flush(10)
        metrics.close(10)
    return backend, metrics


def test_drop_oldest_skips_the_rows_being_sent(tmp_path: Path, failures: Any) -> None:
    backend, metrics = overflow_while_sending(
        tmp_path / "buffer.sqlite", max_buffer=10, batch_size=5, calls=15
    )
    assert values(backend.first) == [0, 1, 2, 3, 4]
    stats = metrics.stats()
    stored = values(backend.metrics)
    # 0-4 in flight, 5-9 queued behind them; 10-14 each dropped the oldest queued.
    assert stored == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    assert hooked(failures) == [5, 6, 7, 8, 9]
    assert (stats.sent, stats.dropped, stats.failed, stats.queued) == (10, 5, 0, 0)


def test_every_row_being_sent_drops_the_new_metric(tmp_path: Path, failures: Any) -> None:
    backend, metrics = overflow_while_sending(
        tmp_path / "buffer.sqlite", max_buffer=5, batch_size=5, calls=8
    )
    stats = metrics.stats()
    assert values(backend.metrics) == [0, 1, 2, 3, 4]
    assert hooked(failures) == [5, 6, 7]
    assert (stats.sent, stats.dropped, stats.failed, stats.queued) == (5, 3, 0, 0)


def item(i: int) -> tuple[Any, ...]:
    return ("g", "gauge", i, {}, None, "host", None, 1_700_000_000_000_000_000 + i)


def test_the_buffer_drops_past_the_batch_and_frees_it_when_acked(tmp_path: Path) -> None:
    buffer = DiskBuffer(str(tmp_path / "buffer.sqlite"))
    try:
        for i in range(6):
            buffer.append(item(i))
        batch = buffer.take(3)
        assert [entry[2] for _, entry in batch] == [0, 1, 2]
        dropped = buffer.drop_oldest()
        assert dropped is not None and dropped[2] == 3  # not 0: the worker is sending it
        assert buffer.queued() == 5
        # Rows 0 and 2 delivered, 1 kept (the backend refused it for now): the batch is
        # over, and the row kept waits in the file, no longer in flight.
        buffer.ack([batch[0][0], batch[2][0]])  # type: ignore[list-item]
        dropped = buffer.drop_oldest()
        assert dropped is not None and dropped[2] == 1
        assert [entry[2] for _, entry in buffer.take(10)] == [4, 5]
    finally:
        buffer.close()


def test_the_buffer_has_nothing_to_drop_while_every_row_is_sent(tmp_path: Path) -> None:
    buffer = DiskBuffer(str(tmp_path / "buffer.sqlite"))
    try:
        for i in range(3):
            buffer.append(item(i))
        assert len(buffer.take(5)) == 3
        assert buffer.drop_oldest() is None  # the caller drops the new metric instead
        buffer.append(item(3))
        dropped = buffer.drop_oldest()
        assert dropped is not None and dropped[2] == 3
        buffer.ack([])  # nothing delivered: all three kept
        dropped = buffer.drop_oldest()
        assert dropped is not None and dropped[2] == 0
        assert [entry[2] for _, entry in buffer.take(5)] == [1, 2]
    finally:
        buffer.close()


def test_threads_overflowing_a_slow_backend_count_each_metric_once(
    tmp_path: Path, failures: Any
) -> None:
    class Slow(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            threading.Event().wait(0.002)
            super().send(batch)

    backend = Slow()
    metrics = Metrics(
        backend,
        buffer_path=str(tmp_path / "buffer.sqlite"),
        max_buffer=300,
        batch_size=100,
        overflow="drop_oldest",
        flush_interval=0.01,
    )
    threads, per_thread = 8, 500

    def report(t: int) -> None:
        for i in range(per_thread):
            metrics.gauge(f"t{t}", i)

    workers = [threading.Thread(target=report, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    metrics.flush(20)
    metrics.close(20)
    stats = metrics.stats()
    stored = [(m.name, m.value) for m in backend.metrics]
    dropped = [(m.name, m.value) for batch, _ in failures.failures for m in batch]
    assert len(stored) == len(set(stored)) == stats.sent
    assert not set(stored) & set(dropped)
    assert stats.sent + stats.dropped + stats.failed == threads * per_thread
    assert stats.queued == 0
