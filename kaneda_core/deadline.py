"""Bounding a whole request in time, not each read of it.

A socket timeout bounds one read: a server that drips a byte just before each timeout
holds a request open for ever. :func:`deadline` runs a block of code under a watchdog:
if the block is still running when its time is up, the watchdog calls ``abort`` from its
own thread (a backend shuts its socket down there), and the blocked read fails at once.

One daemon thread serves every deadline in the process; arming and disarming one costs
a heap push and a flag, not a thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .forking import ThreadStartError, reinit_after_fork, start_thread

log = logging.getLogger("kaneda")

Abort = Callable[[], None]


class _Entry:
    __slots__ = ("abort", "active", "expired")

    def __init__(self, abort: Abort) -> None:
        self.abort = abort
        self.active = True
        self.expired = False


class Watchdog:
    """Calls the abort callback of every deadline that expires while still armed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()
        self._condition = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._unguarded_said = False

    @contextmanager
    def guard(self, seconds: float, abort: Abort) -> Iterator[_Entry]:
        """Run the block; if it outlives ``seconds``, call ``abort`` from the watchdog."""
        entry = _Entry(abort)
        when = time.monotonic() + seconds
        if self._thread is None:
            entry.active = self._start()
        with self._condition:
            if entry.active:
                heapq.heappush(self._heap, (when, next(self._order), entry))
                if self._heap[0][2] is entry:
                    self._condition.notify()
        try:
            yield entry
        finally:
            entry.active = False

    def _start(self) -> bool:
        """Start the watchdog's thread; False if none can be had (the block is unguarded).

        Not under the condition: a thread that is a greenlet of the caller's (gevent
        patched in after a fork, where this lock was made a real one) runs at once, and
        would wait for ever for a lock its own OS thread holds. Two callers may start
        one each: both serve the heap.
        """
        try:
            thread = start_thread(self._run, "kaneda-deadline")
        except ThreadStartError as error:
            # A thread limit reached: the block runs unguarded (its socket timeouts
            # still hold), and the next guard tries again.
            if not self._unguarded_said:
                self._unguarded_said = True
                log.warning("Kaneda: %s; requests run without their deadline", error)
            return False
        self._thread = thread
        return True

    def _run(self) -> None:
        while True:
            expired: list[_Entry] = []
            with self._condition:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)  # finished in time: forget it
                if not self._heap:
                    self._condition.wait()
                    continue
                when = self._heap[0][0]
                now = time.monotonic()
                if when > now:
                    self._condition.wait(when - now)
                    continue
                while self._heap and self._heap[0][0] <= now:
                    entry = heapq.heappop(self._heap)[2]
                    if entry.active:
                        expired.append(entry)
            for entry in expired:
                entry.expired = True
                try:
                    entry.abort()
                except Exception as error:  # noqa: BLE001 - the watchdog must live on
                    log.debug("Kaneda: aborting a request past its deadline failed: %s", error)


_watchdog = Watchdog()


@reinit_after_fork
def _new_watchdog_in_child() -> None:
    # The parent's watchdog thread does not exist here and its lock may be held.
    global _watchdog
    _watchdog = Watchdog()


#: The slowest a request's body may travel and be taken in, in bytes per second, beyond
#: the timeout: a metric the check accepted must be storable within its request's bound.
MIN_BYTES_PER_SECOND = 1_000_000


def request_seconds(timeout: float, size: int) -> float:
    """How long a request of ``size`` bytes may take: ``timeout``, plus a second per MB.

    A backend's timeout says how long to wait for a server that does not answer; a
    large request (a long event, a batch of them) needs longer than a small one however
    well the server answers. Without the allowance such a request fails at every retry,
    and takes the metrics sent with it along.
    """
    return timeout + size / MIN_BYTES_PER_SECOND


@contextmanager
def deadline(seconds: float, abort: Abort) -> Iterator[_Entry]:
    """``with deadline(5, sock_shutdown) as d:`` — ``d.expired`` says whether it fired."""
    with _watchdog.guard(seconds, abort) as entry:
        yield entry
