"""An on-disk queue (SQLite) that keeps accepted metrics until the backend has them.

A reporting call stages the metric in memory and writes what is staged to the file
before it returns, unless another thread is writing at that moment: then that thread
writes it, right after; or unless another process sharing the path has the file locked:
then the next call or the worker writes it. A call never waits for the file, so a signal
handler that reports while its thread is inside Kaneda cannot deadlock, and a fleet of
processes on one path do not queue behind each other's writes. A row is deleted only
after the batch it belongs to was delivered (or given up on for good). A crash of the
process loses nothing that was written: the next ``Metrics`` opened on the same path
delivers it. Delivery is at least once, so every metric gets an id (its own ``id_``, or
one made from the buffer's token and the row number) that backends storing ids use to
keep one copy.

The file may fail. When it cannot be written (disk full, I/O error) metrics stay in
memory, bounded like any queue, and are delivered from there; writing is tried again
every second and resumes when space returns. The file never fills the disk itself
(LOG_ROOM), keeps a reserve to delete delivered rows on a disk others filled, and gives
its space back once its rows are delivered (see _delete). A row that cannot be read is
moved to the file's ``quarantine`` table (kept, logged, counted); a file SQLite cannot
read at all is renamed aside and a new one started, with the rows still readable in it.
Nothing here raises into the application.

SQLite from the standard library: one file, atomic commits, concurrent readers, and no
dependency. WAL mode with ``synchronous=NORMAL`` makes an append one ``write()`` to the
log, without an fsync: it survives the process being killed (the OS holds the data);
a power cut may lose the appends since the last checkpoint, but never corrupts the
file. ``durable=True`` asks for ``synchronous=FULL`` (an fsync per write).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from .delivery import Item
from .errors import ConfigurationError
from .forking import abandon, hold_across_fork
from .model import Metric, host_name
from .stamps import stamp

log = logging.getLogger("kaneda")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    item TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_owner ON queue (owner, seq);
CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, destination TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY,
    item TEXT NOT NULL,
    error TEXT NOT NULL,
    moved_at TEXT NOT NULL
);
"""

#: Seconds to wait before trying again a file that failed.
RETRY_AFTER = 1.0
#: The most a row of the file holds, in bytes (SQLite's default SQLITE_MAX_LENGTH).
MAX_ROW_BYTES = 1_000_000_000
#: Rows written, or deleted, in one transaction at most: a write that meets a full disk
#: keeps what fitted, and the write-ahead log is checkpointed between chunks instead of
#: growing by a whole backlog at once.
CHUNK = 500
#: Bytes set aside next to the file (``<path>.reserve``) and given back when a delete
#: meets a full disk: a delete needs room in the log, and delivered rows left in the
#: file would be delivered again by every process opened after.
RESERVE_BYTES = 1 << 20
#: Bytes of the disk the file leaves free for its write-ahead log (SQLite checkpoints it
#: at 1000 pages, 4 MiB, plus a transaction): a file that filled the disk could not copy
#: its log into itself, nor delete delivered rows (a delete writes to the log).
LOG_ROOM = 6 << 20
#: Seconds between two looks at the disk's free space (by the worker).
SPACE_EVERY = 1.0
#: Once every row is delivered, a log (or free pages) past this many bytes is given back:
#: above what steady use keeps (a log checkpointed at 4 MiB, reused), so that only a
#: backlog's space is (the next writes would grow the files again, a cost per call).
SHRINK_ABOVE = 16 << 20
#: Seconds a reporting call waits for another thread that has the file, at most.
CALL_WAIT = 1.0
#: SQLite from which a connection whose file was deleted or replaced is closed once its
#: rows are carried over. Closing the last connection to a file checkpoints it and deletes
#: its -wal and -shm *by name*: names now another file's. SQLite skips both for a file no
#: longer at its path (its pager's databaseIsUnmoved check): seen with 3.40 (strace: the
#: index unmapped and the files closed, nothing written or deleted). The version that
#: brought the check is not pinned down here: before this one the file is left open
#: (abandoned), as it was, and its space held until the process exits.
CLOSES_MOVED_FILES_SAFELY = (3, 40, 0)
#: Milliseconds SQLite waits for another process's write: only while opening and closing.
#: Otherwise a statement that finds the file locked gives up at once (see _is_busy).
OPEN_WAIT_MS = 5000

#: A staged metric and the row that holds it (None: not in the file).
Entry = tuple[int | None, Any]


class DiskBuffer:
    """The rows of one SQLite file owned by this buffer, and what is staged for it.

    ``on_unreadable(n)`` is told of rows that could not be read and were moved aside.
    """

    def __init__(
        self,
        path: str,
        *,
        durable: bool = False,
        destination: str = "",
        on_unreadable: Callable[[int], None] | None = None,
        on_refused: Callable[[Any, str], None] | None = None,
    ) -> None:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigurationError(
                f"buffer_path {path!r}: the folder {folder!r} does not exist; create it "
                "or choose a path in an existing folder"
            )
        if os.path.isdir(path):
            raise ConfigurationError(
                f"buffer_path {path!r} is a folder; give the path of a file in it, e.g. "
                f"{os.path.join(path, 'kaneda-buffer.sqlite')!r}"
            )
        self.path = path
        self.durable = durable
        #: Where this buffer's metrics go (Backend.destination): rows of a closed buffer
        #: for another destination are left to a process that delivers there.
        self.destination = destination
        self._others_logged = False
        self.on_unreadable = on_unreadable or (lambda count: None)
        #: Told of a metric the file cannot hold (too large for a row), and why.
        self.on_refused = on_refused or (lambda item, reason: log.error("Kaneda: %s", reason))
        #: Called when a call left metrics staged because another process had the file
        #: locked: the owner's worker writes them (see :meth:`take`).
        self.on_busy: Callable[[], None] = lambda: None
        #: Accepted metrics not yet written to the file.
        self.staged: deque[Any] = deque()
        #: About the bytes of ``staged`` while the file fails (see :meth:`bound_memory`).
        self.staged_bytes = 0
        self._max_memory: int | None = None
        self._size_of: Callable[[Any], int] = lambda item: 0
        self._on_dropped: Callable[[Any], None] = lambda item: None
        #: Rows of this buffer in the file.
        self.pending = 0
        # Taken off the staging list by the thread writing them, not yet counted in
        # pending (or put back): still waiting, for queued().
        self._writing = 0
        # Taken from memory by the worker (the file failing), until it acks its batch:
        # still waiting, for queued() and max_buffer.
        self._out = 0
        self.token = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        # Per thread: whether it is inside a section that holds the file.
        self._local = threading.local()
        self._reset_file_state()
        with self._lock:
            self._ensure_open(first=True)
        hold_across_fork(self)

    def _reset_file_state(self) -> None:
        self._db: sqlite3.Connection | None = None
        self._owner = uuid.uuid4().hex
        self._owner_lock: int | None = None
        self._retry_at = 0.0
        self._trouble_logged = False
        self._undeleted: set[int] = set()
        #: The highest row of the batch take() gave the worker, until it acks (0: none).
        #: take() reads the oldest rows, so every row of this buffer up to it is being
        #: sent (or delivered, in _undeleted): drop_oldest takes only rows after it.
        self._sending_upto = 0
        #: Files started (a damaged one moved aside starts another, numbering its rows
        #: from 1 again), and the one take() read its batch from: acking that batch's
        #: rows in a newer file would delete other metrics, never delivered.
        self._file_number = 0
        self._taken_from = 0
        #: The ids of that batch's metrics, by row, when its file was carried over while
        #: it was sent (see _carry_over): its ack deletes the delivered in the new file.
        self._in_flight: dict[int, str] = {}
        self._space_at = 0.0  # (see _bound_to_disk)
        self._shrunk_at = 0.0  # (see _shrink_if_empty)
        self._looked_at = 0.0  # (see look_at_file)
        #: (st_dev, st_ino) of the file opened: told apart from one put at the path since.
        self._file_id: tuple[int, int] | None = None
        #: The files (and logs) of the connection open and of those left open (abandoned):
        #: a forked child closes its descriptors on them (see after_fork_in_child).
        self._db_files: set[tuple[int, int]] = set()
        self._left_files: set[tuple[int, int]] = set()

    # -- the calling side: never waits ---------------------------------------------------

    def append(self, item: Item | Metric) -> int:
        """Stage one metric and write it unless another thread is writing; returns the count.

        The count is this buffer's metrics waiting: staged plus in the file.
        """
        self.staged.append(item)
        if self._enter():
            self._write_and_release()
        if self._trouble_logged and self._max_memory is not None:
            self._keep_in_memory(item)  # the file fails: metrics wait in memory, bounded
        return self.pending - len(self._undeleted) + len(self.staged)

    def bound_memory(
        self, max_bytes: int, size_of: Callable[[Any], int], on_dropped: Callable[[Any], None]
    ) -> None:
        """While the file fails, keep at most about ``max_bytes`` of metrics in memory.

        Past it the oldest kept in memory is dropped and passed to ``on_dropped``.
        ``size_of`` tells a metric's size. Without it, only the count bounds them.
        """
        self._max_memory = max_bytes
        self._size_of = size_of
        self._on_dropped = on_dropped

    def _keep_in_memory(self, item: Any) -> None:
        assert self._max_memory is not None
        self.staged_bytes += self._size_of(item)
        while self.staged_bytes > self._max_memory and len(self.staged) > 1:
            try:
                oldest = self.staged.popleft()
            except IndexError:  # the worker took them meanwhile
                break
            self.staged_bytes -= self._size_of(oldest)
            self._on_dropped(oldest)

    def _forget_sizes(self, items: Sequence[Any]) -> None:
        """``items`` left memory (written, or taken to be delivered)."""
        if self._max_memory is not None and self.staged_bytes:
            self.staged_bytes = max(0, self.staged_bytes - sum(map(self._size_of, items)))

    def queued(self) -> int:
        """Metrics of this buffer waiting for delivery, staged or in the file."""
        # Rows delivered whose delete is still to be retried are not waiting.
        return self.pending - len(self._undeleted) + len(self.staged) + self._writing + self._out

    def _enter(self) -> bool:
        """Take the file for this thread, as a reporting call does.

        When another thread has it, wait for that thread (it holds the file for one
        statement), at most ``CALL_WAIT`` seconds. When this very thread is inside a
        section that holds the file (a signal handler interrupted it), do not wait:
        False, and what was staged is written when the file is next taken.
        """
        local = self._local
        if getattr(local, "inside", False):
            return False
        local.inside = True  # before the lock: a signal may come as soon as it is taken
        if self._lock.acquire(timeout=CALL_WAIT):
            return True
        local.inside = False
        return False

    def _acquire(self) -> None:
        self._local.inside = True
        self._lock.acquire()

    def _release(self) -> None:
        self._lock.release()
        self._local.inside = False

    def drop_oldest(self) -> Any | None:
        """Remove and return this buffer's oldest metric not being sent; None if none is
        (every row is in the worker's batch) or the file is busy."""
        if getattr(self._local, "inside", False):
            return None
        self._local.inside = True
        if not self._lock.acquire(blocking=False):
            self._local.inside = False
            return None
        try:
            entries = self._take_locked(1, after=self._sending_upto)
            if not entries:
                return None
            seq, item = entries[0]
            if seq is not None:
                self._delete([seq])
            return item
        finally:
            self._write_and_release()

    def _write_and_release(self) -> None:
        # Whoever holds the lock writes what others staged meanwhile before letting go;
        # a metric staged just after that is written by the next holder, or by its own
        # caller, which then finds the lock free.
        while True:
            written = True
            try:
                if self.staged and self._writable():
                    written = self._write_staged()
            finally:
                self._release()
            if not written:
                self.on_busy()  # another process has the file: the worker tries again
                return
            if not (self.staged and self._writable()):
                return
            self._local.inside = True
            if not self._lock.acquire(blocking=False):
                self._local.inside = False
                return

    # -- the worker's side ------------------------------------------------------------------

    def take(self, limit: int) -> list[Entry]:
        """The oldest ``limit`` metrics of this buffer (not removed), with their rows."""
        self._acquire()
        try:
            if self.staged and self._writable():
                self._write_staged()
            self._bound_to_disk()
            self._check_file()
            entries = self._take_locked(limit)
            # Rows from the file come first, oldest first.
            self._sending_upto = max((seq for seq, _ in entries if seq is not None), default=0)
            self._taken_from = self._file_number
            self._out = sum(1 for seq, _ in entries if seq is None)
            return entries
        finally:
            self._write_and_release()

    def _take_locked(self, limit: int, *, after: int = 0) -> list[Entry]:
        entries: list[Entry] = []
        if self._db is not None or self._writable():
            entries = self._read_rows(limit, after)
        if len(entries) < limit and (self._db is None or time.monotonic() < self._retry_at):
            # The file cannot take them: deliver what is staged straight from memory.
            taken = []
            while len(entries) < limit and self.staged:
                taken.append(self.staged.popleft())
                entries.append((None, taken[-1]))
            self._forget_sizes(taken)
        return entries

    def _read_rows(self, limit: int, after: int = 0) -> list[Entry]:
        """The oldest ``limit`` readable rows of this buffer with a seq above ``after``."""
        assert self._db is not None
        try:
            rows = self._db.execute(
                "SELECT seq, item FROM queue WHERE owner = ? AND seq > ? ORDER BY seq LIMIT ?",
                (self._owner, after, limit + len(self._undeleted)),
            ).fetchall()
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                self._trouble("reading it", error)
            return []
        except sqlite3.DatabaseError as error:
            self._move_aside(error)
            return []
        entries: list[Entry] = []
        for seq, text in rows:
            if seq in self._undeleted:
                continue  # delivered already; its delete failed and is retried
            try:
                entries.append((seq, self._decode(seq, text)))
            except (ValueError, TypeError, RecursionError) as error:
                self._quarantine(seq, text, error)
            if len(entries) == limit:
                break
        return entries

    def ack(self, seqs: Sequence[int]) -> None:
        """Forget delivered rows (a delete that fails is tried again later).

        While another process has the file locked, tried again for up to OPEN_WAIT_MS,
        with the file let go between tries, so that this process's calls never wait
        behind it: a row left would be delivered again by the next process.
        """
        deadline = time.monotonic() + OPEN_WAIT_MS / 1000
        pause = 0.001
        while True:
            self._acquire()
            try:
                # The batch is over: rows kept (not delivered) wait for the next take(),
                # metrics kept from memory were requeued.
                self._sending_upto = 0
                self._out = 0
                if self._taken_from != self._file_number:
                    # Rows of a file moved aside meanwhile: kept there. Of a file deleted
                    # or replaced: carried over, found again in the new file by their ids.
                    seqs = self._carried_rows(seqs)
                busy = not self._delete(list(seqs) + list(self._undeleted))
            finally:
                self._write_and_release()
            if not busy or time.monotonic() >= deadline:
                return
            seqs = []  # they are in _undeleted now
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _carried_rows(self, delivered: Sequence[int]) -> list[int]:
        """The rows of the file open that hold the metrics of the rows ``delivered`` of a
        file carried over while their batch was sent (none for a file moved aside)."""
        ids = [self._in_flight[seq] for seq in delivered if seq in self._in_flight]
        self._in_flight = {}
        if not ids or self._db is None:
            return []
        # Written to the new file right after the carry-over: one still staged (the new
        # file failing) is not found, and is delivered again (at least once).
        marks = ",".join("?" * len(ids))
        query = f"SELECT seq FROM queue WHERE owner = ? AND json_extract(item, '$[4]') IN ({marks})"
        try:  # a row is [name, kind, value, tags, id, ...] (see _encode)
            return [seq for (seq,) in self._db.execute(query, (self._owner, *ids)).fetchall()]
        except sqlite3.Error:  # (an SQLite without JSON functions, say) delivered again
            return []

    def requeue(self, items: Sequence[Any]) -> None:
        """Stage again, first in line, metrics taken from memory that were not delivered."""
        self.staged.extendleft(reversed(items))
        if self._trouble_logged and self._max_memory is not None:
            self.staged_bytes += sum(map(self._size_of, items))

    def _delete(self, seqs: list[int]) -> bool:
        """Delete rows; False when another process had the file locked (kept to retry).

        A chunk at a time, each its own transaction: a full disk keeps fewer delivered
        rows (the log holds a small transaction where a large one finds no room). On a
        full disk the reserve is given back and the chunk tried once more.
        """
        if not seqs or self._db is None:
            self._undeleted.update(seqs)
            return True
        seqs = sorted(set(seqs))
        for start in range(0, len(seqs), CHUNK):
            chunk = seqs[start : start + CHUNK]
            try:
                self._delete_chunk(chunk)
            except sqlite3.Error as error:
                if not (_is_full(error) and self._give_back_reserve()):
                    return self._delete_failed(seqs[start:], error)
                try:
                    self._delete_chunk(chunk)
                except sqlite3.Error as again:
                    return self._delete_failed(seqs[start:], again)
        self._shrink_if_empty()
        return True

    def _delete_chunk(self, chunk: list[int]) -> None:
        assert self._db is not None
        marks = ",".join("?" * len(chunk))
        with self._db:
            self._db.execute("BEGIN")
            deleted = self._db.execute(
                f"DELETE FROM queue WHERE owner = ? AND seq IN ({marks})",
                (self._owner, *chunk),
            ).rowcount
        self.pending = max(0, self.pending - deleted)
        self._undeleted.difference_update(chunk)

    def _delete_failed(self, seqs: list[int], error: sqlite3.Error) -> bool:
        self._undeleted.update(seqs)  # skipped when read; deleted with the next ones
        if _is_busy(error):
            return False
        self._trouble("deleting delivered rows from it", error)
        return True

    def _give_back_reserve(self) -> bool:
        """Free the space set aside for deletes (and let the log shrink); False if none was."""
        try:
            os.unlink(self._reserve_path())
        except OSError:
            return False
        log.warning(
            "Kaneda: the disk of the buffer %s is full; gave back the %d bytes set aside "
            "to delete delivered rows",
            self.path,
            RESERVE_BYTES,
        )
        self._checkpoint()
        return True

    def _reserve_path(self) -> str:
        return f"{self.path}.reserve"

    def _set_reserve_aside(self) -> None:
        """Set RESERVE_BYTES aside next to the file, unless done (shared by the processes
        on the path) or the disk has not that much to spare."""
        path = self._reserve_path()
        if os.path.exists(path):
            return
        try:
            spare = os.statvfs(os.path.dirname(os.path.abspath(path)))
            if spare.f_bavail * spare.f_frsize < 4 * RESERVE_BYTES:
                return
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
        finally:
            os.close(fd)

    def _bound_to_disk(self) -> None:
        """Bound the file's pages to what the disk has free, less LOG_ROOM for the log.

        Past it a write fails as on a full disk (metrics wait in memory) while the disk
        still has room to checkpoint and to delete delivered rows. The worker looks at
        most every SPACE_EVERY seconds; the reserve covers a disk filled meanwhile.
        """
        now = time.monotonic()
        if self._db is None or now < self._space_at:
            return
        self._space_at = now + SPACE_EVERY
        try:
            disk = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            ours = sum(_size(self.path + suffix) for suffix in ("", "-wal"))
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            room = disk.f_bavail * disk.f_frsize + ours - LOG_ROOM
            # Never below the pages in use: SQLite keeps them, and would refuse nothing.
            self._db.execute(f"PRAGMA max_page_count = {max(1, room // page)}")
        except (sqlite3.Error, OSError):
            return
        # A reserve given back (a disk filled) is set aside again once the disk has room.
        self._set_reserve_aside()

    def _checkpoint(self) -> None:
        """Copy the log into the file and truncate the log to nothing (best effort)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _shrink_if_empty(self) -> None:
        """Every row of this buffer delivered: give the disk back the log and free pages,
        if large.

        Only then (the worker's rounds, rarely, at most once a SPACE_EVERY): a checkpoint
        waits for the disk. Rows of others may be left in the file (another destination's,
        a live neighbour's): the free pages are given back all the same, the vacuum needs
        no empty table, and a file holding a few rows kept its backlog's space for ever.
        """
        assert self._db is not None
        now = time.monotonic()
        if self.pending or now < self._shrunk_at:
            return
        try:
            # fetchall(): a statement left unfinished would keep the vacuum from running.
            free = self._db.execute("PRAGMA freelist_count").fetchall()[0][0]
            page = self._db.execute("PRAGMA page_size").fetchall()[0][0]
            wal = os.stat(self.path + "-wal").st_size
        except (sqlite3.Error, OSError):
            return
        if max(wal, free * page) < SHRINK_ABOVE:
            return
        self._shrunk_at = now + SPACE_EVERY
        with contextlib.suppress(sqlite3.Error):
            # Files made with auto_vacuum. A page is freed per step, and execute() takes
            # one step of a statement that returns no rows: executescript() runs it all.
            self._db.executescript("PRAGMA incremental_vacuum;")
        self._checkpoint()
        self._set_reserve_aside()

    # -- writing and reading rows ----------------------------------------------------------

    def _write_staged(self) -> bool:
        """Write what is staged; False when another process had the file locked.

        Then the metrics stay staged, written by the next call or the worker's next round:
        a reporting call never waits for another process (a fleet of processes sharing
        one path made calls wait up to the busy timeout, behind each other's writes).
        """
        assert self._db is not None
        batch = []
        staged = self.staged
        try:
            while staged:
                self._writing += 1  # first: queued() never misses it
                batch.append(staged.popleft())
            return self._write_taken(batch)
        finally:
            self._writing = 0

    def _write_taken(self, batch: list[Any]) -> bool:
        """Write ``batch``, taken off the staging list (put back if it cannot be written)."""
        assert self._db is not None
        staged = self.staged
        try:
            rows = [(self._owner, _encode(item)) for item in batch]
        except BaseException:  # a MemoryError, say: the metrics stay staged, none lost
            staged.extendleft(reversed(batch))
            raise
        written = 0
        try:
            if len(rows) == 1:
                self._db.execute("INSERT INTO queue (owner, item) VALUES (?, ?)", rows[0])
            else:
                for start in range(0, len(rows), CHUNK):
                    with self._db:  # a transaction per chunk: what fits is kept
                        self._db.execute("BEGIN")
                        self._db.executemany(
                            "INSERT INTO queue (owner, item) VALUES (?, ?)",
                            rows[start : start + CHUNK],
                        )
                    written = min(len(rows), start + CHUNK)
        except sqlite3.Error as error:
            self._wrote(batch[:written])
            return self._write_failed(batch[written:], rows[written:], error)
        self.pending += len(rows)  # as _wrote does, without a call: the reporting call's path
        if self.staged_bytes:
            self._forget_sizes(batch)
        self._ok()
        return True

    def _wrote(self, batch: list[Any]) -> None:
        """``batch`` is in the file now."""
        self.pending += len(batch)
        if self.staged_bytes:
            self._forget_sizes(batch)

    def _write_failed(
        self, batch: list[Any], rows: list[tuple[str, str]], error: sqlite3.Error
    ) -> bool:
        """Writing ``batch`` failed: staged again, first in line; False when the file was busy."""
        staged = self.staged
        refused = False
        if isinstance(error, sqlite3.DataError):
            # A row larger than SQLite holds: the metric's fault, not the file's.
            kept = self._without_too_large(batch, rows)
            refused = len(kept) < len(batch)
            batch = kept
        staged.extendleft(reversed(batch))
        if refused:
            return True  # the rest is written at the next try
        if _is_busy(error):
            return False
        if isinstance(error, (sqlite3.OperationalError, sqlite3.DataError)) or not isinstance(
            error, sqlite3.DatabaseError
        ):
            self._trouble("writing to it", error)
        else:
            self._move_aside(error)
        return True

    def _without_too_large(self, batch: list[Any], rows: list[tuple[str, str]]) -> list[Any]:
        """``batch`` less the metrics too large for a row of the file, which are refused.

        SQLite holds at most MAX_ROW_BYTES in a row: such a metric was taken for a damaged
        file, the file moved aside (with the metrics in it) and a new one tried, for ever.
        """
        kept = []
        for item, (_, text) in zip(batch, rows, strict=True):
            if len(text) * 4 > MAX_ROW_BYTES and len(text.encode("utf-8")) > MAX_ROW_BYTES:
                self.on_refused(
                    item,
                    f"the metric is {len(text.encode('utf-8')):,} bytes written, more than "
                    f"the disk buffer's SQLite file holds in a row ({MAX_ROW_BYTES:,}): "
                    "store large text elsewhere and report a reference to it",
                )
            else:
                kept.append(item)
        return kept

    def _decode(self, seq: int, text: str, token: str | None = None) -> Any:
        row = json.loads(text)
        if not isinstance(row, list) or len(row) not in (6, 7):
            raise ValueError(f"expected a list of 6 or 7 fields, got {text[:80]!r}")
        name, kind, value, tags, id_, ns = row[:6]
        if not (isinstance(name, str) and isinstance(kind, str) and type(ns) is int):
            raise ValueError(f"bad name, kind or time in {text[:80]!r}")
        if not 0 <= ns < 2**63:
            raise ValueError(f"time out of range in {text[:80]!r}")
        if not isinstance(tags, (dict, list)):
            raise ValueError(f"bad tags in {text[:80]!r}")
        id_ = id_ if id_ is not None else f"{token or self.token}-{seq}"
        if len(row) == 6:  # written without its host: stamped and sent from this one
            return (name, kind, value, tags, None, host_name(), id_, stamp(ns))
        return (name, kind, value, tags, None, str(row[6]), id_, ns)

    def _quarantine(self, seq: int, text: str, error: Exception) -> None:
        assert self._db is not None
        log.error(
            "Kaneda: row %d of the disk buffer %s cannot be read (%s); moved to its "
            "quarantine table",
            seq,
            self.path,
            error,
        )
        self.on_unreadable(1)
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(
                    "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?)",
                    (seq, text, str(error), datetime.now(timezone.utc).isoformat()),
                )
                self._db.execute("DELETE FROM queue WHERE seq = ?", (seq,))
            self.pending = max(0, self.pending - 1)
        except sqlite3.Error:
            self._undeleted.add(seq)  # skipped from now on; moved on a later delete

    # -- opening, trouble, recovery -------------------------------------------------------

    def _writable(self) -> bool:
        return time.monotonic() >= self._retry_at and self._ensure_open()

    def _ensure_open(self, *, first: bool = False) -> bool:
        """Open the file if it is not; False while it cannot be (metrics wait in memory).

        ``first`` (at construction): a file that is another application's database is
        refused with ConfigurationError; found later, it is a trouble like any other.
        """
        if self._db is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._db = self._connect()
        except ForeignDatabase as error:
            if first:
                raise
            self._trouble("opening it", error)
            return False
        except sqlite3.OperationalError as error:
            self._trouble("opening it", error)
            return False
        except sqlite3.DatabaseError as error:
            self._move_aside(error)
            return self._db is not None
        except OSError as error:
            self._trouble("opening it", error)
            return False
        self._adopt_orphans()
        self._set_reserve_aside()
        self._bound_to_disk()
        self.pending = self._count()
        self._wait_for_others(0)
        self._ok()
        return True

    def _connect(self) -> sqlite3.Connection:
        # One connection shared by the calling threads and the worker, under _lock.
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=OPEN_WAIT_MS / 1000
        )
        try:
            _refuse_foreign(db, self.path)  # before anything is written to it
            # A new file gives its free pages back to the disk (see _shrink_if_empty);
            # a file made before keeps them for its next rows.
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {verdict}")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('token', ?)", (self.token,))
            self.token = db.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()[0]
            # Rows belong to one open buffer, marked by a token and an exclusive lock on a
            # file of its own. The OS releases the lock when the process dies, however it
            # dies, so a later process can tell orphaned rows from a live neighbour's
            # (process ids are reused; locks are not).
            self._take_owner_lock()
            db.execute(
                "INSERT OR REPLACE INTO owners VALUES (?, ?)", (self._owner, self.destination)
            )
            self._file_id = _identity(self.path)
            self._db_files = _files_of(self.path)  # the log is open by now (WAL mode)
        except BaseException:
            db.close()
            # The lock let go with the file: the next open takes it again.
            self._let_go_of_owner_lock()
            raise
        return db

    def _take_owner_lock(self) -> None:
        """Hold this buffer's lock, never waiting: the lock already held is kept, and one
        held elsewhere (no row can be under this owner yet: a file is opened by a new
        owner, or again after an open that failed) gives way to a new owner.

        A reporting call opens the file: a blocking lock taken by a process already
        holding it on another descriptor (an open that failed and kept it) waited for ever.
        """
        if self._owner_lock is not None:
            if _same_file(self._owner_lock, self._lock_path(self._owner)):
                return
            self._let_go_of_owner_lock()  # swept by another buffer: taken again below
        for _ in range(2):
            self._owner_lock = _lock_file(self._lock_path(self._owner), ours=True)
            if self._owner_lock is not None:
                return
            self._owner = uuid.uuid4().hex
        raise OSError(f"the lock file {self._lock_path(self._owner)} is held by another")

    def _let_go_of_owner_lock(self) -> None:
        if self._owner_lock is not None:
            _release(self._owner_lock, self._lock_path(self._owner))
            self._owner_lock = None

    def _wait_for_others(self, milliseconds: int) -> None:
        """How long a statement waits for another process's write (SQLite's busy timeout)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")

    def _lock_path(self, owner: str) -> str:
        return f"{self.path}.{owner}.lock"

    def _adopt_orphans(self) -> None:
        """Take over the rows of buffers whose process is gone, and sweep their lock files.

        A buffer is gone when its lock is free. A process killed (``kill -9``) leaves its
        lock file, with rows or without: each is removed here, by the next buffer opened.
        """
        assert self._db is not None
        try:
            with_rows = {row[0] for row in self._db.execute("SELECT DISTINCT owner FROM queue")}
            destinations = dict(self._db.execute("SELECT owner, destination FROM owners"))
            known = with_rows | destinations.keys() | self._owners_of_lock_files()
            for owner in known - {self._owner}:
                lock = _lock_file(self._lock_path(owner), ours=False)
                if lock is None:
                    continue  # its buffer is open, in this process or another
                try:
                    # Rows written before destinations were kept: anyone's, as then.
                    theirs = destinations.get(owner, "")
                    if owner not in with_rows or _same_destination(theirs, self.destination):
                        self._take_over(owner)
                    else:
                        self._leave_to_others(owner, theirs)
                finally:
                    _release(lock, self._lock_path(owner))
        except (sqlite3.Error, OSError) as error:
            self._trouble("taking over the rows of closed buffers in it", error)

    def _take_over(self, owner: str) -> None:
        """The rows of a closed buffer become this one's (and its owner is forgotten)."""
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE queue SET owner = ? WHERE owner = ?", (self._owner, owner))
            self._db.execute("DELETE FROM owners WHERE owner = ?", (owner,))

    def _leave_to_others(self, owner: str, destination: str) -> None:
        """Rows of a closed buffer for another destination: left, said once."""
        if self._others_logged:
            return
        self._others_logged = True
        assert self._db is not None
        rows = self._db.execute("SELECT count(*) FROM queue WHERE owner = ?", (owner,)).fetchone()
        log.warning(
            "Kaneda: the disk buffer %s holds %d rows for another destination (%s), not "
            "this one's (%s); they are left for a process that delivers there",
            self.path,
            rows[0],
            destination,
            self.destination,
        )

    def _owners_of_lock_files(self) -> set[str]:
        """The owners named by the lock files next to the file (``<path>.<owner>.lock``)."""
        folder, name = os.path.split(os.path.abspath(self.path))
        owners = set()
        for entry in os.listdir(folder):
            if entry.startswith(name + ".") and entry.endswith(".lock"):
                owner = entry[len(name) + 1 : -len(".lock")]
                if len(owner) == 32 and all(c in "0123456789abcdef" for c in owner):
                    owners.add(owner)
        return owners

    def _count(self) -> int:
        assert self._db is not None
        try:
            row = self._db.execute(
                "SELECT count(*) FROM queue WHERE owner = ?", (self._owner,)
            ).fetchone()
        except sqlite3.Error as error:
            self._trouble("counting the rows of it", error)
            return 0
        return int(row[0])

    def _trouble(self, doing: str, error: BaseException) -> None:
        """The file failed: keep metrics in memory and try again in RETRY_AFTER seconds."""
        self._retry_at = time.monotonic() + RETRY_AFTER
        if not self._trouble_logged:
            self._trouble_logged = True
            log.error(
                "Kaneda: the disk buffer %s failed while %s (%s: %s); metrics are kept in "
                "memory and delivered from there until the file works again",
                self.path,
                doing,
                type(error).__name__,
                error,
            )

    def _ok(self) -> None:
        if self._trouble_logged:
            self._trouble_logged = False
            log.warning("Kaneda: the disk buffer %s works again", self.path)

    def look_at_file(self) -> None:
        """For the worker while it waits (a backend down): see :meth:`_check_file`."""
        if time.monotonic() < self._looked_at + SPACE_EVERY:
            return
        self._acquire()
        try:
            self._looked_at = time.monotonic()
            self._check_file()
        finally:
            self._write_and_release()

    def _check_file(self) -> None:
        """Whether the file open is still the one at the path; if not, carry its rows over.

        Deleted or replaced while open (a clean-up, a restore), the file would take
        writes that no later process can read, and a crash would lose them. Looked at
        by the worker's rounds and at close: one stat(), off the reporting call's path.
        """
        if self._db is None or self._file_id is None:
            return
        try:
            if _identity(self.path) == self._file_id:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return  # cannot tell (a folder made unreadable): the file open goes on
        self._carry_over()

    def _carry_over(self) -> None:
        """Read this buffer's rows back through the open connection (the file is gone
        from the path, not from the disk), stage them first in line, and start a file
        at the path that the next write creates.

        Read a range at a time (see _read_back): the file may be a damaged one another
        process moved aside, and one bad page would cost every row in one query.
        """
        assert self._db is not None
        mine, delivered = self._owner, self._undeleted
        found = self._read_back(
            self._db, self.token, lambda seq, owner: owner == mine and seq not in delivered
        )
        rows, lost = found if found is not None else ([], None)
        if self._taken_from == self._file_number:
            # The worker's batch from this file (this buffer's oldest rows, up to
            # _sending_upto) is carried over too, kept until it is delivered; its ack
            # then deletes it in the new file (its ids, not its rows, tell it there).
            self._in_flight = {seq: item[6] for seq, item in rows if seq <= self._sending_upto}
        if lost is None:  # nothing of it can be read: every row of this buffer's is lost
            lost = max(0, self.pending - len(delivered))
        if lost:
            self.on_unreadable(lost)
        log.warning(
            "Kaneda: the disk buffer %s was deleted or replaced while open; its %d rows "
            "are written to a new file at the path%s",
            self.path,
            len(rows),
            f" ({lost} could not be read back: counted unreadable)" if lost else "",
        )
        # Closed, not left open: a deleted file's space (its log's too) is held for as
        # long as a descriptor is open on it, on a disk that may be full.
        self._let_go_of_file(close=sqlite3.sqlite_version_info >= CLOSES_MOVED_FILES_SAFELY)
        self.staged.extendleft(reversed([item for _, item in rows]))

    def _let_go_of_file(self, *, close: bool = False) -> None:
        """Leave the file and start afresh: a new owner, token and numbering, the next
        write opening the file at the path.

        The connection is abandoned (left open) unless ``close``: closing a file still at
        its path would checkpoint it and could delete a log there that is another file's;
        only a file no longer at its path is closed (see CLOSES_MOVED_FILES_SAFELY)."""
        if close and self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        else:
            abandon(self._db)
            self._left_files |= self._db_files
        self._db = None
        self._db_files = set()
        self._let_go_of_owner_lock()
        self._owner = uuid.uuid4().hex
        # Ids made from the new file's row numbers must not repeat the old file's.
        self.token = uuid.uuid4().hex[:12]
        self.pending = 0
        self._sending_upto = 0
        self._undeleted.clear()
        self._file_number += 1  # a batch read from the old file acks nothing in the new
        self._retry_at = 0.0

    def _move_aside(self, error: BaseException) -> None:
        """The file is damaged: rename it aside (kept), carry the rows still readable in
        it to a new one, and count the others unreadable."""
        owner, token = self._owner, self.token
        rows = _count_rows(self.path)
        # Closed (abandoned) and our lock let go first: the next _connect takes a lock again.
        self._let_go_of_file()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        aside = f"{self.path}.damaged-{stamp}"
        try:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path + suffix, aside + suffix)
        except OSError as failed:  # a read-only folder, say: tried again after a pause
            self._trouble(f"moving it aside, damaged ({type(error).__name__}: {error}),", failed)
            return
        items, lost = self._salvage(aside, owner, token)
        if lost is None:  # SQLite reads nothing of it: count what the bytes hold
            lost = max(0, (rows if rows is not None else _estimate_rows(aside)) - len(items))
        log.error(
            "Kaneda: the disk buffer %s cannot be read (%s: %s); moved it aside to %s "
            "(kept for inspection) and started a new one; %d rows read back from it, %s "
            "could not be",
            self.path,
            type(error).__name__,
            error,
            aside,
            len(items),
            lost,
        )
        if lost:
            self.on_unreadable(lost)
        self.staged.extendleft(reversed(items))
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as again:
            self._db = None
            self._trouble("creating it", again)

    def _salvage(self, aside: str, owner: str, token: str) -> tuple[list[Any], int | None]:
        """The metrics still readable in the damaged file ``aside`` that are this buffer's
        (``owner``) or a closed buffer's, and how many rows could not be read (None:
        unknown, the file unreadable as a whole).

        Read a range of rows at a time, and a range that fails one row at a time: one
        bad page costs the rows in it, not the file's.
        """
        try:
            db = sqlite3.connect(aside, isolation_level=None)
        except sqlite3.Error:
            return [], None
        ours: dict[str, bool] = {owner: True}

        def wanted(seq: int, whose: str) -> bool:
            if whose not in ours:
                ours[whose] = self._is_closed(whose)
            return ours[whose]  # a live neighbour's rows: it carries them over itself

        with contextlib.closing(db):
            found = self._read_back(db, _stored_token(db) or token, wanted)  # the ids they had
        if found is None:
            return [], None
        return [item for _, item in found[0]], found[1]

    def _read_back(
        self, db: sqlite3.Connection, token: str, wanted: Callable[[int, str], bool]
    ) -> tuple[list[tuple[int, Any]], int] | None:
        """The metrics of the rows of ``db`` that ``wanted(seq, owner)``, with their row
        numbers, and how many of those could not be read (a row whose owner cannot be
        told counts); None if the file cannot be read at all.

        Read a range of rows at a time, and a range that fails one row at a time: one
        bad page costs the rows in it, not the file's.
        """
        bounds = _seq_bounds(db)
        if bounds is None:
            return None
        items: list[tuple[int, Any]] = []
        lost = 0
        failed: list[int] = []
        for low in range(bounds[0], bounds[1] + 1, CHUNK):
            rows, failed_here = _read_range(db, low, min(low + CHUNK - 1, bounds[1]))
            failed += failed_here
            for seq, whose, text in rows:
                if not wanted(seq, whose):
                    continue
                try:
                    items.append((seq, self._decode(seq, text, token)))
                except (ValueError, TypeError, RecursionError):
                    lost += 1
        if failed:
            owners = _owners_of(db, set(failed))
            lost += sum(
                owners is None or (seq in owners and wanted(seq, owners[seq])) for seq in failed
            )
        return items, lost

    def _is_closed(self, owner: str) -> bool:
        """Whether the buffer ``owner`` is closed (its lock free); its lock file swept."""
        try:
            lock = _lock_file(self._lock_path(owner), ours=False)
        except OSError:
            return False
        if lock is None:
            return False
        _release(lock, self._lock_path(owner))
        return True

    # -- fork and close ------------------------------------------------------------------

    def hold_for_fork(self, timeout: float) -> bool:
        """Take the file before a fork, so no thread is inside SQLite when it happens."""
        if getattr(self._local, "inside", False):
            return False  # this very thread has it (a fork from a signal handler)
        return self._lock.acquire(timeout=timeout)

    def release_after_fork(self) -> None:
        """Give the file back, in the parent, after the fork."""
        self._lock.release()

    def after_fork_in_child(self) -> None:
        """A forked child keeps its own rows: a new connection and owner of its own.

        The parent's connection is abandoned, never closed: closing it here could
        checkpoint and delete the write-ahead log the parent is using. The child opens
        the file when it first uses it, not here: a child that never reports never
        touches SQLite, and the fork handler does as little as it can.
        """
        abandon(self._db)
        # Its descriptors on the file and the log, though, are closed: a chain of forks
        # kept two more per generation. Not through SQLite (see above); not the -shm's,
        # which SQLite shares, process-wide, with the connection the child opens on the
        # same file. The child holds no fcntl lock (not inherited), so none is let go.
        _close_fds_on(self._db_files | self._left_files)
        if self._owner_lock is not None:
            os.close(self._owner_lock)  # the parent's lock stays the parent's alone
        self.staged = deque()
        self.staged_bytes = 0
        self._writing = 0
        self._out = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._reset_file_state()
        self.pending = 0

    def close(self) -> int:
        """Write what is staged and close the file; returns how many metrics were not written.

        Rows not delivered stay for the next buffer on this path.
        """
        self._acquire()
        try:
            self._check_file()
            if self.staged and self._writable():
                self._wait_for_others(OPEN_WAIT_MS)  # the last write: worth a wait
                self._write_staged()
            left = len(self.staged)
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
                self._db_files = set()
            self._let_go_of_owner_lock()
            self._retry_at = float("inf")  # closed: nothing opens it again
            return left
        finally:
            self._release()


def _is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is SQLite's "database is locked": another connection writes."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


def _is_full(error: sqlite3.Error) -> bool:
    """Whether ``error`` is SQLite's "database or disk is full" (or a failed write)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    return "full" in str(error) or "I/O" in str(error)


class ForeignDatabase(ConfigurationError):
    """``buffer_path`` names a SQLite database of another application."""


#: The tables of a buffer file (sqlite_sequence comes with AUTOINCREMENT), and the
#: columns Kaneda reads and writes in each.
_OWN_TABLES = {
    "meta": {"key", "value"},
    "queue": {"seq", "owner", "item"},
    "owners": {"owner", "destination"},
    "quarantine": {"seq", "item", "error", "moved_at"},
    "sqlite_sequence": set(),
}


def _refuse_foreign(db: sqlite3.Connection, path: str) -> None:
    """Raise ForeignDatabase if the file holds tables that are not a buffer's.

    Opening it as a buffer would add tables to another application's database and
    switch it to WAL mode. Reads only.
    """
    strange = []
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        columns = _OWN_TABLES.get(table)
        if columns is None or not columns <= _columns(db, table):
            strange.append(table)
    if strange:
        raise ForeignDatabase(
            f"buffer_path {path!r} is a SQLite database of another application (tables that "
            f"are not a Kaneda buffer's: {', '.join(sorted(strange))}); Kaneda leaves it as "
            "it is. Give the buffer a file of its own, e.g. /var/lib/app/kaneda-buffer.sqlite"
        )


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f'PRAGMA table_info("{table}")')}


def _encode(item: Any) -> str:
    """A row: the metric with its final timestamp and its host, so that whichever process
    delivers it later writes it exactly as this one would have (see stamps)."""
    name, kind, value, tags, _when, host, id_, ns = item
    if ns is None:  # a forwarded metric made from a datetime alone
        ns = Metric(*item).epoch_ns
    row = (name, kind, value, tags, id_, ns, host)
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def _same_destination(theirs: str, ours: str) -> bool:
    """Whether rows for ``theirs`` are for a buffer delivering to ``ours``; a destination
    not said (``""``: a backend that does not say, a file from before) matches any."""
    return theirs == ours or not theirs or not ours


def _identity(path: str) -> tuple[int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino


def _files_of(path: str) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the file ``path`` and of its log, those that exist."""
    files = set()
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            named = os.stat(path + suffix)
            files.add((named.st_dev, named.st_ino))
    return files


def _close_fds_on(files: set[tuple[int, int]]) -> None:
    """Close this process's descriptors on ``files``, where they can be listed (Linux's
    /proc/self/fd, /dev/fd elsewhere). One fstat() per descriptor: done at a fork only."""
    if not files:
        return
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            with contextlib.suppress(OSError, ValueError):
                found = os.fstat(int(name))
                if (found.st_dev, found.st_ino) in files:
                    os.close(int(name))
        return


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _seq_bounds(db: sqlite3.Connection) -> tuple[int, int] | None:
    """The lowest and highest row numbers of a damaged file's queue; None if unknown."""
    try:
        high = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'queue'").fetchone()
    except sqlite3.Error:
        high = None
    if high is None:
        try:
            high = db.execute("SELECT max(seq) FROM queue").fetchone()
        except sqlite3.Error:
            return None
    if high is None or high[0] is None:
        return None
    try:
        low = db.execute("SELECT min(seq) FROM queue").fetchone()[0] or 1
    except sqlite3.Error:
        low = 1
    return int(low), int(high[0])


def _stored_token(db: sqlite3.Connection) -> str | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _read_range(db: sqlite3.Connection, low: int, high: int) -> tuple[list[Any], list[int]]:
    """The rows numbered ``low`` to ``high`` that can be read, and the numbers that could not."""
    query = "SELECT seq, owner, item FROM queue WHERE seq BETWEEN ? AND ? ORDER BY seq"
    try:
        return db.execute(query, (low, high)).fetchall(), []
    except sqlite3.Error:
        pass
    rows, failed = [], []
    for seq in range(low, high + 1):
        try:
            rows.extend(db.execute(query, (seq, seq)).fetchall())
        except sqlite3.Error:
            failed.append(seq)
    return rows, failed


def _owners_of(db: sqlite3.Connection, seqs: set[int]) -> dict[int, str] | None:
    """The owner of each row numbered in ``seqs`` that has one, read from the index alone
    (on other pages than the rows), in one pass; None if it cannot be read through."""
    found = {}
    try:
        for seq, owner in db.execute("SELECT seq, owner FROM queue INDEXED BY queue_owner"):
            if seq in seqs:
                found[seq] = owner
    except sqlite3.Error:
        return None
    return found


#: A row as _encode writes it: a JSON list opening with the name and the kind.
_ROW_START = re.compile(rb'\["(?:[^"\\]|\\.){0,2000}","[^"\\]{1,200}",')
#: Bytes of a damaged file (and of its log) looked through by _estimate_rows, at most.
ESTIMATE_BYTES = 256 << 20


def _estimate_rows(path: str) -> int:
    """About how many rows a file SQLite cannot read holds: rows found in its bytes and
    its log's (a page the log holds twice counted once; rows deleted but not yet
    overwritten counted too)."""
    found = set()
    for suffix in ("", "-wal"):
        try:
            with open(path + suffix, "rb") as file:
                data = file.read(ESTIMATE_BYTES)
        except OSError:
            continue
        for match in _ROW_START.finditer(data):
            found.add(data[match.start() : match.start() + 400].split(b"]", 2)[0])
    return len(found)


def _count_rows(path: str) -> int | None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM queue").fetchone()[0])
    except (sqlite3.Error, OSError):
        return None


def _lock_file(path: str, *, ours: bool) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``; None if another holds it.

    Never waits. The lock counts only on the file still at the path: another buffer
    sweeping lock files may have removed it between our open and our lock (see
    _adopt_orphans). Then a lock for ourselves (``ours``) is taken again on a new file,
    and another's is not ours to take.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same_file(fd, path):
                return fd
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not ours:
            return None


def _same_file(fd: int, path: str) -> bool:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (mine.st_dev, mine.st_ino)


def _release(fd: int, path: str) -> None:
    """Let go of a lock taken by _lock_file: remove its file, and always close ``fd``.

    A file that cannot be removed (the folder became read-only) is left; the lock goes
    with the descriptor, and a later buffer on the path sweeps the file (_sweep_locks).
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        log.warning("Kaneda: could not remove the lock file %s (%s); left for later", path, error)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
