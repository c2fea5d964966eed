"""Timestamps that no two reporting calls of a host share.

Stores such as InfluxDB keep one point per series and time: a second point with the same
timestamp overwrites the first. Within a process two calls are hundreds of nanoseconds
apart, so on a clock that reads in nanoseconds (Linux's) their readings differ; two
processes on one host, though, read the same nanosecond now and then, and one of their
points is lost.

Some clocks read in coarser steps: microseconds on macOS, about 16 ms for Windows'
``time.time_ns()`` before Python 3.13. There, calls of one process read the same value
many times over. :data:`time_ns` is the clock Kaneda stamps with: the system's own where
its successive readings never repeat, else readings spread within the clock's step
(see :func:`spread_clock`), so that each call of a process still has a time of its own.

So the last two digits of every metric's nanosecond timestamp hold the reporting
process's *slot*, a number from 0 to 99 no other live process on the host holds (an
exclusive lock on a file, released by the operating system when its process ends,
however it ends). The lock files are in one folder that every process and every user of
the host shares: ``/dev/shm/kaneda-slots`` (which systemd's PrivateTmp, a /tmp of each
service's own, leaves shared), else ``kaneda-slots`` in the temporary folder. The folder
is world-writable and sticky, as /tmp is, each lock file readable by all, and a lock is
taken on a read-only descriptor: a process locks a file another user made, and one
to which the folder is read-only locks the files already there. A process that cannot
use the shared folder at all takes a slot in the temporary folder, and says so.
Timestamps keep a precision of 100 ns. The
stamp is a function of the call's clock reading and the slot of the process that made
it, applied once, so a batch sent again (a retry, a disk buffer delivered after a
restart) carries the same timestamps and overwrites itself instead of duplicating.
A forked child takes a slot of its own. A 101st process on one host shares a slot, and
says so in a warning.

A wall clock stepped back (by NTP, or a virtual machine resumed) reads again times this
process has stamped. The calls keep the last time given (:data:`latest`) and never give
it again: after a step of less than :data:`HOLD_NS` a call is stamped just past it until
the clock passes it; after a longer one, with the clock's own time in a slot taken for
the purpose, the former slot held until the clock passes its last time (see
:func:`after_step_back`).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from .forking import reinit_after_fork

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger("kaneda")

SLOTS = 100

#: This process's slot once taken (the reporting calls read it directly: it is on the
#: hot path); 0 until then.
slot = 0
_taken = False
_lock_fd: int | None = None
#: The lock file held, once a slot is taken.
_lock_path: str | None = None

#: The last timestamp given in this process: the calls read and set its item (quicker
#: than a module attribute), and go to after_step_back for a time not past it.
latest = [0]

#: A step back shorter than this is held (calls stamped just past the last time given,
#: for as long as the step); a longer one takes another slot. Also what emitting a
#: large aggregated interval takes ahead (see reserve).
HOLD_NS = 100_000_000

#: Slots given up after a step back, each with the last time stamped in it: held until
#: the clock passes that time (another process taking one would stamp those times).
_retired: list[tuple[int, int]] = []
#: Held by the call that works out a time after a step back; the thread holding it.
_changing = threading.Lock()
_changer: int | None = None
#: The last time given by holding (under _changing): holds never repeat one another.
_held = 0
#: No slot was free until then (monotonic seconds): hold meanwhile, without looking.
_no_slot_until = 0.0

#: Tried first: a memory file system no PrivateTmp makes private to a service.
SHARED_MEMORY = "/dev/shm"


#: Readings of the clock that tell whether it repeats itself (a few microseconds).
PROBE_READINGS = 200

#: The step assumed for a clock that did not move while it was probed: Windows' tick.
STILL_CLOCK_STEP_NS = 15_625_000


def clock_step_ns(clock: Callable[[], int], readings: int = PROBE_READINGS) -> int:
    """The step of ``clock`` in nanoseconds where successive readings repeat, else 0.

    A clock that reads in nanoseconds never gives one value twice in a row (a reading
    takes tens of them); a coarse one gives the same value until its next step.
    """
    values = [clock() for _ in range(readings)]
    steps = [later - earlier for earlier, later in itertools.pairwise(values) if later != earlier]
    if len(steps) == readings - 1:
        return 0
    forward = [step for step in steps if step > 0]
    return min(forward) if forward else STILL_CLOCK_STEP_NS


def spread_clock(clock: Callable[[], int], step_ns: int) -> Callable[[], int]:
    """``clock``, each reading moved on by a count of ``SLOTS`` ns within the clock's step.

    Calls that read the same value of a clock stepping ``step_ns`` get distinct times, as
    long as fewer than ``step_ns / SLOTS`` calls fall in one step (a call takes over
    100 ns); no time reaches the clock's next value. The count is taken in one C call,
    so threads and signal handlers never share one and no lock is needed.
    """
    spread = step_ns // SLOTS
    count = itertools.count().__next__

    def spread_time_ns() -> int:
        return clock() + count() % spread * SLOTS

    return spread_time_ns


def stamping_clock(clock: Callable[[], int] = time.time_ns) -> Callable[[], int]:
    """The clock to stamp calls with: ``clock`` itself if it never repeats, else spread."""
    step = clock_step_ns(clock)
    return clock if step < 2 * SLOTS else spread_clock(clock, step)


#: The clock every call is stamped with (read once per call; the system's on Linux).
time_ns = stamping_clock()


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


def after_step_back(ns: int) -> int:
    """The timestamp for a call stamped ``ns`` that is not past :data:`latest`.

    The wall clock went back (or an aggregated interval took times ahead, see
    :func:`reserve`): ``ns`` may be a time this process gave already, whose point a
    store keyed by time would overwrite. For a gap under HOLD_NS the call is stamped
    just past every time given; for a longer one it keeps the clock's time, in a slot
    this process never stamped that time in. One call at a time works this out, and
    sets :data:`latest`.
    """
    global _changer
    me = threading.get_ident()
    if _changer == me or not _changing.acquire(timeout=1.0):
        # A signal handler's call inside its own thread's change of slot: hold.
        latest[0] = ns = _hold()
        return ns
    _changer = me
    try:
        return _after_step_back(ns)
    finally:
        _changer = None
        _changing.release()


def _after_step_back(ns: int) -> int:
    global slot, _no_slot_until, _held
    if ns - HOLD_NS > time_ns():
        # Read before the clock went back, by a call that waited since: a time of its own
        # (in the slot it read), and not the last time given from now on.
        return ns
    ns = ns - ns % SLOTS + slot  # the caller may have read the slot before a change
    last = latest[0]
    if ns <= last and last % SLOTS == slot:
        _release_passed(ns)
        if last - ns < HOLD_NS or time.monotonic() < _no_slot_until:
            ns = _hold()
        else:
            # (Also when the last time given is a call's that read the clock before the
            # step and the slot after a change: a slot more, never a time twice.)
            fresh = _another_slot()
            if fresh is None:
                _no_slot_until = time.monotonic() + 1.0
                ns = _hold()
            else:
                slot = fresh
                # Holds in the new slot start from its first time, not the former's.
                ns = _held = ns - ns % SLOTS + fresh
    # Else another call changed the slot meanwhile, or the last time given is another
    # slot's (a call stamped before the change stored its time after): this slot has
    # given no time past ns since the change.
    latest[0] = ns
    return ns


def _hold() -> int:
    """The time just past every time given (in this process's slot)."""
    global _held
    last = max(latest[0], _held)
    _held = last - last % SLOTS + SLOTS + slot
    return _held


def release_passed() -> None:
    """Let go of the slots given up whose last time the clock has passed (the delivery
    worker calls this at each round: a process needs them no longer); and, every
    :data:`CHECK_LOCK_EVERY` seconds, see that the lock file held is still there."""
    global _lock_checked
    if _retired:
        with _changing:
            _release_passed(time_ns())
    if _lock_fd is not None:
        now = time.monotonic()
        if now - _lock_checked >= CHECK_LOCK_EVERY:
            _lock_checked = now
            with _changing:
                _check_lock_file()


#: How often (seconds) the delivery worker sees that the lock file held is still there.
CHECK_LOCK_EVERY = 5.0
#: When it last did (monotonic seconds).
_lock_checked = 0.0
#: Said once: a lock file deleted while held, with no slot free to take instead.
_said_no_slot = False


def _check_lock_file() -> None:
    """Take the slot again if the lock file held was deleted (under _changing).

    A temporary-file cleaner, or ``rm -rf`` of the folder, deletes the file while this
    process holds its lock: a process that comes later makes a new file of that name,
    locks it, and stamps in the same slot. So the slot is taken again in the folder
    (made anew): the same one if its new file is free, else another, as after a step
    back of the clock; either way, said in a warning.
    """
    global slot, _said_no_slot
    held, path = _lock_fd, _lock_path
    if held is None or path is None:
        return
    try:
        mine = os.fstat(held)
        there: os.stat_result | None = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        there = None
    except OSError:  # cannot tell
        return
    if (
        there is not None
        and mine.st_nlink > 0
        and (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev)
    ):
        return
    try:
        taken, _ = _slot_in(os.path.dirname(path), slot)
    except OSError as error:
        taken, reason = None, str(error)
    else:
        reason = "none is free"
    if taken is None:
        if not _said_no_slot:
            _said_no_slot = True
            log.warning(
                "Kaneda: the lock file of this process's timestamp slot, %s, was deleted, "
                "and no slot could be taken again (%s): a process that locks a new file of "
                "that name may write a point with the same timestamp",
                path,
                reason,
            )
        return
    with contextlib.suppress(OSError):
        os.close(held)  # (the lock of a deleted file keeps nothing from anyone)
    _said_no_slot = False
    log.warning(
        "Kaneda: the lock file of this process's timestamp slot, %s, was deleted; %s",
        path,
        "locked it again, made anew"
        if taken == slot
        else f"another process holds the new one: this process now stamps in slot {taken}",
    )
    slot = taken


def _release_passed(now: int) -> None:
    for retired in [item for item in _retired if item[1] < now]:
        _retired.remove(retired)
        with contextlib.suppress(OSError):
            os.close(retired[0])


def _another_slot() -> int | None:
    """A slot other than this process's, taken in its folder; None if none is free."""
    held, path = _lock_fd, _lock_path
    if held is None or path is None:  # no lock file (none could be had): nothing to change
        return None
    try:
        taken, _ = _slot_in(os.path.dirname(path), (slot + 1) % SLOTS)
    except OSError:
        taken = None
    if taken is None:
        return None
    _retired.append((held, latest[0]))
    return taken


def reserve(count: int) -> int:
    """The first of ``count`` timestamps ``SLOTS`` apart, given to no call.

    For points made at once, as an aggregated interval's are: a store that keys them by
    time and tags alone (InfluxDB's kaneda1 layout, whose measurement is the kind) must
    not find two of them at one time. The calls that follow are stamped past them.
    """
    global _held
    ns = stamp(time_ns())
    if ns <= latest[0]:
        ns = after_step_back(ns)
    end = ns + (max(count, 1) - 1) * SLOTS
    latest[0] = end
    _held = max(_held, end)  # (a hold meanwhile is past them: holds take the larger)
    return ns


def _folders() -> Iterator[str]:
    """The folders of lock files to try, best first: the same for every process of a host.

    The shared memory folder is tried wherever there is one, even read-only to this
    process: the lock files others made there are locked all the same.
    """
    if os.path.isdir(SHARED_MEMORY):
        yield os.path.join(SHARED_MEMORY, "kaneda-slots")
    import tempfile  # here, not at import: import kaneda_core stays cheap

    # gettempdir() raises when no folder takes a file (a full or read-only disk).
    yield os.path.join(tempfile.gettempdir(), "kaneda-slots")


def _make_folder(folder: str) -> None:
    """Make ``folder`` (if missing) world-writable and sticky, as /tmp is."""
    import stat

    os.makedirs(folder, mode=0o1777, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):  # a symbolic link, say: not followed
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", folder)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o1777:
        # makedirs' mode is cut by the umask; a folder of another user is left as it is.
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o1777)


def _open_lock(path: str) -> int:
    """A descriptor to flock ``path`` with, made readable by all if this process makes it.

    flock takes a read-only descriptor, so a file another user made (and owns) is
    locked as well. Raises PermissionError for a file this process may not open, and
    for what is not a regular file of one link.
    """
    import stat

    # Non-blocking: a FIFO put there (by any user of the host) would block the open for
    # ever, and every process's Metrics() with it.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags | os.O_CREAT, 0o644)
    except PermissionError as refused:
        # fs.protected_regular refuses O_CREAT on another user's file in a sticky,
        # world-writable folder, even to root, but not a plain open.
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:  # no such file, and this process may not make it
            raise refused from None
    try:
        info: os.stat_result | None = os.fstat(fd)
    except OSError:
        info = None
    if info is None or not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        # A hard link is refused as a symbolic link is: any user of the host may put one
        # there, to a file of this process's user that the chmod below would open to all.
        os.close(fd)
        raise PermissionError(
            errno.EPERM, "not a regular file of one link: not used as a lock", path
        )
    if info.st_uid == os.geteuid() and info.st_mode & 0o777 != 0o644:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)  # the mode given to open is cut by the umask
    return fd


#: Errors opening a lock file that skip it: a symbolic link, a file that cannot be made.
_REFUSALS = frozenset(
    code
    for code in (
        errno.ELOOP,
        errno.EROFS,
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
    )
    if code is not None
)


def _slot_in(folder: str, start: int) -> tuple[int | None, int]:
    """A slot locked in ``folder``, or None if none is free; and how many were refused.

    Raises OSError when the folder cannot be used (missing, full, read-only disk).
    """
    global _lock_fd, _lock_path
    try:
        import fcntl  # here, not at import: import kaneda_core stays cheap
    except ImportError as error:  # no descriptor left to load it with (EMFILE); Windows
        raise OSError(errno.ENOSYS, f"no file locks: {error}") from error

    _make_folder(folder)
    refused = 0
    for step in range(SLOTS):
        slot = (start + step) % SLOTS
        path = os.path.join(folder, f"{slot:02d}.lock")
        try:
            fd = _open_lock(path)
        except OSError as error:
            if isinstance(error, (PermissionError, IsADirectoryError)) or error.errno in _REFUSALS:
                # Skipped, as a held one is (a lock file missing from a read-only or full
                # folder, say: the others there may be locked).
                refused += 1
                continue
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        _lock_fd = fd
        _lock_path = path
        return slot, refused
    return None, refused


def _take_slot() -> int:
    start = os.getpid() % SLOTS  # most processes find their slot free at the first try
    # Each folder that could not be used, and why (said in the warning).
    failures: list[tuple[str, OSError]] = []
    folders = _folders()
    while True:
        try:
            folder = next(folders, None)
        except OSError as error:  # gettempdir(): no folder takes a file
            failures.append(("the temporary folder", error))
            folder = None
        if folder is None:
            log.warning(
                "Kaneda: no timestamp slot (%s); using the process id: two processes of "
                "this host may then write a point with the same timestamp",
                "; ".join(f"{failed}: {error}" for failed, error in failures)
                or "no folder for lock files",
            )
            return start
        try:
            taken, refused = _slot_in(folder, start)
        except OSError as error:  # the next folder, if any, is tried
            failures.append((folder, error))
            continue
        if taken is None and refused == SLOTS:
            none = PermissionError(errno.EACCES, "none of its lock files can be opened or made")
            failures.append((folder, none))
            continue
        break
    if taken is not None:
        if failures:
            # The shared folder could not be used: a process that uses it may hold the
            # same slot.
            log.warning(
                "Kaneda: cannot take a timestamp slot in %s (%s); took one in %s instead, "
                "which processes using %s do not see: a point of this process may carry "
                "the same timestamp as one of theirs",
                failures[0][0],
                failures[0][1],
                folder,
                failures[0][0],
            )
        return taken
    # Also each folder tried before, and why it could not be used.
    unused = "".join(f"; {failed} could not be used: {error}" for failed, error in failures)
    if refused:
        log.warning(
            "Kaneda: no free timestamp slot in %s (%d lock files could not be opened, the "
            "others are held%s); using the process id: two processes of this host may then "
            "write a point with the same timestamp",
            folder,
            refused,
            unused,
        )
        return start
    log.warning(
        "Kaneda: more than %d processes report from this host: two of them share a timestamp "
        "slot, and a point of each may carry the same timestamp%s",
        SLOTS,
        f" ({unused[2:]})" if unused else "",
    )
    return start


@reinit_after_fork
def _new_slot_in_child() -> None:
    # flock belongs to the open file, which the child shares with its parent: let go of
    # the child's copy (the parent keeps its lock) and take a slot of its own, now, so
    # that the child's first call is stamped with it.
    global _taken, _lock_fd, _lock_path
    for fd in [_lock_fd, *(retired for retired, _ in _retired)]:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _retired.clear()
    _lock_fd = None
    _lock_path = None
    # (The parent's last time given is in the parent's slot: the child's first call, in
    # a slot of its own, is not held behind it; see after_step_back.)
    if _taken:
        _taken = False
        process_slot()
