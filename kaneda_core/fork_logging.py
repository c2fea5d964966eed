"""No forked child inherits a log stream caught in the middle of a write.

A log handler writes to its stream under the stream's own lock (a buffered file's, in
CPython), and a fork copies that lock as it is: held, if another thread was writing at
that instant. The child's first log line on that stream then waits for ever. Python's
``logging`` makes each *handler's* lock anew in the child, not the stream's.

Kaneda adds a thread to processes that fork (a gunicorn or Celery master, a
``multiprocessing`` parent), and that thread logs delivery trouble. So before each fork
the forking thread takes every handler's lock, which waits for a write in progress to
end and keeps new ones from starting, and gives the locks back once the fork is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator


def hold_handlers(timeout: float) -> list[logging.Handler]:
    """Take the lock of every handler a logger has, waiting ``timeout`` seconds at most.

    A handler whose writer is stuck (a pipe nobody reads) is left as it is once the
    time is up: the fork goes on. Returns the handlers held, for :func:`release_handlers`
    (in the parent) or :func:`renew_handlers` (in the child).
    """
    deadline = time.monotonic() + timeout
    held = []
    for handler in _handlers():
        lock = handler.lock
        if lock is None:
            continue
        try:
            # Free, as it nearly always is; else wait for the write in progress.
            taken = lock.acquire(False) or lock.acquire(
                timeout=max(0.0, deadline - time.monotonic())
            )
        except Exception:  # noqa: BLE001 - a lock of another kind: leave that handler be
            continue
        if taken:
            held.append(handler)
    return held


def release_handlers(held: list[logging.Handler]) -> None:
    """Give back, in the parent, the locks :func:`hold_handlers` took."""
    while held:
        lock = held.pop().lock
        if lock is not None:
            lock.release()


def renew_handlers(held: list[logging.Handler]) -> None:
    """Give each held handler a new lock, in the child (``logging`` does this for most)."""
    while held:
        held.pop().createLock()


def _handlers() -> Iterator[logging.Handler]:
    """Every handler attached to a logger, and the one used when none is (lastResort)."""
    loggers = [logging.root, *list(logging.Logger.manager.loggerDict.values())]
    seen: set[int] = set()
    for logger in loggers:
        handlers = getattr(logger, "handlers", None)  # placeholders have none
        if not handlers:
            continue  # most loggers: a library's getLogger(__name__)
        for handler in list(handlers):
            if id(handler) not in seen:
                seen.add(id(handler))
                yield handler
    last = logging.lastResort
    if last is not None and id(last) not in seen:
        yield last
