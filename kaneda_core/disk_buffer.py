"""An on-disk queue (SQLite) that keeps accepted metrics until the backend has them.

A reporting call appends a row and returns; the row is deleted only after the batch it
belongs to was delivered (or given up on for good). A crash of the process loses
nothing that was accepted: the next ``Metrics`` opened on the same path delivers what
is left. Delivery is at least once, so every metric gets an id (its own ``id_``, or
one made from the buffer's token and the row number) that backends storing ids use to
keep one copy.

SQLite from the standard library: one file, atomic commits, concurrent readers, and no
dependency. WAL mode with ``synchronous=OFF`` makes an append one ``write()`` to the
log: it survives the process being killed (the OS holds the data) but not a power cut;
``durable=True`` asks for ``synchronous=FULL`` (an fsync per append) when that matters.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from typing import cast

from .delivery import Item

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    item TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_owner ON queue (owner, seq);
"""


class DiskBuffer:
    """The rows of one SQLite file, owned by this process until delivered."""

    def __init__(self, path: str, *, durable: bool = False) -> None:
        self.path = path
        self.durable = durable
        self._open()
        self.adopt_orphans()
        self.pending = self.count()

    def _open(self) -> None:
        # Rows belong to one open buffer, marked by a token and an exclusive lock on a
        # file of its own. The OS releases the lock when the process dies, however it
        # dies, so a later process can tell orphaned rows from a live neighbour's
        # (process ids are reused; locks are not).
        self._owner = uuid.uuid4().hex
        owner_lock = _lock_file(self._lock_path(self._owner), blocking=True)
        assert owner_lock is not None  # a blocking lock on a new file is always taken
        self._owner_lock = owner_lock
        self._lock = threading.Lock()
        # One connection shared by the calling threads and the worker, under _lock.
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'OFF'}")
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('token', ?)", (uuid.uuid4().hex[:12],))
        self.token = self._db.execute("SELECT value FROM meta WHERE key = 'token'").fetchone()[0]
        self._insert = "INSERT INTO queue (owner, item) VALUES (?, ?)"

    def _lock_path(self, owner: str) -> str:
        return f"{self.path}.{owner}.lock"

    def adopt_orphans(self) -> int:
        """Take over the rows of buffers that were closed or whose process died."""
        with self._lock:
            owners = [row[0] for row in self._db.execute("SELECT DISTINCT owner FROM queue")]
            adopted = 0
            for owner in owners:
                if owner == self._owner:
                    continue
                lock = _lock_file(self._lock_path(owner), blocking=False)
                if lock is None:
                    continue  # its buffer is open, in this process or another
                adopted += self._db.execute(
                    "UPDATE queue SET owner = ? WHERE owner = ?", (self._owner, owner)
                ).rowcount
                _release(lock, self._lock_path(owner))
            return adopted

    def append(self, item: Item) -> int:
        """Store one queued call; returns how many rows of this process are waiting."""
        text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._db.execute(self._insert, (self._owner, text))
            self.pending += 1
            return self.pending

    def take(self, limit: int) -> tuple[list[int], list[Item]]:
        """The oldest ``limit`` rows of this process (not removed): row numbers and calls."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, item FROM queue WHERE owner = ? ORDER BY seq LIMIT ?",
                (self._owner, limit),
            ).fetchall()
        seqs = [seq for seq, _ in rows]
        items = []
        for seq, text in rows:
            row = json.loads(text)  # 6 fields, or 7 for a forwarded metric (its host)
            if row[4] is None:
                row[4] = self._id(seq)
            items.append(cast(Item, tuple(row)))
        return seqs, items

    def _id(self, seq: int) -> str:
        return f"{self.token}-{seq}"

    def ack(self, seqs: Sequence[int]) -> None:
        """Forget delivered rows."""
        if not seqs:
            return
        with self._lock:
            self.pending -= self._db.execute(
                "DELETE FROM queue WHERE owner = ? AND seq BETWEEN ? AND ?",
                (self._owner, seqs[0], seqs[-1]),
            ).rowcount

    def drop_oldest(self) -> Item | None:
        """Remove and return this process's oldest row (the buffer was full)."""
        seqs, items = self.take(1)
        if not seqs:
            return None
        self.ack(seqs)
        return items[0]

    def count(self) -> int:
        """Rows of this buffer waiting for delivery."""
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT count(*) FROM queue WHERE owner = ?", (self._owner,)
                ).fetchone()[0]
            )

    def after_fork_in_child(self) -> None:
        """A forked child keeps its own rows: a new connection and owner of its own."""
        os.close(self._owner_lock)  # the parent's lock stays the parent's alone
        self._open()
        self.pending = 0

    def close(self) -> None:
        """Close the file; rows not delivered stay for the next buffer on this path."""
        with self._lock:
            self._db.close()
            _release(self._owner_lock, self._lock_path(self._owner))


def _lock_file(path: str, *, blocking: bool) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``; None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release(fd: int, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)
