"""Timestamps that no two reporting processes of a host share.

Stores such as InfluxDB keep one point per series and time: a second point with the same
timestamp overwrites the first. Within a process two calls are hundreds of nanoseconds
apart, so their clock readings differ; two processes on one host, though, read the same
nanosecond now and then (more often on a coarse clock), and one of their points is lost.

So the last two digits of every metric's nanosecond timestamp hold the reporting
process's *slot*, a number from 0 to 99 no other live process on the host holds (an
exclusive lock on a file in the temporary folder, released by the operating system
when its process ends, however it ends). Timestamps keep a precision of 100 ns. The
stamp is a function of the call's clock reading and the slot of the process that made
it, applied once, so a batch sent again (a retry, a disk buffer delivered after a
restart) carries the same timestamps and overwrites itself instead of duplicating.
A forked child takes a slot of its own. A 101st process on one host shares a slot, and
says so in a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os

from .forking import reinit_after_fork

log = logging.getLogger("kaneda")

SLOTS = 100

#: This process's slot once taken (the reporting calls read it directly: it is on the
#: hot path); 0 until then.
slot = 0
_taken = False
_lock_fd: int | None = None


def process_slot() -> int:
    """This process's slot (0 to 99), taken on first use."""
    global slot, _taken
    if not _taken:
        slot = _take_slot()
        _taken = True
    return slot


def stamp(ns: int) -> int:
    """The timestamp written for a call that read ``ns`` on the clock, in this process."""
    return ns - ns % SLOTS + process_slot()


def _take_slot() -> int:
    global _lock_fd
    import fcntl  # here, not at import: import kaneda_core stays cheap
    import tempfile

    start = os.getpid() % SLOTS  # most processes find their slot free at the first try
    folder = "the temporary folder"
    try:
        # gettempdir() raises when no folder takes a file (a full or read-only disk).
        folder = os.path.join(tempfile.gettempdir(), f"kaneda-slots-{os.getuid()}")
        os.makedirs(folder, mode=0o700, exist_ok=True)
        for step in range(SLOTS):
            slot = (start + step) % SLOTS
            fd = os.open(os.path.join(folder, f"{slot:02d}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _lock_fd = fd
            return slot
    except OSError as error:
        log.warning(
            "Kaneda: no timestamp slot in %s (%s); using the process id: two processes of "
            "this host may then write a point with the same timestamp",
            folder,
            error,
        )
        return start
    log.warning(
        "Kaneda: more than %d processes report from this host: two of them share a timestamp "
        "slot, and a point of each may carry the same timestamp",
        SLOTS,
    )
    return start


@reinit_after_fork
def _new_slot_in_child() -> None:
    # flock belongs to the open file, which the child shares with its parent: let go of
    # the child's copy (the parent keeps its lock) and take a slot of its own, now, so
    # that the child's first call is stamped with it.
    global _taken, _lock_fd
    if _lock_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_lock_fd)
    _lock_fd = None
    if _taken:
        _taken = False
        process_slot()
