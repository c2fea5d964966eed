"""Threads that take from the in-memory queue at once: the worker, callers past the bound.

The worker counts a batch and pops it; a caller past ``max_buffer`` pops one item (the
oldest with ``overflow="drop_oldest"``, the newest past the bound). An item taken by a
caller between the worker's count and its last pop ended the batch short: an IndexError
in the worker, and the batch's metrics lost, counted nowhere.
"""

from __future__ import annotations

import sys
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


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_the_byte_bound_counts_what_is_queued_however_threads_interleave(
    overflow: Literal["drop_oldest", "drop_newest"],
) -> None:
    """max_buffer_bytes: calling threads and the worker changed the byte count unlocked;
    updates were lost, and the count drifted (either way: 300,000 bytes counted for an
    empty queue refused every later call; below zero, the bound was gone)."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads switch often: interleavings that production sees
    backend = MemoryBackend()
    metrics = Metrics(
        backend, max_buffer_bytes=100_000, batch_size=100, flush_interval=0.01, overflow=overflow
    )
    try:

        def report() -> None:
            for _ in range(4000):
                metrics.increment("requests", tags={"route": "/"})

        callers = [threading.Thread(target=report) for _ in range(8)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(60)
    finally:
        sys.setswitchinterval(switch)
    assert metrics.flush(timeout=10) == 0
    stats = metrics.stats()
    assert stats.sent + stats.dropped == 8 * 4000
    assert stats.dropped > 0  # the bound was reached: the overflow paths ran
    assert metrics._dispatcher._bytes == [0]  # type: ignore[union-attr]
    sent = stats.sent
    for _ in range(50):
        metrics.increment("requests", tags={"route": "/"})
    assert metrics.flush(timeout=5) == 0
    assert metrics.stats().sent == sent + 50
    metrics.close()
