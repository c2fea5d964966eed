"""How a reporting call reaches the backend: in the caller's thread, or batched.

The batching dispatcher keeps a bounded queue that reporting calls append to without
taking a lock (in memory), or a SQLite file (with ``buffer_path``), and one background
worker that delivers it in batches: when a batch fills, every ``flush_interval``
seconds, on ``flush()``, on ``close()`` and at interpreter exit. The worker never dies:
whatever goes wrong in an iteration is logged and the next iteration starts after a
pause.

No reporting call ever waits on a lock its own thread may hold: a signal handler that
reports while its thread is inside Kaneda gets through. Both dispatchers are fork-safe
(see :mod:`kaneda_core.forking`): a child starts with an empty queue, counters at zero
and its own worker, which its first call starts, and the parent's queue is delivered by
the parent alone.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import FrameType, MethodType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from . import stamps
from .closer import closer_started, start_closer, tell_totals
from .delivery import BufferFull, Delivery, Item, log
from .errors import InvalidMetric
from .fork_gate import inside_gate
from .forking import (
    ThreadStartError,
    _deliver_on_terminate,
    at_exit,
    deliver_after_server_shutdown,
    hold_across_fork,
    load_what_a_green_exit_needs,
    start_thread,
    track_dispatcher,
)

if TYPE_CHECKING:
    from .aggregate import Aggregator
    from .disk_buffer import DiskBuffer

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "block")

Submit = Callable[[Any], None]


class Wakeup:
    """``threading.Event`` on a reentrant lock.

    A reporting call wakes the worker; if a signal handler interrupts that call inside
    ``Event.set()`` and reports too, a plain Event would wait on the lock its own
    thread holds.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.RLock())
        self._flag = False

    def is_set(self) -> bool:
        """Whether the flag is up."""
        return self._flag

    def set(self) -> None:
        """Raise the flag and wake every waiter."""
        with self._condition:
            self._flag = True
            self._condition.notify_all()

    def clear(self) -> None:
        """Lower the flag."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is up or ``timeout`` passes; returns the flag."""
        with self._condition:
            if not self._flag:
                self._condition.wait(timeout)
            return self._flag


class _Closable:
    """What both dispatchers share: what a call does once the dispatcher is closed."""

    delivery: Delivery
    submit: Submit

    def _init_closing(self) -> None:
        self._closed = False
        self._warned_after_close = False
        self._close_listeners: list[Callable[[], Callable[[Submit], None] | None]] = []

    def moves(self) -> int:
        """Changes since: a reader of the counters and of ``queued()`` that sees the same
        value before and after saw both at one instant (see Metrics.stats)."""
        return self.delivery.changes

    def on_close(self, listener: Callable[[Submit], None]) -> None:
        """Call ``listener`` with the submit function that replaces :attr:`submit` at close.

        A bound method is held weakly: the dispatcher (kept alive by its worker thread)
        must not keep the :class:`~kaneda_core.Metrics` it serves from being collected.
        """
        self._close_listeners.append(_held(listener))

    def _switch_to_closed(self) -> None:
        # Drops from here on are calls made after close, said so apart.
        self._dropped_before_close = self.delivery.snapshot().dropped
        self._closed = True
        self.submit = self._submit_after_close
        for held in self._close_listeners:
            listener = held()
            if listener is not None:
                listener(self._submit_after_close)

    def _submit_after_close(self, item: Any) -> None:
        self.delivery.count(dropped=1)
        if not self._warned_after_close:
            self._warned_after_close = True
            log.warning(
                "Kaneda: a metric was reported after close() and was dropped; later ones are "
                "dropped too, counted in stats().dropped without another warning"
            )


#: Metrics a synchronous Metrics holds for the thread delivering (made by a hook or a
#: signal handler while it delivers), at most; past it they are dropped, counted.
MAX_DEFERRED = 10_000


class SyncDispatcher(_Closable):
    """Delivers each metric in the caller's thread, one attempt, before the call returns.

    Deliveries are serialized (a backend is used by one thread at a time). A call made
    while its own thread is delivering (from a signal handler) does not wait: its metric
    is delivered by that thread right after the current one.
    """

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.submit: Submit = self._submit
        self._init_closing()
        self._init_threading()
        track_dispatcher(self)
        # A fork waits for a delivery in progress (see fork_gate): the lock each takes.
        hold_across_fork(self)

    def _init_threading(self) -> None:
        self._lock = threading.Lock()
        # Per thread: whether it is delivering (a signal handler may interrupt it there).
        self._local = threading.local()
        self._deferred: deque[Any] = deque()

    def _submit(self, item: Any) -> None:
        local = self._local
        if getattr(local, "inside", False):
            # This thread is inside a delivery (a signal handler interrupted it, or a
            # hook or the backend reports): it delivers this one too, right after its
            # own; the call does not wait.
            self._defer(item)
            return
        if not self._lock.acquire(False):  # (positional: the faster call)
            if _inside_kaneda(sys._getframe(1)):
                # A signal handler that interrupted this thread inside Kaneda (counting,
                # say), while another thread delivers and may need what this one holds:
                # the thread that delivers takes this one after its own.
                self._defer(item)
                return
            self._lock.acquire()
        local.inside = True
        try:
            self._deliver_one(item)
            if self._deferred:
                self._deliver_owed()
        finally:
            local.inside = False
            self._lock.release()
        if self._deferred:  # deferred just as this thread let go
            # Not waiting: this may be a signal handler's call, in a thread interrupted
            # inside Kaneda; a thread that has the lock takes them after its own.
            self._deliver_deferred(time.monotonic())

    def _defer(self, item: Any) -> None:
        if len(self._deferred) >= MAX_DEFERRED:
            self.delivery.count(dropped=1)  # a hook reporting each failure, the store down
            return
        self._deferred.append(item)

    def _deliver_owed(self) -> None:
        # What was deferred when this began, in one send, not what its own failures defer
        # meanwhile: a failure hook that reports through this Metrics ("count them") kept
        # the call delivering for ever while the store was down.
        deferred = self._deferred
        popleft = deferred.popleft
        owed = []
        for _ in range(len(deferred)):
            if not deferred:
                break
            owed.append(popleft())
        if owed:
            self.delivery.deliver(owed, retry=False)

    def _deliver_one(self, item: Any) -> None:
        """Deliver one call's metric (a subclass may keep what the backend answered)."""
        self.delivery.deliver((item,), retry=False)

    def _deliver_deferred(self, deadline: float | None) -> None:
        local = self._local
        if getattr(local, "inside", False):
            return
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            return  # another thread delivers: it takes what was deferred after its own
        local.inside = True
        try:
            self._deliver_owed()
        finally:
            local.inside = False
            self._lock.release()

    def hold_for_fork(self, timeout: float) -> bool:
        """Wait, before a fork, for a delivery in another thread to end."""
        if getattr(self._local, "inside", False):
            return False  # this very thread delivers (a hook or a signal handler forks)
        return self._lock.acquire(timeout=timeout)

    def release_after_fork(self) -> None:
        """Give the lock back, in the parent, after the fork."""
        self._lock.release()

    def settle(self) -> None:
        """Nothing to settle: a call delivers before it returns."""

    def queued(self) -> int:
        """Metrics waiting for delivery: only those deferred by a signal handler."""
        return len(self._deferred)

    def flush(self, timeout: float | None = None, *, stop: threading.Event | None = None) -> int:
        """Deliver what a signal handler deferred; returns how many are still waiting."""
        self._deliver_deferred(self._deadline(timeout))
        return len(self._deferred)

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        now = time.monotonic()
        if _inside_kaneda(sys._getframe(2)):
            return now  # a signal handler, in a thread Kaneda's lock may be held by: no wait
        return None if timeout is None else now + timeout

    def close(self, timeout: float | None = None) -> int:
        """Close the backend, within ``timeout``; returns how many deferred metrics were
        left. Later calls are counted as dropped."""
        if self._closed:
            return 0
        deadline = self._deadline(timeout)
        self._deliver_deferred(deadline)
        self._switch_to_closed()
        # Called by a hook in this thread's delivery, which goes on to deliver what was
        # deferred; else what is left now stays undelivered.
        inside = getattr(self._local, "inside", False)
        left = 0 if inside else len(self._deferred)
        if left:
            self._deferred.clear()
            self.delivery.count(failed=left)
            log.error("Kaneda: %d metrics not delivered: close() ran out of time", left)
        # Once no other thread is in a send (a backend is used by one thread at a time);
        # past the deadline, that is done in a thread of its own.
        _close_backend(self.delivery, deadline, None if inside else self._lock)
        return left

    def _after_fork_in_child(self) -> None:
        self._init_threading()


class BatchingDispatcher(_Closable):
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
        aggregator: Aggregator | None = None,
    ) -> None:
        self.delivery = delivery
        self.aggregator = aggregator
        if aggregator is not None:
            aggregator.wake = self._wake_worker  # its series past their byte bound
            delivery.calls_lost = aggregator.lost  # the calls a failed point carried
        # Emits flush() asked for, and the last the worker began after one was asked: a
        # flush waits until the worker began one after it asked, and its points are
        # queued (a flag the worker cleared could wipe a later flush's request).
        self._emits_asked = 0
        self._emits_done = 0
        self._final_round = False  # the extra round at close, for calls made before it
        # While a batch waits for a retry, with aggregation: when the worker looks up
        # next, to emit each interval on time (see _while_retrying).
        self._wait_step = None if aggregator is None else self._until_next_emit
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.exit_timeout = exit_timeout
        self.disk = disk
        if disk is not None:
            disk.on_busy = self._wake_worker  # a call left metrics staged: write them
        if disk is not None and max_buffer_bytes is not None:
            # While the file fails, what waits in memory is bounded in bytes too.
            disk.bound_memory(
                max_buffer_bytes, item_bytes, lambda item: self._record_drop(item, item_bytes(item))
            )
        self.queue: deque[Any] = deque()
        # Estimated bytes queued, with max_buffer_bytes (a one-item list: the submit
        # closure and the worker share it).
        self._bytes = [0]
        # Dropped metrics waiting to be shown to the failure hook, bounded like the queue.
        self._dropped: deque[Any] = deque()
        self._dropped_bytes = 0
        self._drops_seen = 0  # stats().dropped at the worker's last look
        self._init_closing()
        self._finished = False  # close() done (it may be interrupted, and completed later)
        self._backend_closed = False
        # close() ran out of time while the worker was in a send: the worker, once it
        # returns, closes the backend (see _close_waiting).
        self._settles_after_close = False
        self._restart_at = 0.0  # (see _restart_worker)
        # In a forked child, until its first call starts the worker (see _after_fork_in_child):
        # the submit function that call replaces, and who to tell when it is started.
        self._waiting_for_a_call = False
        # One item while it waits: the call that pops it starts the worker. A pop is one
        # step a signal handler cannot come between (a handler reporting during the
        # first call re-enters the reentrant lock, between any two lines under it).
        self._first_call: list[bool] = []
        self._starting = False  # that call is starting it, outside the worker's lock
        self._started_submit: Submit | None = None
        self._fork_listeners: list[Callable[[], Callable[[bool], None] | None]] = []
        self._switch_listeners: list[Callable[[], Callable[[Submit], None] | None]] = []
        # A forked child's (its thread limit met at the first call: its metrics wait for
        # a thread), or a Metrics made here (they are delivered in the callers' threads).
        self._forked = False
        # No worker could be had at the first call: the callers' threads deliver (see
        # _deliver_in_callers), through this, one at a time.
        self._callers: SyncDispatcher | None = None
        self._forwarding = threading.Lock()
        # The worker handed back metrics it could not send because the interpreter is
        # exiting (see _drain): the close delivers them in its own thread.
        self._handed_back = False
        # No worker yet: the first reporting call starts it (see start_at_first_call), in
        # what the calls' threads are then. A Metrics made before gevent's monkey-patch
        # (gunicorn's post_fork hook, a module imported before patch_all()) and used after
        # it gets a green worker, not a real thread in a process of greenlets.
        self._init_threading(start=False)
        self.submit: Submit = self._make_submit()
        # Aggregated points go in through the same door, bounds and all, even once closed.
        self._accept = self.submit
        self._wait_for_a_call()
        track_dispatcher(self)
        _track(self)
        if disk is not None and disk.queued():
            # Rows an earlier process left (the store was down, it was killed): delivered
            # in the background as they always were, although no call may ever come (a
            # `kaneda worker` restarted on its buffer with its queue empty).
            self.start_at_first_call()

    def _init_threading(self, *, start: bool = True) -> None:
        # Called again in a forked child: locks held by the parent's threads at the
        # moment of the fork would never be released there.
        self._wake = Wakeup()
        self._stop = threading.Event()
        self._state = threading.Condition(threading.RLock())
        self._closing = threading.Lock()
        # Reentrant: a signal handler may report while its thread holds it.
        self._bytes_lock = threading.RLock()
        self._busy = False
        # The batch in the worker's hands not yet counted sent, failed or filtered.
        self._inflight = 0
        self._settled = True
        # Set when the worker returns. Waited on instead of Thread.join(): a join that
        # Ctrl-C interrupts marks a running thread as stopped (CPython 3.11).
        self._exited = threading.Event()
        self._worker: threading.Thread | None = None
        if start:
            self._start_worker()
        else:  # started by the first call (see start_at_first_call): none to wait for until then
            self._exited.set()

    def _start_worker(self) -> None:
        """Start the worker; where no thread can be had, none runs and none is waited for."""
        self._worker = None
        try:
            self._worker = start_thread(self._run, "kaneda-worker")
        except ThreadStartError as error:
            self._start_error = error
            self._exited.set()  # flush() and close() wait for no worker

    def _restart_worker(self) -> None:
        """Try again, at most once a second, to start a worker that could not be started.

        A forked child that met its thread limit: its metrics wait for a thread (counted
        as queued, given up at close if none could be had, never waited on for ever).
        A forked child that has not started one yet starts it if it has metrics to deliver
        (a flush or close with none starts nothing).
        """
        if self._callers is not None:
            self._forward()
            return
        if self._waiting_for_a_call:
            if self._has_work():
                self.start_at_first_call()
            return
        now = time.monotonic()
        if self._worker is not None or self._closed or now < self._restart_at:
            return
        self._restart_at = now + 1.0
        with self._state:
            if self._worker is None and not self._starting:
                self._exited = threading.Event()
                self._start_worker()
                if self._worker is None:
                    log.warning("Kaneda: %s; metrics stay queued", self._start_error)

    def _wait_for_a_call(self) -> None:
        """No worker until the first reporting call (or a flush or close with something
        to deliver) starts it: see :meth:`start_at_first_call`."""
        if not self._waiting_for_a_call:  # (else a child of a child that never reported)
            self._waiting_for_a_call = True
            self._first_call = [True]
            self._started_submit = self.submit
            self.submit = self._submit_first
        if self.aggregator is not None:
            # Aggregated calls queue a known series' key, out of the dispatcher's sight:
            # with no series known, each call's first is admitted, which starts the
            # worker (a method taken before included).
            self.aggregator.on_new_series = self.start_at_first_call

    def waiting(self) -> bool:
        """Whether the worker waits for the first call to start it."""
        return self._waiting_for_a_call

    def in_callers(self) -> bool:
        """Whether calls deliver in the caller's thread (no worker could be had)."""
        return self._callers is not None

    def waiting_submit(self) -> Submit:
        """The submit function a Metrics' calls go through once the worker is started."""
        if self._waiting_for_a_call and self._started_submit is not None:
            return self._started_submit
        return self.submit

    def on_switch(self, listener: Callable[[Submit], None]) -> None:
        """Call ``listener`` with the submit function calls go through from then on,
        when no worker could be had at the first call (they deliver in the caller's
        thread). A bound method is held weakly (see :meth:`on_close`)."""
        self._switch_listeners.append(_held(listener))

    def on_fork(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(True)`` in a forked child, where the first reporting call must
        call :meth:`start_at_first_call`, and ``listener(False)`` once it has. A bound
        method is held weakly (see :meth:`on_close`)."""
        self._fork_listeners.append(_held(listener))

    def _tell_fork_listeners(self, waiting: bool) -> None:
        for held in self._fork_listeners:
            listener = held()
            if listener is not None:
                listener(waiting)

    def start_at_first_call(self) -> None:
        """Start the worker at the first reporting call (once), in a forked child too.

        Not when the Metrics is made, nor at a fork: the process may patch ``threading``
        after that (gevent: gunicorn's workers patch after the ``post_fork`` hook and
        after a ``--preload`` fork; a module imported before ``patch_all()``), and a
        thread started before the patch is a real one, which Kaneda's locks and wake-ups,
        and threading's own bookkeeping (it printed "Exception ignored ... KeyError" when
        that thread ended), then take for a greenlet; its first send at exit failed
        (gevent's hub for that thread imports ``concurrent.futures`` after the shutdown
        began). Started by a call, it is what the calls' threads are.
        """
        try:
            self._first_call.pop()
        except IndexError:
            return  # started, or being started by the call this one interrupted
        with self._state:
            if not self._waiting_for_a_call:
                return
            # Starting, before waiting no more: a call meanwhile (another thread, or a
            # signal handler's in this one) finds either, and starts no second worker.
            self._starting = True
            self._waiting_for_a_call = False
            if self.aggregator is not None:
                self.aggregator.on_new_series = None
            if self.submit == self._submit_first:  # (not once closed)
                assert self._started_submit is not None
                self.submit = self._started_submit
            start = not self._closed
            if start:
                self._exited = threading.Event()
            else:
                self._starting = False
        if start:
            load_what_a_green_exit_needs()
            # Outside the lock: a green thread runs at once, in this very OS thread,
            # and the lock (made before a patch) is a real one.
            try:
                self._start_worker()
            finally:
                self._starting = False
            if self._worker is None:
                self._restart_at = time.monotonic() + 1.0
                if self._forked:
                    log.warning(
                        "Kaneda: %s in this forked child; its metrics stay queued until one "
                        "can be started",
                        self._start_error,
                    )
        self._tell_fork_listeners(False)
        if start and self._worker is None and not self._forked:
            self._deliver_in_callers()
        if start and not closer_started():
            # Started with the first worker, not with the first Metrics: a thread of the
            # callers' kind (and those a parent let go of: see closer._no_closer_in_child).
            start_closer()
        if start:
            # A server that took SIGTERM since the Metrics was made (a gunicorn
            # UvicornWorker forked with --preload: uvicorn's handler is set in the worker
            # after the fork) ends the process by raising it with its default action.
            deliver_after_server_shutdown()

    def _submit_first(self, item: Any) -> None:
        self.start_at_first_call()
        assert self._started_submit is not None
        self._started_submit(item)

    def _has_work(self) -> bool:
        """Whether anything waits for the worker: queued, dropped (for the hook), folding."""
        aggregator = self.aggregator
        return bool(
            self.queued_now()
            or self._dropped
            or (aggregator is not None and (aggregator.pending() or aggregator.series()))
        )

    def _deliver_in_callers(self) -> None:
        """No worker thread could be had at the first call (a container's pids limit,
        ``ulimit -u``): from now on each call delivers its metric in the caller's thread
        before it returns, as ``batching=False`` does, with no aggregation and no disk
        buffer (its file is closed, its rows kept for the next process). What was queued
        or folded before (the first calls, a method taken before that still folds) is
        delivered with the next call, flush, close or exit (see :meth:`_forward`).
        """
        self._callers = SyncDispatcher(self.delivery)
        log.warning(
            "Kaneda: %s; this Metrics delivers each metric in the caller's thread "
            "(batching=False; no aggregation, no buffer_path)",
            self._start_error,
        )
        disk = self.disk
        if disk is not None:
            disk.close()  # (rows the first calls wrote stay for the next process)
            self.disk = None
            self._accept = self._make_submit()  # aggregated points: in memory, then here
        self.submit = self._started_submit = self._submit_in_caller
        for held in self._switch_listeners:
            listener = held()
            if listener is not None:
                listener(self._submit_in_caller)
        self._forward()

    def _submit_in_caller(self, item: Any) -> None:
        aggregator = self.aggregator
        if self.queue or (aggregator is not None and aggregator.pending()):
            self._forward()
        callers = self._callers
        assert callers is not None
        callers.submit(item)

    def _forward(self) -> None:
        """Without a worker: deliver, in this thread, what is queued and what was folded."""
        callers = self._callers
        if callers is None or not self._forwarding.acquire(False):
            return  # another thread forwards, or a signal handler interrupted this one
        try:
            aggregator = self.aggregator
            if aggregator is not None and aggregator.pending():
                self._emits_asked += 1  # every call folded so far is emitted now
                self._fold_and_emit(aggregator)
            items = self._take_queued()
        finally:
            self._forwarding.release()
        for item in items:
            callers._defer(item)
        callers.flush()

    # -- the calling side ------------------------------------------------------------

    def _make_submit(self) -> Submit:
        if self.disk is not None:
            return self._make_disk_submit()
        if self.max_buffer_bytes is not None:
            return self._make_bounded_submit()
        queue = self.queue
        append = queue.append
        full_before = self.batch_size - 1  # the queue's length before the call that fills a batch
        limit = self.max_buffer
        wake = self._wake_worker
        overflow = self._overflow

        def submit(item: Item) -> None:
            size = len(queue)
            if size >= limit:
                overflow(item, 0)
                return
            append(item)
            if size == full_before:
                wake()

        return submit

    def direct_queue(self) -> tuple[deque[Any], int] | None:
        """The queue reporting calls may append to themselves, and its mark; or None.

        A call that appends calls :meth:`after_append` once the queue's length reaches
        the mark, which is no later than a full batch and one past the bound. None with
        a disk buffer or a byte bound: those calls go through :attr:`submit`.
        """
        if self.disk is not None or self.max_buffer_bytes is not None:
            return None
        return self.queue, min(self.batch_size, self.max_buffer + 1)

    def after_append(self) -> None:
        """A call appended to the queue, which reached its mark: deliver, or bound it."""
        queue = self.queue
        if self._waiting_for_a_call:
            # A forked child's first call (its Metrics' mark was 1): the worker is
            # started, and the queue is not at its mark unless other calls raced it.
            self.start_at_first_call()
            if len(queue) < min(self.batch_size, self.max_buffer + 1):
                return
        if len(queue) > self.max_buffer:
            # Under the worker's lock: the worker counts a batch, then pops it, and an item
            # taken meanwhile by another thread would end its batch short (an IndexError
            # that lost the batch's metrics uncounted).
            with self._state:
                if not queue:  # the worker emptied the queue meanwhile
                    return
                item = queue.pop()  # one past the bound: the newest goes to the policy
            self._overflow(item, 0)
        elif not self._wake.is_set():
            self._wake.set()  # a batch is full
        if self._worker is None:  # (a forked child at its thread limit)
            self._restart_worker()

    def _make_bounded_submit(self) -> Submit:
        queue = self.queue
        append = queue.append
        batch_size = self.batch_size
        limit = self.max_buffer
        max_bytes = self.max_buffer_bytes
        assert max_bytes is not None
        used = self._bytes
        wake = self._wake_worker
        overflow = self._overflow

        def submit(item: Item) -> None:
            size = item_bytes(item)
            # The count and the bound are read and changed by calling threads and the
            # worker: unlocked, updates were lost, and the count drifted until an empty
            # queue refused every call (or the bound went).
            with self._bytes_lock:
                count = len(queue)
                full = count >= limit or used[0] + size > max_bytes
                if not full:
                    used[0] += size
                    append(item)
            if full:
                overflow(item, size)
            elif count + 1 == batch_size:
                wake()

        return submit

    def _make_disk_submit(self) -> Submit:
        disk = self.disk
        assert disk is not None
        append = disk.append
        queued = disk.queued
        batch_size = self.batch_size
        limit = self.max_buffer
        wake = self._wake_worker
        overflow = self._overflow

        def submit(item: Item) -> None:
            if queued() >= limit:
                overflow(item, 0)
                return
            if append(item) == batch_size:
                wake()

        return submit

    def _wake_worker(self) -> None:
        self._wake.set()
        if self._worker is None:
            self._restart_worker()

    def _overflow(self, item: Any, size: int) -> None:
        if self.overflow == "block":
            deadline = time.monotonic() + self.block_timeout
            self._wake.set()
            while self._full(size) and time.monotonic() < deadline:
                time.sleep(0.001)
            if not self._full(size):
                self.submit(item)
                return
        elif self.overflow == "drop_oldest":
            oldest = self._pop_oldest()
            if oldest is not None:
                self._record_drop(oldest, self._size_of(oldest))
                self._force_append(item, size)
                return
        self._record_drop(item, size)

    def _full(self, size: int) -> bool:
        if self.queued_now() >= self.max_buffer:
            return True
        return self.max_buffer_bytes is not None and self._bytes[0] + size > self.max_buffer_bytes

    def _size_of(self, item: Any) -> int:
        return item_bytes(item) if self.max_buffer_bytes is not None else 0

    def _pop_oldest(self) -> Any | None:
        if self.disk is not None:
            return self.disk.drop_oldest()  # None while another thread writes the file
        with self._state:  # as in after_append: never between the worker's count and pops
            if not self.queue:  # the worker emptied it meanwhile
                return None
            oldest = self.queue.popleft()
        if self.max_buffer_bytes is not None:
            self._count_bytes(-item_bytes(oldest))
        return oldest

    def _count_bytes(self, change: int) -> None:
        with self._bytes_lock:
            self._bytes[0] += change

    def _force_append(self, item: Any, size: int) -> None:
        if self.disk is not None:
            self.disk.append(item)
        else:
            with self._bytes_lock:
                self._bytes[0] += size
                self.queue.append(item)

    def _record_drop(self, item: Any, size: int) -> None:
        # Counted now; shown to the failure hook by the worker, off the caller's path (and
        # kept only for a hook: in an outage, that is a second buffer's worth of memory).
        aggregator = self.aggregator
        lost = 0 if aggregator is None else aggregator.lost((item,))
        if lost:
            self.delivery.count(dropped=1, folded_lost=lost)
        else:
            self.delivery.count(dropped=1)
        cap = self.max_buffer_bytes
        if (
            len(self._dropped) < self.max_buffer
            and (cap is None or self._dropped_bytes + size <= cap)
            and self.delivery.hears_losses()
        ):
            self._dropped.append(item)
            self._dropped_bytes += size
        if not self._wake.is_set():
            self._wake.set()
        if self._worker is None:
            self._restart_worker()

    # -- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._rounds()
        finally:
            with self._state:  # (see _close: one of the two finishes what close() began)
                self._exited.set()
                settle = self._settles_after_close
            if settle:
                self._settle_after_close()

    def _settle_after_close(self) -> None:
        """What close() left to this worker, which was in a send when its time ran out."""
        if self.aggregator is not None:
            self._aggregated_calls_lost(self.aggregator.close())
        self._close_backend_once(None)

    def _rounds(self) -> None:
        failures = 0
        while True:
            try:
                stamps.release_passed()  # slots given up after a clock step, if any
                if self._iteration():
                    return
                failures = 0
            except BaseException as error:  # noqa: BLE001 - the worker must never die
                failures += 1
                pause = min(5.0, 0.05 * 2 ** min(failures, 10))  # 2**1024 is no float
                log.error(
                    "Kaneda: the delivery worker hit %s: %s; it carries on in %.2f s",
                    type(error).__name__,
                    error,
                    pause,
                    exc_info=failures == 1,
                )
                with self._state:
                    self._busy = False
                    self._inflight = 0
                    self._state.notify_all()
                if self._closed and self._stop.is_set():
                    return
                self._stop.wait(pause)

    def _iteration(self) -> bool:
        """One round of the worker; True when it is finished (closed and drained)."""
        self._wake.wait(self.flush_interval)
        self._wake.clear()
        if self.aggregator is not None:
            self._fold_and_emit(self.aggregator)
        self._report_drops()
        settled = self._drain_disk() if self.disk is not None else self._drain()
        self._settled = settled
        if self._closed and (self._stop.is_set() or not settled or not self.queued_now()):
            aggregator = self.aggregator
            if (
                aggregator is not None
                and not self._final_round
                and settled
                and not self._stop.is_set()
                and (aggregator.pending() or aggregator.series())
            ):
                # Calls made before close() while this round delivered: one more round
                # folds, emits and delivers them. Calls after close() are not queued;
                # one that raced it and comes later still is counted dropped.
                self._final_round = True
                self._wake.set()
                return False
            self._report_drops()
            with self._state:
                self._busy = False
                self._state.notify_all()
            return True
        return False

    def _fold_and_emit(self, aggregator: Aggregator, *, waiting: bool = False) -> None:
        """Fold what calls queued; at each interval (and on flush, close), queue the points.

        ``waiting``: called while a batch waits for a retry (the store is down). Each
        interval is emitted on time still, its points queued behind that batch (or
        written to the disk buffer), bounded as any metric queued; the worker, in that
        batch's delivery, does not deliver them now.
        """
        asked = self._emits_asked  # before folding: the calls of that flush are queued
        aggregator.fold()
        due = time.monotonic() - aggregator.last_emit >= self.flush_interval
        wanted = asked > self._emits_done
        closing = self._closed and not waiting  # (close's last points: in its own round)
        if not (due or wanted or closing or aggregator.over_budget()):
            return
        try:
            # A time per point: points of one kind, tags and time would be one point in
            # a store that keeps the name as a field (InfluxDB's kaneda1 layout).
            first = stamps.reserve(aggregator.series() + aggregator.pending())
            points, folded, unstorable = aggregator.emit(first)
        except Exception as error:  # noqa: BLE001 - records kept would fail every interval
            self._emits_done = max(self._emits_done, asked)
            calls = aggregator.folded
            lost = aggregator.discard()
            self.delivery.count(failed=lost, folded_lost=calls)
            log.error("Kaneda: %d aggregated points lost: emitting them failed: %r", lost, error)
            return
        if folded:
            self.delivery.count(folded=folded)
        if unstorable:
            names = ", ".join(sorted({repr(point.name) for point in unstorable}))
            refusal = InvalidMetric(
                f"the aggregated value of {names} is beyond what a store holds (a sum of "
                f"calls past a 64-bit float's range): {len(unstorable)} points not stored"
            )
            self.delivery.fail(unstorable, refusal)
        accept = self._accept
        if self.overflow == "block":
            accept = functools.partial(self._accept_without_waiting, waiting=waiting)
        # Parts the queue can hold (a part batch where max_buffer is below batch_size),
        # each delivered before the next goes in if the queue has no room left for it
        # (a burst of points at each interval: none dropped for a full queue), leaving
        # the calls a batch's room where the queue has it.
        step = max(1, min(self.batch_size, self.max_buffer))
        room = max(step, self.max_buffer - self.batch_size)
        cap = self.max_buffer_bytes
        for start in range(0, len(points), step):
            part = points[start : start + step]
            if not waiting and (
                self.queued_now() + len(part) > room
                or (cap is not None and self._bytes[0] + sum(map(item_bytes, part)) > cap)
            ):
                self._deliver_queued()
            for point in part:
                accept(point)
        # Only now: a flush() waiting for the points sees them queued, not in the making.
        # (An emit made while this one delivered, the store down, may have seen a later.)
        self._emits_done = max(self._emits_done, asked)

    def _until_next_emit(self) -> float:
        """Seconds until the aggregator's next interval ends (a little, when it is due)."""
        assert self.aggregator is not None
        due = self.aggregator.last_emit + self.flush_interval - time.monotonic()
        return max(0.005, due)

    def _deliver_queued(self) -> None:
        """Deliver what is queued now (from the worker, between parts of an emit)."""
        callers = self._callers
        if callers is not None:  # no worker: one attempt, in this caller's thread
            for item in self._take_queued():
                callers._defer(item)
            callers.flush()
        elif self.disk is not None:
            self._drain_disk()
        else:
            self._drain()

    def _accept_without_waiting(self, point: Any, *, waiting: bool) -> None:
        """The worker's door for its points with ``overflow="block"``: it never waits for
        room that only it can make. A full queue is delivered first (not while a batch
        waits for a retry); a point that still finds it full is dropped, counted."""
        size = self._size_of(point)
        if self._full(size) and not waiting:
            self._deliver_queued()
        if self._full(size):
            self._record_drop(point, size)
        else:
            self.submit(point)

    def _drain(self) -> bool:
        queue = self.queue
        popleft = queue.popleft
        # A round delivers what was queued when it began, and full batches: a part batch
        # queued meanwhile waits for the next round. Else a failure hook that reports
        # through this Metrics ("count them") kept the worker sending without a pause.
        owed = len(queue)
        while True:
            with self._state:
                if not queue or (owed <= 0 and len(queue) < self.batch_size):
                    self._busy = False
                    self._inflight = 0
                    self._state.notify_all()
                    return True
                self._busy = True
                batch = [popleft() for _ in range(min(self.batch_size, len(queue)))]
                self._inflight = len(batch)
                owed -= len(batch)
            kept = self._deliver_or_count(batch)
            done = batch
            if kept:
                kept_at = set(kept)
                done = [item for i, item in enumerate(batch) if i not in kept_at]
            if self.aggregator is not None:
                self.aggregator.settled(done)  # the calls its points carried: forgotten
            if self.max_buffer_bytes is not None:
                # Counted until settled: a batch being retried still holds its memory.
                self._count_bytes(-sum(item_bytes(item) for item in done))
            if kept:
                # Not sent because the interpreter is exiting (this thread cannot send
                # any more: a real thread in a process gevent patched since): first in
                # line again, for the close, which delivers them in its own thread.
                with self._state:
                    self.queue.extendleft(reversed([batch[i] for i in kept]))
                    self._handed_back = True
                    self._busy = False
                    self._inflight = 0
                    self._state.notify_all()
                return False

    def _deliver_or_count(self, batch: list[Any]) -> list[int]:
        """Deliver ``batch``; the positions of those that failed because the interpreter
        is exiting, which are not counted (see Delivery.deliver's keep_at_shutdown)."""
        try:
            return inside_gate(
                self.delivery.deliver,
                batch,
                retry=True,
                stop=self._stop,
                keep_at_shutdown=True,
                while_waiting=self._while_retrying,
                settled=self._counted_in_flight,
                wait_step=self._wait_step,
            )
        except BaseException as error:  # noqa: BLE001 - counted, never lost silently
            # A backend that raises SystemExit or KeyboardInterrupt itself (a library
            # calling sys.exit()) must not take the batch with it, uncounted.
            self.delivery.count_settled(self._counted_in_flight, failed=self._inflight)
            log.error(
                "Kaneda: %d metrics could not be delivered: %s",
                len(batch),
                self.delivery.describe(error),  # secrets masked, shortened
            )
            return []

    def _counted_in_flight(self, metrics: int) -> None:
        # The delivery counted them, under its lock (see Delivery.count_settled).
        self._inflight -= metrics

    def _drain_disk(self) -> bool:
        """Deliver what the disk buffer holds; False when the backend is down and rows remain."""
        disk = self.disk
        assert disk is not None
        owed = disk.queued()  # a round's share, as in _drain
        while not self._stop.is_set():
            with self._state:
                self._busy = True
            if owed <= 0 and disk.queued() < self.batch_size:
                self._idle()
                return True
            entries = disk.take(self.batch_size)
            if not entries:
                self._idle()
                return True
            owed -= len(entries)
            with self._state:
                self._inflight = len(entries)
            # The disk buffer counts its rows queued until they are acknowledged (a part
            # stored while another waits for a retry is counted sent and queued then);
            # _inflight counts down what is not yet counted sent or failed.
            try:
                kept = set(
                    inside_gate(
                        self.delivery.deliver,
                        [item for _, item in entries],
                        retry=True,
                        stop=self._stop,
                        keep_transient=True,
                        while_waiting=self._while_retrying,
                        settled=self._counted_in_flight,
                        wait_step=self._wait_step,
                    )
                )
            except BaseException as error:  # noqa: BLE001 - counted, never lost silently
                self._entries_lost(entries, self._inflight, error)
                if any(seq is not None for seq, _ in entries):
                    return False  # the file's rows again next round, not at once
                continue
            # Delivered or failed for good: forgotten. Kept (the backend is down): rows
            # stay in the file; metrics that came from memory go back first in line
            # (before the ack, which stops counting them taken: never counted nowhere).
            back = [item for i, (s, item) in enumerate(entries) if s is None and i in kept]
            if back:
                disk.requeue(self._with_ids_sent(back))
            disk.ack([s for i, (s, _) in enumerate(entries) if s is not None and i not in kept])
            if self.aggregator is not None:
                self.aggregator.settled(
                    [item for i, (_, item) in enumerate(entries) if i not in kept]
                )
            if kept:
                self._idle()
                return False  # try again next interval
        return False

    def _with_ids_sent(self, items: list[Any]) -> list[Any]:
        """Metrics taken from memory, sent and kept to be sent again, with the ids a queue
        gave them (see :class:`~kaneda_core.message.IdMaker`): the broker may have them
        already, and the file they are written to now would give them ids of its own."""
        new_id = getattr(self.delivery.backend, "new_id", None)
        from .message import IdMaker  # here: only a queue's kept batches come this way

        if type(new_id) is not IdMaker:
            return items
        make = tuple.__new__
        return [
            item
            if item[6] is not None
            else make(type(item), (*item[:6], new_id.id_of(item), *item[7:]))
            for item in items
        ]

    def _entries_lost(self, entries: list[Any], unsettled: int, error: BaseException) -> None:
        """A delivery from the disk buffer raised (a MemoryError, a backend's SystemExit)
        with ``unsettled`` of its ``entries`` not yet counted sent or failed.

        As :meth:`_deliver_or_count` does: the metrics taken from memory (the file was
        failing) are counted failed, not lost uncounted; the file's rows stay there, for
        the next round. A batch is settled in its order, the file's rows first: the
        unsettled are its last ones.
        """
        from_memory = min(unsettled, sum(1 for seq, _ in entries if seq is None))
        self.delivery.count(failed=from_memory)
        assert self.disk is not None
        self.disk.ack([])  # the batch is over: its metrics from memory no longer wait
        log.error(
            "Kaneda: %d metrics could not be delivered: %s",
            from_memory,
            self.delivery.describe(error),
        )
        self._idle()

    def _idle(self) -> None:
        with self._state:
            self._busy = False
            self._inflight = 0
            self._state.notify_all()

    def _while_retrying(self) -> bool:
        """Between a batch's retries: aggregated intervals are emitted on time; what a
        full buffer drops is said (and shown to the failure hook) as it happens, not once
        the store is back; and the wait is cut short while the buffer is half full or
        more: a long one would end in drops."""
        aggregator = self.aggregator
        if aggregator is not None:
            # The intervals go on while the store is down: each is folded and emitted on
            # time (one point per series and interval, stamped with its end), not merged
            # into one point stamped after the store is back.
            try:
                self._fold_and_emit(aggregator, waiting=True)
            except Exception as error:  # noqa: BLE001 - the batch's retries must go on
                log.error("Kaneda: emitting aggregated points failed: %r", error)
        self._report_drops()
        if self.disk is not None:
            self.disk.look_at_file()  # deleted or replaced while the backend is down?
        if self.queued_now() * 2 >= self.max_buffer:
            return True
        cap = self.max_buffer_bytes
        return cap is not None and self._bytes[0] * 2 >= cap

    def _report_drops(self) -> None:
        dropped = []
        while self._dropped:
            item = self._dropped.popleft()
            dropped.append(item)
            self._dropped_bytes -= self._size_of(item)
        total = self.delivery.snapshot().dropped
        if self._closed:
            total = min(total, self._dropped_before_close)  # not the buffer's doing after
        incidents = self.delivery.incidents
        if dropped or total > self._drops_seen:
            self._drops_seen = total
            reason = self._full_reason()
            # Closed, no more can be dropped for a full buffer: this total is the final one.
            incidents.dropped(total, reason, final=self._closed)
            if dropped:
                inside_gate(
                    self.delivery.tell_hook, self.delivery.to_metrics(dropped), BufferFull(reason)
                )
        elif incidents.drops_pending(total):
            # Drops stopped: the total, once REPEAT_AFTER has passed since the last line
            # (a pause between bursts of an outage is no end of it), or now at close.
            incidents.dropped(total, self._full_reason(), final=self._closed)

    def _full_reason(self) -> str:
        size = f"max_buffer={self.max_buffer} metrics"
        if self.max_buffer_bytes is not None:
            size += f", max_buffer_bytes={self.max_buffer_bytes}"
        return f"the buffer was full ({size}, overflow policy {self.overflow!r})"

    # -- flush, close, fork ------------------------------------------------------------

    def queued_now(self) -> int:
        """Metrics accepted and not yet handed to the worker."""
        if self.disk is not None:
            return self.disk.queued()
        return len(self.queue)

    def queued(self) -> int:
        """Metrics accepted and not yet delivered or given up on.

        With aggregation, calls not yet folded and series not yet emitted count too.
        """
        self.settle()
        folding = 0
        if self.aggregator is not None:
            folding = self.aggregator.pending() + self.aggregator.series()
        if self.disk is not None:
            return self.disk.queued() + folding
        with self._state:  # the worker takes a batch off the queue under it
            return len(self.queue) + self._inflight + folding

    def flush(self, timeout: float | None = None, *, stop: threading.Event | None = None) -> int:
        """Deliver everything queued; wait at most ``timeout`` seconds (None: no limit),
        and no longer once ``stop`` is set.

        Returns how many metrics are still waiting (0 when all were delivered or
        given up on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._worker is None:
            self._restart_worker()
        asked = 0
        if self.aggregator is not None:
            self._emits_asked += 1
            asked = self._emits_asked
        if _inside_kaneda(sys._getframe(1)):
            # A signal handler that interrupted this thread inside Kaneda, or a hook the
            # worker runs: the worker may need what this thread holds. No waiting.
            self._wake.set()
            return self.queued()
        with self._state:
            while self.queued_now() or self._busy or self._dropped or self._emits_done < asked:
                if self._exited.is_set():
                    break
                self._wake.set()
                remaining = 0.1 if deadline is None else deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    break
                self._state.wait(min(remaining, 0.1))
                if not self._settled and not self._busy:
                    break  # the backend is down; what is left stays on disk
            return self.queued()

    def close(self, timeout: float | None = None) -> int:
        """Flush, stop the worker and close the backend; wait at most ``timeout`` seconds.

        In memory, metrics still queued at the deadline are given up on (counted as
        failed and passed to the failure hook, which gets what is left of the deadline).
        With a disk buffer they stay on disk for the next process on the same path.
        Returns how many were left. Later calls are counted as dropped. Safe to call
        twice.
        """
        return self._close(timeout, waiting=not _inside_kaneda(sys._getframe(1)))

    #: Set for a Metrics let go of unclosed whose backend the application passed in (it
    #: may share it): its close leaves the backend open.
    keeps_backend = False

    def stop_retrying(self) -> None:
        """Closing: deliver what is queued with one try each, no waiting between retries."""
        self._stop.set()
        self._wake.set()

    def _close(self, timeout: float | None, *, waiting: bool) -> int:
        if self._finished:
            return self.queued()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._worker is None:
            self._restart_worker()  # for a last delivery
        if not self._closed:
            self._switch_to_closed()
        self._wake.set()
        if not waiting:
            # Called where the worker may need what this thread holds (see flush): later
            # calls are dropped now; the rest of the close is done at exit.
            return self.queued()
        # One close at a time (the application's, the exit's, a let-go Metrics'): each
        # would give up the same metrics and close the backend again.
        if not self._closing.acquire(timeout=-1 if timeout is None else timeout):
            # Another thread is closing, past this one's deadline (the application's
            # close() without a timeout, when SIGTERM ends the process): what is queued
            # is given up now, counted and hooked, as when a close runs out of time.
            items = self._take_queued()
            if items:
                self._give_up(items, "could be delivered", deadline)
            return self.queued() + len(items)
        try:
            if self._finished:
                return self.queued()
            return self._close_waiting(timeout, deadline)
        finally:
            self._closing.release()

    def _close_waiting(self, timeout: float | None, deadline: float | None) -> int:
        # Most of the time to drain; the rest, if it is still retrying, to give up.
        self._exited.wait(None if timeout is None else timeout * 0.75)
        if not self._exited.is_set():
            # Still retrying or stuck in the backend: stop waiting between retries.
            self._stop.set()
            self._wake.set()
            if deadline is not None:
                self._exited.wait(max(0.0, deadline - time.monotonic()))
        with self._state:
            # A worker still in a send finishes, when it returns, what is left to do
            # here (the backend's close, the calls its aggregation still holds); else
            # this thread does. Decided under the lock the worker ends under.
            alive = not self._exited.is_set()
            self._settles_after_close = alive
        stuck = self._inflight if alive else 0
        if stuck:
            log.warning(
                "Kaneda: close() ran out of time with %d metrics in a send to %s that has not "
                "finished; they are not counted as sent or failed (stats().queued) unless it "
                "finishes",
                stuck,
                type(self.delivery.backend).__name__,
            )
        if not alive and self.aggregator is not None:
            # Its last points were emitted: let go of its series and of calls left.
            late = self.aggregator.close()
            if late and self._final_round:
                self.delivery.count(dropped=late)  # raced close(), after its last round
            else:
                self._aggregated_calls_lost(late)
        if self.disk is not None:
            left = self.queued()
            if not alive:
                unwritten = list(self.disk.staged)
                self.disk.close()
                if unwritten:
                    self._give_up(unwritten, "could not be written to the disk buffer", deadline)
        else:
            # A worker still alive (stuck past the deadline, or between two batches) takes
            # its batches under the lock taken here: a batch it took is not given up too
            # (it was counted sent or failed, and hooked).
            items = self._take_queued()
            if items and not alive and self._handed_back:
                items = self._deliver_at_close(items, deadline)
            if items:
                self._give_up(items, "could be delivered", deadline)
            left = len(items) + stuck
        if not alive:
            self._close_backend_once(deadline)
        with self._state:
            self._finished = True
        # Still reset in a forked child (see _after_fork_in_child): its locks, which a
        # thread of the parent may hold at the fork (stats() takes one), made anew there.
        _live.discard(self)
        return left

    def _deliver_at_close(self, items: list[Any], deadline: float | None) -> list[Any]:
        """Deliver, in this thread and before ``deadline``, what the worker handed back
        because the interpreter is exiting (see _drain); returns what is left.

        The thread that runs the exit can still send where the worker cannot (a real
        thread started before gevent's monkey-patch: its hub's thread pool is refused
        at shutdown). Transient failures are tried again while there is time.
        """
        delivery = self.delivery
        left = items
        failures = 0
        while left:
            batch, left = left[: self.batch_size], left[self.batch_size :]
            kept = inside_gate(delivery.deliver, batch, retry=False, keep_transient=True)
            done = batch
            if kept:
                kept_at = set(kept)
                done = [item for i, item in enumerate(batch) if i not in kept_at]
                left = [batch[i] for i in kept] + left
                failures += 1
            if self.aggregator is not None:
                self.aggregator.settled(done)
            if not kept:
                continue
            pause = delivery.retry.delay(failures)
            out_of_time = deadline is not None and time.monotonic() + pause >= deadline
            if failures >= delivery.retry.attempts or out_of_time:
                break
            time.sleep(pause)
        return left

    def _take_queued(self) -> list[Any]:
        """Everything queued, taken under the worker's lock (it takes its batches under it).

        One by one from the left: a call racing this appends on the right meanwhile (it
        holds no lock), and clear() would lose it uncounted.
        """
        with self._state:
            popleft = self.queue.popleft
            return [popleft() for _ in range(len(self.queue))]

    def _aggregated_calls_lost(self, late: int) -> None:
        """Calls made before close() whose point could not be delivered in time."""
        if late:
            self.delivery.count(failed=late)
            log.error(
                "Kaneda: %d aggregated calls not delivered: close() ran out of time "
                "before their point was sent to %s",
                late,
                type(self.delivery.backend).__name__,
            )

    def _close_backend_once(self, deadline: float | None) -> None:
        with self._state:
            if self._backend_closed:
                return
            self._backend_closed = True
        callers = self._callers
        # Without a worker, once no caller's thread is in a send.
        in_use = None if callers is None else callers._lock
        _close_backend(self.delivery, deadline, in_use, keep_backend=self.keeps_backend)

    def settle(self) -> None:
        """Count what calls that raced close() added after it: dropped, as later calls.

        A call that was past its look at the Metrics' state when close() began adds its
        metric after close() took the last of the queue (or the last calls to fold), where
        nothing delivers it. Settled when the counts are read, so it is counted once.
        """
        if not self._finished or self.disk is not None:
            return
        with self._state:
            late = self._take_queued()
            aggregator = self.aggregator
            if aggregator is not None and self._exited.is_set():
                late_calls = aggregator.pending()
                if late_calls:
                    aggregator.close()
                    late.extend([None] * late_calls)
        for item in late:
            self._submit_after_close(item)

    def _give_up(self, items: list[Any], what: str, deadline: float | None) -> None:
        """Count ``items`` as failed and tell the hook, within what is left of ``deadline``."""
        metrics = self.delivery.to_metrics(items)
        error = BufferFull(f"Kaneda was closed before {len(items)} metrics {what}")
        lost = 0 if self.aggregator is None else self.aggregator.lost(items)
        self.delivery.count(failed=len(metrics), folded_lost=lost)
        self.delivery.incidents.permanent(len(metrics), "not delivered", str(error))
        _within(deadline, "kaneda-hook", self.delivery.tell_hook, metrics, error)

    def _after_fork_in_child(self) -> None:
        self.queue.clear()
        if self.aggregator is not None:
            self.aggregator.after_fork_in_child()
        self._dropped.clear()
        self._dropped_bytes = 0
        self._drops_seen = 0
        self._bytes[0] = 0
        if self.disk is not None:
            self.disk.after_fork_in_child()
        self._forwarding = threading.Lock()
        self._handed_back = False
        if not self._closed and self._callers is not None:
            # Its calls deliver in the caller's thread (no worker could be had), the
            # child's as the parent's: nothing to start.
            self._init_threading(start=False)
            return
        if not self._closed:
            # No worker yet: the child's first call starts it (see start_at_first_call).
            # One that never reports starts none and has none to end at its exit.
            self._forked = True
            self._init_threading(start=False)
            if self.aggregator is not None:
                self.aggregator.forget_series()  # each call's first is admitted again
            self._wait_for_a_call()
            self._tell_fork_listeners(True)
            return
        # Closed by the parent (maybe still closing, in a thread the child does not have):
        # nothing of it is the child's to deliver. Its locks anew, no worker, finished.
        self._state = threading.Condition(threading.RLock())
        self._closing = threading.Lock()
        self._bytes_lock = threading.RLock()
        self._exited = threading.Event()
        self._exited.set()
        self._busy = False
        self._inflight = 0
        self._finished = True
        self._backend_closed = True  # the parent's to close
        _live.discard(self)


def _within(deadline: float | None, name: str, call: Callable[..., None], *args: Any) -> None:
    """Run ``call(*args)``, waiting for it until ``deadline`` at most (None: no limit).

    Past the deadline it goes on in a daemon thread of its own: close(timeout) keeps its
    deadline however slow the failure hook or the backend's close is.
    """
    if deadline is None:
        inside_gate(call, *args)
        return
    try:
        runner = start_thread(inside_gate, name, call, *args)
    except ThreadStartError:  # no thread to be had: done here, past the deadline if slow
        inside_gate(call, *args)
        return
    runner.join(max(0.0, deadline - time.monotonic()))


def _close_backend(
    delivery: Delivery,
    deadline: float | None,
    in_use: threading.Lock | None = None,
    *,
    keep_backend: bool = False,
) -> None:
    """Close the backend within ``deadline`` (once ``in_use`` is free, if given; not at
    all if ``keep_backend``); what it raises is logged, never raised."""

    def close() -> None:
        try:
            if in_use is None:
                _close_now(delivery, keep_backend)
            else:
                with in_use:
                    _close_now(delivery, keep_backend)
        except Exception as error:  # noqa: BLE001 - closing must not raise into the app
            log.error("Kaneda: closing the backend failed: %s", delivery.describe(error))

    _within(deadline, "kaneda-close", close)


def close_made_backend(dispatcher: SyncDispatcher) -> None:
    """Close the backend a delivering-in-the-caller's-thread Metrics made, once the
    application let go of it unclosed, or at exit (a backend passed in is left open).

    Called by the garbage collector, in whatever thread: the Metrics is gone, so nothing
    else sends on the backend it made, and its close takes no lock a thread could hold.
    """
    delivery = dispatcher.delivery
    if dispatcher._closed or not delivery.owns_backend:
        return
    try:
        _close_now(delivery, keep_backend=False)
    except Exception as error:  # noqa: BLE001 - a collection must not raise
        log.error("Kaneda: closing the backend failed: %s", delivery.describe(error))


def _close_now(delivery: Delivery, keep_backend: bool) -> None:
    delivery.incidents.close()  # the failures held back, told: totals final
    if not keep_backend:
        with delivery.use:  # not while another Metrics of the same backend sends
            delivery.backend.close()


def item_bytes(item: Any) -> int:
    """About how much memory one queued metric holds (the tuple, strings, tags, value)."""
    getsizeof = sys.getsizeof
    name, _kind, value, tags = item[:4]
    size = 120 + getsizeof(name)  # the tuple, the timestamp and the id slot
    if isinstance(tags, dict):
        size += getsizeof(tags) + sum(getsizeof(k) + getsizeof(v) for k, v in tags.items())
    else:
        size += getsizeof(tags) + sum(getsizeof(t) for t in tags)
    return size + _value_bytes(value, 0)


def _value_bytes(value: Any, depth: int) -> int:
    if isinstance(value, dict) and depth < 8:
        return sys.getsizeof(value) + sum(
            sys.getsizeof(k) + _value_bytes(v, depth + 1) for k, v in value.items()
        )
    if isinstance(value, (list, tuple)) and depth < 8:
        return sys.getsizeof(value) + sum(_value_bytes(v, depth + 1) for v in value)
    return sys.getsizeof(value)


#: Modules whose code holds what the worker needs: the queue's state and wake-up, the
#: counters' lock, the disk buffer's file.
_HOLDERS = frozenset((__name__, "kaneda_core.delivery", "kaneda_core.disk_buffer"))


def _inside_kaneda(frame: FrameType | None) -> bool:
    """Whether ``frame`` or one of its callers runs Kaneda code that may hold a lock.

    True in a signal handler that interrupted its thread inside Kaneda, and in a hook
    the worker thread runs: waiting there for the worker could wait for ever. Looked
    up by flush() and close() only, never by a reporting call.
    """
    while frame is not None:
        if frame.f_globals.get("__name__") in _HOLDERS:
            return True
        frame = frame.f_back
    return False


_live: weakref.WeakSet[BatchingDispatcher] = weakref.WeakSet()
_exit_hook_installed = False


_Listener = TypeVar("_Listener", bound=Callable[..., None])


def _held(listener: _Listener) -> Callable[[], _Listener | None]:
    """``listener``, weakly if it is a bound method: a dispatcher (kept alive by its
    worker thread) must not keep the object it serves from being collected."""
    if isinstance(listener, MethodType):
        return weakref.WeakMethod(listener)
    return lambda: listener


def _track(dispatcher: BatchingDispatcher) -> None:
    # The closer is started with the first worker (see start_at_first_call), not here.
    global _exit_hook_installed
    if not _exit_hook_installed:
        at_exit(_close_all_at_exit)
        _exit_hook_installed = True
    else:
        # The first was made outside the main thread (no handler then), or a closed
        # asyncio loop put SIGTERM's default back: this one, maybe in the main thread, sees.
        _deliver_on_terminate()
    _live.add(dispatcher)


#: Set once the exit callback has run: a worker started after it would deliver nothing.
_exit_ran = False


def exit_callback_ran() -> bool:
    """Whether Kaneda's exit callback ran: a Metrics made now cannot rely on a worker."""
    return _exit_ran


def _close_all_at_exit() -> None:
    global _exit_ran
    _exit_ran = True
    dispatchers = list(_live)
    if not _inside_kaneda(sys._getframe(1)):
        _close_each(dispatchers, waiting=True)
        tell_totals()  # the failures of Metrics let go of, held back to be told together
        return
    # A SIGTERM handler that interrupted the main thread inside Kaneda: most often parked
    # in flush() or close(), which hold no lock while they wait. A thread of Kaneda's
    # closes and waits, so that this handler never waits on a lock the code it
    # interrupted may hold; past the exit timeouts, what is left is given up here.
    try:
        closer = start_thread(_close_each, "kaneda-exit", dispatchers, True)
    except ThreadStartError as error:
        log.error("Kaneda: %s; what is queued is given up", error)
    else:
        closer.join(max((dispatcher.exit_timeout for dispatcher in dispatchers), default=0) + 0.5)
        if not closer.is_alive():
            return
    _close_each([d for d in dispatchers if not d._finished], waiting=False)


def _close_each(dispatchers: list[BatchingDispatcher], waiting: bool) -> None:
    # Every worker told first: they deliver side by side, and each has its exit_timeout
    # from now. One after the other, an exit waited for the sum (four Metrics with a
    # store down: 16 s, past the 10 s a container is given to stop).
    started = time.monotonic()
    for dispatcher in dispatchers:
        dispatcher._close(None, waiting=False)
    for dispatcher in dispatchers:
        remaining = max(0.0, started + dispatcher.exit_timeout - time.monotonic())
        try:
            left = dispatcher._close(remaining, waiting=waiting)
        except Exception:  # noqa: BLE001 - the others are closed all the same
            log.exception("Kaneda: closing a Metrics at exit failed")
            continue
        if left:
            where = "kept on disk" if dispatcher.disk is not None else "not delivered"
            log.error("Kaneda: %d metrics %s at exit", left, where)
