"""A fork waits until no thread is inside a backend or a plugin's hook.

A backend's ``send`` runs a client library, which may import a module for the first
time (Celery's, RQ's and RethinkDB's clients do at their first send), resolve a host
name or hold a TLS library's lock. A fork copies all of that as it is at that instant:
a module another thread was importing stays locked in the child for ever, and the
child's own import of it never returns. So Kaneda's threads enter :data:`gate` around
every call into a backend or a hook, and a fork, before it happens, waits for the
threads inside to leave (``forking.HOLD_TIMEOUT`` at most) while keeping others from
entering. (A synchronous delivery, in the application's thread, is waited for through
its dispatcher's lock, which it holds anyway.)

Entering costs two list operations and a flag test: no lock is taken unless a fork is
waiting.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from threading import get_ident
from typing import Any, TypeVar

_T = TypeVar("_T")


class ForkGate:
    """Counts the threads inside; :meth:`hold_for_fork` waits for them to leave."""

    def __init__(self) -> None:
        #: The ident of each thread inside, once per entry (a hook may send, nested).
        self._inside: list[int] = []
        #: Threads a fork gave up waiting for (a send to a server that does not answer):
        #: later forks do not wait for them again until they have left.
        self._stuck: set[int] = set()
        self._closed = False
        self._open = threading.Event()
        self._open.set()
        #: Forks in progress (two threads may fork at once): the gate opens after the last.
        self._forks = 0
        self._forks_lock = threading.Lock()

    def enter(self) -> None:
        """Enter, first waiting for a fork in progress to be done. Pair with :meth:`leave`."""
        me = get_ident()
        while True:
            self._inside.append(me)
            if not self._closed or self._inside.count(me) > 1:
                return  # (nested: the fork waits for the outer entry to be left anyway)
            # A fork is waiting for the threads inside: step back until it is done.
            self._inside.remove(me)
            self._open.wait()

    def leave(self) -> None:
        """Leave (the calling thread's latest entry)."""
        me = get_ident()
        self._inside.remove(me)
        if self._stuck and me not in self._inside:
            self._stuck.discard(me)

    def entered(self) -> bool:
        """Whether the calling thread is inside."""
        return get_ident() in self._inside

    @contextlib.contextmanager
    def stepped_out(self) -> Iterator[None]:
        """Leave for the duration (a backoff), if the calling thread is inside."""
        inside = self.entered()
        if inside:
            self.leave()
        try:
            yield
        finally:
            if inside:
                self.enter()

    def hold_for_fork(self, timeout: float) -> bool:
        """Close the gate and wait up to ``timeout`` seconds for the other threads to leave.

        The forking thread's own entries (a hook that forks) are not waited for. A thread
        stuck inside (a server that never answers) is left there once the time is up, and
        later forks do not wait for it again until it leaves: a pool of 32 processes
        started during an outage waits once, not 32 times.
        """
        with self._forks_lock:
            self._forks += 1
            self._open.clear()
            self._closed = True
        me = get_ident()
        deadline = time.monotonic() + timeout
        while True:
            stuck = self._stuck
            waiting = {ident for ident in list(self._inside) if ident != me} - stuck
            if not waiting:
                break
            if time.monotonic() >= deadline:
                stuck.update(waiting)
                break
            time.sleep(0.001)  # forks are rare: polling keeps enter() and leave() lock-free
        return True

    def release_after_fork(self) -> None:
        """Open the gate again, in the parent, once no other fork is in progress."""
        with self._forks_lock:
            self._forks = max(0, self._forks - 1)
            if not self._forks:
                self._closed = False
                self._open.set()

    def after_fork_in_child(self) -> None:
        """The child has one thread, the forking one: only its own entries remain."""
        me = get_ident()
        self._inside = [ident for ident in self._inside if ident == me]
        self._stuck = set()
        self._closed = False
        self._open = threading.Event()
        self._open.set()
        self._forks = 0
        self._forks_lock = threading.Lock()


#: The one gate of the process: what Kaneda's threads do in backends and hooks goes through it.
gate = ForkGate()


def inside_gate(call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``call(*args, **kwargs)`` inside :data:`gate` (a delivery, a backend's close, a hook)."""
    gate.enter()
    try:
        return call(*args, **kwargs)
    finally:
        gate.leave()
