"""Threads that take from the in-memory queue at once: the worker, callers past the bound.

The worker counts a batch and pops it; a caller past ``max_buffer`` pops one item (the
oldest with ``overflow="drop_oldest"``, the newest past the bound). An item taken by a
caller between the worker's count and its last pop ended the batch short: an IndexError
in the worker, and the batch's metrics lost, counted nowhere.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Literal

import pytest

from kaneda_core import Metrics
from kaneda_core import dispatch as dispatch_module
from kaneda_core.backends import MemoryBackend


class RacingQueue(deque[Any]):
    """A queue that lets a caller pass the bound between the worker's count and its pops.

    Armed, a caller's append that passes the bound starts a flush and waits until the
    worker has counted its batch; the worker's first pop then waits (``grace`` seconds
    at most: a caller that rightly waits for the batch to be taken must not hold the
    test up) until the caller has taken the newest item back off the queue.
    """

    armed = False
    counting = False
    grace = 0.3
    counted = threading.Event()
    caller_popped = threading.Event()

    def append(self, item: Any) -> None:
        super().append(item)
        if RacingQueue.armed and not _in_worker():
            RacingQueue.armed = False
            RacingQueue.counting = True
            threading.Thread(target=RacingQueue.flusher, daemon=True).start()
            assert self.counted.wait(5), "the worker never took its batch"

    def popleft(self) -> Any:
        if RacingQueue.counting and _in_worker():
            RacingQueue.counting = False
            self.counted.set()
            self.caller_popped.wait(self.grace)
        return super().popleft()

    def pop(self, *index: int) -> Any:
        item = super().pop(*index)
        if not _in_worker():
            self.caller_popped.set()
        return item

    flusher: Any = None


def _in_worker() -> bool:
    return threading.current_thread().name.startswith("kaneda")


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_a_caller_past_the_bound_never_cuts_the_workers_batch_short(
    monkeypatch: pytest.MonkeyPatch, overflow: Literal["drop_oldest", "drop_newest"]
) -> None:
    monkeypatch.setattr(dispatch_module, "deque", RacingQueue)
    RacingQueue.counted.clear()
    RacingQueue.caller_popped.clear()
    backend = MemoryBackend()
    metrics = Metrics(
        backend, max_buffer=10, batch_size=100, flush_interval=3600, overflow=overflow
    )
    RacingQueue.flusher = lambda: metrics.flush(timeout=5)
    try:
        for _ in range(10):
            metrics.increment("before")
        RacingQueue.armed = True
        metrics.increment("racing")  # the eleventh: one past the bound
        assert metrics.flush(timeout=5) == 0
        stats = metrics.stats()
        assert stats.sent + stats.dropped == 11, stats
        assert len(backend.metrics) == stats.sent
        assert stats.failed == 0
    finally:
        RacingQueue.armed = False
        metrics.close(timeout=5)
