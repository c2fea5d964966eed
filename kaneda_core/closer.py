"""Closing the Metrics an application let go of without closing them.

A :class:`~kaneda_core.Metrics` collected unclosed (one made per request, kaneda 1.0's
habit) is handed to one thread of Kaneda's, the closer, which delivers what it queued,
ends its worker and closes its backend. Each is closed from the moment it arrives, with
its own ``exit_timeout``; while more than :data:`MAX_CLOSING` are being closed at once
(a store that is down, a Metrics per request), the next ones stop retrying at once, so
that worker threads do not pile up. Their failures are logged together, folded as one
delivery's are, and the application is told, once in a while, that it lets Metrics go.
"""

from __future__ import annotations

import logging
import threading
import time
from _queue import Empty, SimpleQueue
from typing import TYPE_CHECKING

from .forking import ThreadStartError, reinit_after_fork, start_thread, threads_are_green
from .incidents import REPEAT_AFTER, SharedIncidentLog

if TYPE_CHECKING:
    from .dispatch import BatchingDispatcher

log = logging.getLogger("kaneda")

#: Metrics let go of that are closed with their whole ``exit_timeout`` at once; past
#: this many, the next ones are not retried (each one closing keeps its worker thread).
MAX_CLOSING = 32
#: How many Metrics are let go of unclosed before the application is told (then at most
#: every ``REPEAT_AFTER`` seconds): one, at the end of a script, is no habit.
TELL_AFTER = 10

#: Dispatchers whose Metrics the application let go of, unclosed, for the closer thread.
#: A SimpleQueue: putting takes no lock a collection could interrupt (see let_go).
_let_go: SimpleQueue[BatchingDispatcher] = SimpleQueue()
_closer: threading.Thread | None = None
_starting = threading.Lock()
#: One log per backend name for the failures of every Metrics let go of (see _Closer).
_logs: dict[str, SharedIncidentLog] = {}
_logs_lock = threading.Lock()


def let_go(dispatcher: BatchingDispatcher) -> None:
    """Close ``dispatcher`` soon: its :class:`~kaneda_core.Metrics` was collected unclosed.

    Called by the garbage collector, in whatever thread it runs in, maybe inside code
    that holds a lock of Kaneda's: it only hands the dispatcher to Kaneda's closer
    thread, which delivers what is queued, ends the worker and closes the backend (an
    application that makes a Metrics per request and never closes it would otherwise
    keep a thread, and the backend's connections, for each).
    """
    _let_go.put(dispatcher)


def closer_started() -> bool:
    """Whether this process has its closer thread (it is started with the first worker)."""
    return _closer is not None


def start_closer() -> None:
    """Start the thread that closes what is let go of; without one, they wait for it."""
    # Not waited for: another thread is starting it (or this one, interrupted there by a
    # signal handler whose first call lands here).
    if not _starting.acquire(blocking=False):
        return
    try:
        if _closer is None:
            _start_closer()
    finally:
        _starting.release()


def _start_closer() -> None:
    global _closer, _let_go
    if threads_are_green() and type(_let_go) is SimpleQueue:
        # The closer, a greenlet, waiting in the C queue's get() would hold up every
        # greenlet of the process: the patched queue's waits as they do.
        import queue

        green: SimpleQueue[BatchingDispatcher] = queue.SimpleQueue()
        while not _let_go.empty():
            green.put(_let_go.get())
        _let_go = green
    try:
        _closer = start_thread(_Closer(_let_go).run, "kaneda-closer")
    except ThreadStartError as error:
        # Tried again by the next worker started; those let go of meanwhile are closed
        # then, or at exit.
        log.warning("Kaneda: %s; a Metrics let go of unclosed is closed later", error)


def tell_totals() -> None:
    """Log the failure totals the let-go Metrics' log holds back (at exit)."""
    with _logs_lock:
        logs = list(_logs.values())
        _logs.clear()
    for shared in logs:
        shared.end()


def _shared_log(backend_name: str) -> SharedIncidentLog:
    with _logs_lock:
        shared = _logs.get(backend_name)
        if shared is None:
            shared = _logs[backend_name] = SharedIncidentLog(backend_name)
        return shared


class _Closer:
    """The closer thread's loop: each dispatcher closed from the moment it arrives."""

    def __init__(self, arrivals: SimpleQueue[BatchingDispatcher]) -> None:
        self.arrivals = arrivals
        # Each dispatcher being closed: when to stop retrying (None: told), its deadline.
        self.closing: dict[BatchingDispatcher, tuple[float | None, float]] = {}
        self.let_go = 0  # since the last time the application was told
        self.told_at = -REPEAT_AFTER

    def run(self) -> None:
        while True:
            try:
                self._take_arrivals()
                self._advance()
            except Exception:
                log.exception("Kaneda: closing a Metrics let go of failed")

    def _take_arrivals(self) -> None:
        now = time.monotonic()
        times = self.closing.values()
        wait = min((stop if stop is not None else end for stop, end in times), default=None)
        # Idle, the shared log is kept (not told and made anew): Metrics let go of one at
        # a time, a second apart, with the store down, each got a line of its own. What
        # it holds back is told when delivery works again, or at exit.
        if wait is not None:
            wait = min(wait, now + 0.1)  # a worker that ended: its backend closed soon
        try:
            dispatcher = self.arrivals.get(timeout=None if wait is None else max(0.0, wait - now))
        except Empty:
            return
        self._begin(dispatcher)
        while not self.arrivals.empty():
            self._begin(self.arrivals.get())

    def _begin(self, dispatcher: BatchingDispatcher) -> None:
        now = time.monotonic()
        self._count_let_go(now)
        delivery = dispatcher.delivery
        delivery.incidents.close()  # its own totals told; from now on, told together
        delivery.incidents = _shared_log(delivery.incidents.backend_name)
        # A backend the application passed in may serve its other Metrics: left open.
        dispatcher.keeps_backend = not delivery.owns_backend
        dispatcher._close(None, waiting=False)  # later calls dropped; a last delivery
        timeout = dispatcher.exit_timeout
        stop_at: float | None = now + timeout * 0.75  # as close() does: see _close_waiting
        if len(self.closing) >= MAX_CLOSING:
            dispatcher.stop_retrying()
            stop_at = None
        self.closing[dispatcher] = (stop_at, now + timeout)

    def _advance(self) -> None:
        now = time.monotonic()
        left = {"not delivered": 0, "kept on disk": 0}
        closed = 0
        for dispatcher, (stop_at, end) in list(self.closing.items()):
            if dispatcher._exited.is_set() or now >= end:
                del self.closing[dispatcher]
                closed += 1
                where = "kept on disk" if dispatcher.disk is not None else "not delivered"
                left[where] += dispatcher._close(max(0.0, end - now), waiting=True)
            elif stop_at is not None and now >= stop_at:
                dispatcher.stop_retrying()
                self.closing[dispatcher] = (None, end)
        for where, metrics in left.items():
            if metrics:
                log.error(
                    "Kaneda: %d metrics %s when %d Metrics let go of were closed",
                    metrics,
                    where,
                    closed,
                )

    def _count_let_go(self, now: float) -> None:
        self.let_go += 1
        if self.let_go < TELL_AFTER or now - self.told_at < REPEAT_AFTER:
            return
        log.warning(
            "Kaneda: %d Metrics were let go of without close() since the last line about "
            "it (a Metrics made per request?). Each one starts a worker thread and opens "
            "its own connections to the backend: make one Metrics and share it (it is "
            "safe to use from every thread), or close() each one",
            self.let_go,
        )
        self.let_go = 0
        self.told_at = now


@reinit_after_fork
def _no_closer_in_child() -> None:
    global _let_go, _closer, _logs_lock, _starting
    inherited, _let_go, _closer = _let_go, SimpleQueue(), None
    _logs_lock, _starting = threading.Lock(), threading.Lock()
    # Let go of by the parent and not yet closed: the child's copies are let go of too.
    # Their closer is started with the child's first worker, not here (no thread is
    # started at the fork: see BatchingDispatcher.start_at_first_call); their queues
    # were emptied, so at exit at the latest. Those the parent's closer was closing are
    # closed at the child's exit (they are still live).
    while not inherited.empty():
        _let_go.put(inherited.get())
    _logs.clear()
