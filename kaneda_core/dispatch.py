"""How a reporting call reaches the backend: in the caller's thread, or batched.

The batching dispatcher keeps a bounded queue that reporting calls append to without
taking a lock (in memory), or a SQLite file (with ``buffer_path``), and one background
worker that delivers it in batches: when a batch fills, every ``flush_interval``
seconds, on ``flush()``, on ``close()`` and at interpreter exit. It is fork-safe: a
child process starts with an empty queue and its own worker, and the parent's queue is
delivered by the parent alone.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from .delivery import BufferFull, Delivery, Item, log

if TYPE_CHECKING:
    from .disk_buffer import DiskBuffer

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "block")

Submit = Callable[[Item], None]

#: How many items of each batch the worker measures to estimate the buffer's bytes.
_SIZE_SAMPLE = 8


class SyncDispatcher:
    """Delivers each metric in the caller's thread, one attempt, before the call returns."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.submit: Submit = self._submit

    def _submit(self, item: Item) -> None:
        self.delivery.deliver((item,), retry=False)

    def queued(self) -> int:
        """Metrics waiting for delivery: none, everything is delivered at the call."""
        return 0

    def flush(self, timeout: float | None = None) -> int:
        """Nothing to flush; returns 0."""
        return 0

    def close(self, timeout: float | None = None) -> int:
        """Close the backend; returns 0."""
        self.delivery.backend.close()
        return 0


class BatchingDispatcher:
    """A bounded queue drained in batches by a background worker thread."""

    def __init__(
        self,
        delivery: Delivery,
        *,
        batch_size: int,
        flush_interval: float,
        max_buffer: int,
        max_buffer_bytes: int | None,
        overflow: Overflow,
        block_timeout: float,
        exit_timeout: float,
        disk: DiskBuffer | None = None,
    ) -> None:
        self.delivery = delivery
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.exit_timeout = exit_timeout
        self.disk = disk
        self.queue: deque[Item] = deque()
        # The count bound in effect: max_buffer, lowered when max_buffer_bytes says so.
        # A one-item list so the submit closure sees the worker's updates.
        self._limit = [max_buffer]
        self._item_bytes = 0.0
        self._dropped: list[Item] = []
        self._closed = False
        self._init_threading()
        self.submit: Submit = self._make_disk_submit() if disk else self._make_submit()
        _track(self)

    def _init_threading(self) -> None:
        # Called again in a forked child: locks held by the parent's threads at the
        # moment of the fork would never be released there.
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._state = threading.Condition()
        self._busy = False
        self._inflight = 0
        self._settled = True
        self._worker = threading.Thread(target=self._run, name="kaneda-worker", daemon=True)
        self._worker.start()

    # -- the calling side ------------------------------------------------------------

    def _make_submit(self) -> Submit:
        queue = self.queue
        append = queue.append
        batch_size = self.batch_size
        limit = self._limit
        wake = self._wake_worker
        overflow = self._overflow

        def submit(item: Item) -> None:
            size = len(queue)
            if size >= limit[0]:
                overflow(item)
                return
            append(item)
            if size + 1 == batch_size:
                wake()

        return submit

    def _make_disk_submit(self) -> Submit:
        disk = self.disk
        assert disk is not None
        append = disk.append
        batch_size = self.batch_size
        limit = self._limit
        wake = self._wake_worker
        overflow = self._overflow

        def submit(item: Item) -> None:
            if disk.pending >= limit[0]:
                overflow(item)
                return
            if append(item) == batch_size:
                wake()

        return submit

    def _wake_worker(self) -> None:
        self._wake.set()

    def _overflow(self, item: Item) -> None:
        if self._closed:
            self._record_drop(item)
            return
        if self.overflow == "block":
            deadline = time.monotonic() + self.block_timeout
            self._wake.set()
            while self._full() and time.monotonic() < deadline:
                time.sleep(0.001)
            if not self._full():
                self.submit(item)
                return
            self._record_drop(item)
        elif self.overflow == "drop_oldest":
            oldest = self._pop_oldest()
            if oldest is not None:
                self._record_drop(oldest)
            self._force_append(item)
        else:
            self._record_drop(item)

    def _full(self) -> bool:
        return self.queued_now() >= self._limit[0]

    def _pop_oldest(self) -> Item | None:
        if self.disk is not None:
            return self.disk.drop_oldest()
        try:
            return self.queue.popleft()
        except IndexError:  # the worker emptied it meanwhile
            return None

    def _force_append(self, item: Item) -> None:
        if self.disk is not None:
            self.disk.append(item)
        else:
            self.queue.append(item)

    def _record_drop(self, item: Item) -> None:
        # Counted now; reported to the failure hook by the worker, off the caller's path.
        self.delivery.count(dropped=1)
        with self._state:
            # Bounded too: past this many, drops are counted but not passed to the hook.
            if len(self._dropped) < self.max_buffer:
                self._dropped.append(item)
        if not self._wake.is_set():
            self._wake.set()

    # -- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self._report_drops()
            settled = self._drain_disk() if self.disk is not None else self._drain()
            self._settled = settled
            if self._closed and (self._stop.is_set() or not settled or not self.queued_now()):
                self._report_drops()
                with self._state:
                    self._busy = False
                    self._state.notify_all()
                return

    def _drain(self) -> bool:
        queue = self.queue
        popleft = queue.popleft
        while True:
            with self._state:
                if not queue:
                    self._busy = False
                    self._inflight = 0
                    self._state.notify_all()
                    return True
                self._busy = True
                batch = [popleft() for _ in range(min(self.batch_size, len(queue)))]
                self._inflight = len(batch)
            self._measure(batch)
            self.delivery.deliver(batch, retry=True, stop=self._stop)

    def _drain_disk(self) -> bool:
        """Deliver the rows on disk; False when the backend is down and rows remain."""
        disk = self.disk
        assert disk is not None
        while not self._stop.is_set():
            with self._state:
                self._busy = True
            seqs, batch = disk.take(self.batch_size)
            if not batch:
                with self._state:
                    self._busy = False
                    self._inflight = 0
                    self._state.notify_all()
                return True
            with self._state:
                self._inflight = len(batch)
            self._measure(batch)
            settled = self.delivery.deliver(batch, retry=True, stop=self._stop, keep_transient=True)
            if not settled:
                # The backend is down: the rows stay on disk; try again next interval.
                with self._state:
                    self._busy = False
                    self._inflight = 0
                    self._state.notify_all()
                return False
            disk.ack(seqs)
        return False

    def _measure(self, batch: list[Item]) -> None:
        """Re-estimate the bytes per queued metric and so the count the byte bound allows."""
        if self.max_buffer_bytes is None:
            return
        sample = batch[:_SIZE_SAMPLE]
        size = sum(_item_bytes(item) for item in sample) / len(sample)
        self._item_bytes = size if not self._item_bytes else 0.8 * self._item_bytes + 0.2 * size
        self._limit[0] = max(1, min(self.max_buffer, int(self.max_buffer_bytes / self._item_bytes)))

    def _report_drops(self) -> None:
        with self._state:
            dropped, self._dropped = self._dropped, []
        if dropped:
            error = BufferFull(
                f"the buffer of {self._limit[0]} metrics was full "
                f"(overflow policy {self.overflow!r})"
            )
            self.delivery.report_loss(self.delivery.to_metrics(dropped), error, "dropped")

    # -- flush, close, fork ------------------------------------------------------------

    def queued_now(self) -> int:
        """Metrics accepted and not yet handed to the worker."""
        if self.disk is not None:
            return self.disk.pending
        return len(self.queue)

    def queued(self) -> int:
        """Metrics accepted and not yet delivered or given up on."""
        if self.disk is not None:
            return self.queued_now()
        return len(self.queue) + self._inflight

    def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued; wait at most ``timeout`` seconds (None: no limit).

        Returns how many metrics are still waiting (0 when all were delivered or
        given up on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            while self.queued_now() or self._busy or self._dropped:
                if not self._worker.is_alive():
                    break
                self._wake.set()
                remaining = 0.1 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._state.wait(min(remaining, 0.1))
                if not self._settled and not self._busy:
                    break  # the backend is down; what is left stays on disk
            return self.queued()

    def close(self, timeout: float | None = None) -> int:
        """Flush, stop the worker and close the backend; wait at most ``timeout`` seconds.

        In memory, metrics still queued at the deadline are given up on (counted as
        failed and passed to the failure hook). With a disk buffer they stay on disk
        for the next process on the same path. Returns how many were left. Safe to call
        twice.
        """
        if self._closed:
            return self.queued()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._closed = True
        self._wake.set()
        self._worker.join(timeout)
        if self._worker.is_alive():
            # Still retrying or stuck in the backend: stop waiting between retries.
            self._stop.set()
            self._wake.set()
            if deadline is not None:
                self._worker.join(max(0.0, deadline - time.monotonic()))
        stuck = self._inflight if self._worker.is_alive() else 0
        if self.disk is not None:
            left = self.queued()
            if not self._worker.is_alive():
                self.disk.close()
        else:
            items = list(self.queue)
            self.queue.clear()
            if items:
                self.delivery.fail(
                    self.delivery.to_metrics(items),
                    BufferFull(f"Kaneda was closed before {len(items)} metrics could be delivered"),
                )
            left = len(items) + stuck
        if not self._worker.is_alive():
            try:
                self.delivery.backend.close()
            except Exception as error:  # noqa: BLE001 - closing must not raise at exit
                log.error("Kaneda: closing the backend failed: %s", self.delivery.describe(error))
        _untrack(self)
        return left

    def _after_fork_in_child(self) -> None:
        self.queue.clear()
        self._dropped = []
        if self.disk is not None:
            self.disk.after_fork_in_child()
        if not self._closed:
            self._init_threading()


def _item_bytes(item: Item) -> int:
    """About how much memory one queued call holds (the tuple, strings, tags, value)."""
    name, value, tags = item[0], item[2], item[3]  # a forwarded item has a 7th field
    size = sys.getsizeof(item) + sys.getsizeof(name) + sys.getsizeof(value) + 32
    size += sys.getsizeof(tags)
    if isinstance(tags, dict):
        size += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in tags.items())
    else:
        size += sum(sys.getsizeof(t) for t in tags)
    if isinstance(value, (dict, list)):
        size += len(repr(value))
    return size


_live: weakref.WeakSet[BatchingDispatcher] = weakref.WeakSet()
_hooks_installed = False


def _track(dispatcher: BatchingDispatcher) -> None:
    global _hooks_installed
    if not _hooks_installed:
        atexit.register(_close_all_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_reset_all_in_child)
        _hooks_installed = True
    _live.add(dispatcher)


def _untrack(dispatcher: BatchingDispatcher) -> None:
    _live.discard(dispatcher)


def _close_all_at_exit() -> None:
    for dispatcher in list(_live):
        left = dispatcher.close(dispatcher.exit_timeout)
        if left:
            where = "kept on disk" if dispatcher.disk is not None else "not delivered"
            log.error("Kaneda: %d metrics %s at exit", left, where)


def _reset_all_in_child() -> None:
    for dispatcher in list(_live):
        dispatcher._after_fork_in_child()
