"""One buffer_path shared by a fleet of processes (pre-fork workers given one setting).

Every process appends to the same SQLite file, and only one can write it at a time. A
reporting call never waits for another process: a metric that finds the file locked stays
staged and is written by the next call or by the worker, which waits its turn off the
caller's path. Everything is delivered once, and nothing is left in the file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kaneda_core import Metrics
from kaneda_core.backends import MemoryBackend

sys.path.insert(0, str(Path(__file__).parent / "support"))

from scripts import FLEET_MEMBER


def rows_in(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM queue").fetchone()[0])


def test_a_call_does_not_wait_while_another_process_holds_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.sqlite"
    backend = MemoryBackend()
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(backend, buffer_path=path, flush_interval=0.05)
        metrics.gauge("before", 1)
        assert metrics.flush(5) == 0
        # Another process's write in progress: SQLite's write lock, held.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        for i in range(20):
            metrics.gauge("during", i)
        waited = time.monotonic() - started
        time.sleep(0.3)  # the worker tries meanwhile, and waits its turn
        other.execute("ROLLBACK")
        other.close()
        assert metrics.flush(10) == 0
        metrics.close(5)
    # The file's busy timeout is 5 s: a call that waited for it would take that long.
    assert waited < 1.0, f"20 calls took {waited:.2f} s while another process wrote"
    assert sorted(m.value for m in backend.metrics if m.name == "during") == list(range(20))
    assert rows_in(path) == 0
    assert metrics.stats().queued == 0 and metrics.stats().failed == 0
    assert not [r for r in caplog.records if "disk buffer" in r.getMessage()], caplog.text


def test_delivered_rows_are_deleted_once_the_other_process_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    backend = MemoryBackend()
    metrics = Metrics(backend, buffer_path=path, flush_interval=60, batch_size=1000)
    for i in range(50):
        metrics.gauge("g", i)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the worker's delete after delivery must wait for it
    releaser = threading.Timer(0.3, lambda: other.execute("ROLLBACK"))
    releaser.start()
    assert metrics.flush(10) == 0
    releaser.join()
    other.close()
    metrics.close(5)
    assert len(backend.metrics) == 50
    assert rows_in(path) == 0  # else the next process on this path delivers them again


def test_a_fleet_sharing_one_path_delivers_everything_once(tmp_path: Path) -> None:
    path, calls, members = tmp_path / "shared.sqlite", 3000, 6
    outs = [tmp_path / f"out-{n}.jsonl" for n in range(members)]
    running = [
        subprocess.Popen(
            [sys.executable, "-c", FLEET_MEMBER, str(path), str(out), str(n), str(calls)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, out in enumerate(outs)
    ]
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in running]
    assert [r["left"] for r in reports] == [0] * members, reports
    assert all(r["sent"] == calls and r["queued"] == 0 for r in reports)
    stored = [json.loads(line) for out in outs for line in out.read_text().splitlines()]
    keys = [(m["tags"]["worker"], m["tags"]["i"]) for m in stored]
    assert len(keys) == len(set(keys)) == calls * members  # every call once
    assert rows_in(path) == 0
    # Not a timing test: a call that waited for SQLite's busy timeout would take 5 s.
    assert max(r["slowest"] for r in reports) < 2.5, reports


class _Down(MemoryBackend):
    """A backend for one destination that is down."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def destination(self) -> str:
        return self.where

    def send(self, batch: object) -> None:
        raise ConnectionRefusedError("down")


class _Up(_Down):
    def send(self, batch: object) -> None:
        MemoryBackend.send(self, batch)  # type: ignore[arg-type]


def test_rows_left_for_another_destination_are_not_delivered_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.sqlite"
    first = Metrics(_Down("database appA"), buffer_path=path, flush_interval=0.05)
    for i in range(50):
        first.gauge("for_a", i)
    first.close(0.2)  # its backend down: the rows stay for the next process
    other = _Up("database appB")
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        Metrics(other, buffer_path=path).close(5)
    assert other.metrics == []  # another application's: left
    assert "50 rows for another destination (database appA)" in caplog.text
    owner = _Up("database appA")
    Metrics(owner, buffer_path=path).close(5)
    assert sorted(m.value for m in owner.metrics) == list(range(50))


def test_rows_of_a_file_from_before_destinations_are_delivered_by_any(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with sqlite3.connect(path) as db:  # the previous version's schema: no owners table
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL,"
            " item TEXT NOT NULL);"
            "CREATE TABLE quarantine (seq INTEGER PRIMARY KEY, item TEXT NOT NULL,"
            " error TEXT NOT NULL, moved_at TEXT NOT NULL);"
        )
        db.executemany(
            "INSERT INTO queue (owner, item) VALUES ('gone', ?)",
            [(json.dumps(["g", "gauge", i, {}, None, 1]),) for i in range(20)],
        )
    backend = _Up("database appB")
    Metrics(backend, buffer_path=path).close(5)
    assert sorted(m.value for m in backend.metrics) == list(range(20))
