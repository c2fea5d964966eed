"""How a reporting call reaches the backend: in the caller's thread, or batched.

The batching dispatcher keeps a bounded in-memory queue that reporting calls append
to without taking a lock, and one background worker that delivers it in batches:
when a batch fills, every ``flush_interval`` seconds, on ``flush()``, on ``close()``
and at interpreter exit. It is fork-safe: a child process starts with an empty queue
and its own worker, and the parent's queue is delivered by the parent alone.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Literal

from .delivery import BufferFull, Delivery, Item, log

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "block")

Submit = Callable[[Item], None]


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
        overflow: Overflow,
        block_timeout: float,
        exit_timeout: float,
    ) -> None:
        self.delivery = delivery
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.exit_timeout = exit_timeout
        self.queue: deque[Item] = deque()
        self._dropped: list[Item] = []
        self._closed = False
        self._init_threading()
        self.submit: Submit = self._make_submit()
        _track(self)

    def _init_threading(self) -> None:
        # Called again in a forked child: locks held by the parent's threads at the
        # moment of the fork would never be released there.
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._state = threading.Condition()
        self._busy = False
        self._inflight = 0
        self._worker = threading.Thread(target=self._run, name="kaneda-worker", daemon=True)
        self._worker.start()

    def _make_submit(self) -> Submit:
        queue = self.queue
        append = queue.append
        batch_size = self.batch_size
        max_buffer = self.max_buffer
        wake = self._wake_worker
        overflow = self._overflow

        def submit(item: Item) -> None:
            size = len(queue)
            if size >= max_buffer:
                overflow(item)
                return
            append(item)
            if size + 1 == batch_size:
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
            while len(self.queue) >= self.max_buffer and time.monotonic() < deadline:
                time.sleep(0.001)
            if len(self.queue) < self.max_buffer:
                self.queue.append(item)
                return
            self._record_drop(item)
        elif self.overflow == "drop_oldest":
            try:
                oldest = self.queue.popleft()
            except IndexError:  # the worker emptied it meanwhile
                pass
            else:
                self._record_drop(oldest)
            self.queue.append(item)
        else:
            self._record_drop(item)

    def _record_drop(self, item: Item) -> None:
        # Counted now; reported to the failure hook by the worker, off the caller's path.
        self.delivery.count(dropped=1)
        with self._state:
            # Bounded too: past this many, drops are counted but not passed to the hook.
            if len(self._dropped) < self.max_buffer:
                self._dropped.append(item)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self._report_drops()
            self._drain()
            if self._closed and not self.queue:
                self._report_drops()
                with self._state:
                    self._state.notify_all()
                return

    def _drain(self) -> None:
        queue = self.queue
        popleft = queue.popleft
        while True:
            with self._state:
                if not queue:
                    self._busy = False
                    self._inflight = 0
                    self._state.notify_all()
                    return
                self._busy = True
                batch = [popleft() for _ in range(min(self.batch_size, len(queue)))]
                self._inflight = len(batch)
            self.delivery.deliver(batch, retry=True, stop=self._stop)

    def _report_drops(self) -> None:
        with self._state:
            dropped, self._dropped = self._dropped, []
        if dropped:
            error = BufferFull(
                f"the buffer of {self.max_buffer} metrics was full "
                f"(overflow policy {self.overflow!r})"
            )
            self.delivery.report_loss(self.delivery.to_metrics(dropped), error, "dropped")

    def queued(self) -> int:
        """Metrics accepted and not yet delivered or given up on."""
        return len(self.queue) + self._inflight

    def flush(self, timeout: float | None = None) -> int:
        """Deliver everything queued; wait at most ``timeout`` seconds (None: no limit).

        Returns how many metrics are still waiting (0 when all were delivered or
        given up on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._state:
            while self.queue or self._busy or self._dropped:
                if not self._worker.is_alive():
                    break
                self._wake.set()
                remaining = 0.1 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._state.wait(min(remaining, 0.1))
            return self.queued()

    def close(self, timeout: float | None = None) -> int:
        """Flush, stop the worker and close the backend; wait at most ``timeout`` seconds.

        Metrics still queued at the deadline are given up on (counted as failed and
        passed to the failure hook). Returns how many that was. Safe to call twice.
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
            if deadline is not None:
                self._worker.join(max(0.0, deadline - time.monotonic()))
        left = list(self.queue)
        self.queue.clear()
        if left:
            self.delivery.fail(
                self.delivery.to_metrics(left),
                BufferFull(f"Kaneda was closed before {len(left)} metrics could be delivered"),
            )
        stuck = self._inflight if self._worker.is_alive() else 0
        if not stuck:
            try:
                self.delivery.backend.close()
            except Exception as error:  # noqa: BLE001 - closing must not raise at exit
                log.error("Kaneda: closing the backend failed: %s", self.delivery.describe(error))
        _untrack(self)
        return len(left) + stuck

    def _after_fork_in_child(self) -> None:
        self.queue.clear()
        self._dropped = []
        if not self._closed:
            self._init_threading()


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
            log.error("Kaneda: %d metrics were not delivered before exit", left)


def _reset_all_in_child() -> None:
    for dispatcher in list(_live):
        dispatcher._after_fork_in_child()
