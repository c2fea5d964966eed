"""A backend object shared by several Metrics: one send at a time, whichever sends.

A backend holds one connection, socket or client, used by one thread at a time. Each
Metrics serializes its own sends; an application that passes one backend object to
several (kaneda 1.0's ``Metrics(backend=BACKEND)`` in each request, or two Metrics
with different options) has their threads send on that connection at once, and it is
garbled: a request half written by one thread and read by another ("Request-sent",
"NotConnected"). So every Metrics using a backend object takes the same lock, its
:func:`use_of`, around each send and its close.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from .forking import reinit_after_fork

if TYPE_CHECKING:
    from .backend import Backend

_uses: weakref.WeakKeyDictionary[Backend, threading.RLock] = weakref.WeakKeyDictionary()
_by_id: dict[int, threading.RLock] = {}  # backends that cannot be weakly keyed (rare)
_lock = threading.Lock()


def use_of(backend: Backend) -> threading.RLock:
    """The lock every Metrics takes to use ``backend``: the same for the same object.

    Reentrant: a failure hook, or a signal handler, that reports in the thread of a
    send through another Metrics of the same backend gets through.
    """
    with _lock:
        try:
            use = _uses.get(backend)
            if use is None:
                use = _uses[backend] = threading.RLock()
        except TypeError:  # unhashable, or no weak reference: kept for the process
            use = _by_id.setdefault(id(backend), threading.RLock())
        return use


@reinit_after_fork
def _new_locks_in_child() -> None:
    # A thread of the parent may have held any of them at the fork: the child's
    # deliveries take new ones (see Delivery._after_fork_in_child), shared as before.
    global _lock
    _lock = threading.Lock()
    _uses.clear()
    _by_id.clear()
