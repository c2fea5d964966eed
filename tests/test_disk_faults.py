"""The disk buffer when the disk fails: full, erroring, or holding a damaged file."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from kaneda_core import Metric, Metrics
from kaneda_core.backends import MemoryBackend
from kaneda_core.disk_buffer import DiskBuffer

# Run in a child process: RLIMIT_FSIZE makes every write past the limit fail with EFBIG,
# as a full disk fails a write, for this process alone.
FULL_DISK = textwrap.dedent("""
    import json, os, resource, signal, sys, time
    from kaneda_core import InvalidMetric, Metrics
    from kaneda_core.backends import MemoryBackend

    class Switchable(MemoryBackend):
        down = True
        def send(self, batch):
            if self.down:
                raise ConnectionRefusedError("down")
            super().send(batch)

    path = sys.argv[1]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    backend = Switchable()
    metrics = Metrics(backend, buffer_path=path, batch_size=100, flush_interval=0.02)
    for i in range(2000):
        metrics.gauge("before", i)  # kept in the file: the backend is down
    metrics.flush(1)
    # The disk is full: no write past the first page of any file succeeds.
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    backend.down = False  # delivered now: the worker's deletes fail, its writes too
    raised = []
    for i in range(4148):
        try:
            metrics.gauge("during", i)
        except Exception as error:
            raised.append(repr(error))
    time.sleep(0.5)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    time.sleep(1.2)  # the buffer tries the file again after a second
    for i in range(1000):
        metrics.gauge("after", i)
    left = metrics.flush(15)
    worker_alive = metrics._dispatcher._worker.is_alive()
    stats = metrics.stats()
    metrics.close(5)
    names = {}
    for m in backend.metrics:
        names.setdefault(m.name, set()).add(m.value)
    print(json.dumps({
        "raised": raised[:3], "left": left, "alive": worker_alive,
        "counts": {k: len(v) for k, v in names.items()}, "total": len(backend.metrics),
        "dropped": stats.dropped, "failed": stats.failed,
    }))
""")


def test_a_full_disk_never_raises_kills_the_worker_or_loses_metrics(tmp_path: Path) -> None:
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "b.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["raised"] == []  # calls never raise because of the disk
    assert result["alive"] and result["left"] == 0
    # Held in memory while the file failed, delivered, and the file used again after.
    assert result["counts"] == {"before": 2000, "during": 4148, "after": 1000}, result
    assert result["total"] == 7148  # and once each: a row whose delete failed is not resent
    assert result["dropped"] == result["failed"] == 0
    assert "disk buffer" in done.stderr and "works again" in done.stderr  # said once each


def test_when_memory_is_full_too_what_could_not_be_kept_is_counted_and_hooked(
    tmp_path: Path, failures: object
) -> None:
    from kaneda_core import disk_buffer

    path = tmp_path / "b.sqlite"
    backend = MemoryBackend()
    metrics = Metrics(
        backend,
        buffer_path=path,
        batch_size=10_000,
        flush_interval=60,
        max_buffer=50,
        overflow="drop_newest",
    )
    buffer = metrics._dispatcher.disk
    assert buffer is not None
    buffer._trouble("writing to", sqlite3.OperationalError("database or disk is full"))
    buffer._retry_at = time.monotonic() + 60  # the disk stays full for the test
    for i in range(80):
        metrics.gauge("g", i)
    assert metrics.stats().dropped == 30
    metrics.flush(5)
    assert len(backend.metrics) == 50
    assert sum(len(batch) for batch, _ in failures.failures) == 30  # type: ignore[attr-defined]
    assert disk_buffer.RETRY_AFTER > 0
    metrics.close()


def _buffer_with_rows(path: Path, rows: list[str]) -> None:
    """A buffer file holding ``rows`` under an owner whose process is gone."""
    metrics = Metrics(MemoryBackend(), buffer_path=path)
    metrics.close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO queue (owner, item) VALUES ('gone', ?)", [(row,) for row in rows]
        )


def test_unreadable_rows_are_moved_aside_counted_and_the_rest_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.sqlite"
    good = [json.dumps(["g", "gauge", i, {}, None, time.time_ns()]) for i in range(3001)]
    _buffer_with_rows(path, [*good[:1000], "{not json", '["short", "array"]', *good[1000:]])
    backend = MemoryBackend()
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics(backend, buffer_path=path, batch_size=500)
        assert metrics.flush(20) == 0
    assert sorted(m.value for m in backend.metrics) == list(range(3001))
    assert metrics.stats().unreadable == 2
    assert str(path) in caplog.text and "quarantine" in caplog.text
    metrics.close()
    with sqlite3.connect(path) as db:
        kept = [row[0] for row in db.execute("SELECT item FROM quarantine ORDER BY seq")]
        assert kept == ["{not json", '["short", "array"]']
        assert db.execute("SELECT count(*) FROM queue").fetchone()[0] == 0
    # The next process starts clean: nothing is read twice.
    again = MemoryBackend()
    with Metrics(again, buffer_path=path) as later:
        later.flush(5)
        assert later.stats().unreadable == 0 and again.metrics == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_file_is_moved_aside_and_the_application_starts(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.sqlite"
    _buffer_with_rows(path, [json.dumps(["g", "gauge", i, {}, None, 1]) for i in range(5000)])
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "flip":
        for offset in range(0, len(data), 4096):  # every page's start
            data[offset + 8 : offset + 40] = bytes(b ^ 0xFF for b in data[offset + 8 : offset + 40])
    else:
        data = bytearray(b"this is not a database" * 100)
    path.write_bytes(bytes(data))
    backend = MemoryBackend()
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics(backend, buffer_path=path, batch_size=100)  # does not raise
    metrics.gauge("new", 1)
    assert metrics.flush(10) == 0
    assert [m.name for m in backend.metrics if m.name == "new"] == ["new"]
    aside = list(tmp_path.glob("b.sqlite.damaged-*"))
    assert aside and any(str(p) in caplog.text for p in aside)  # kept, and named
    metrics.close()


# The disk is full (or read-only) before Kaneda writes anything: no temporary file can be
# made, so Python finds no usable temporary folder. Metrics() must not raise, in the
# process or in a child it forks.
FULL_FROM_THE_START = textwrap.dedent("""
    import json, os, resource, signal, sys
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
    backend = MemoryBackend()
    options = {"buffer_path": sys.argv[1]} if len(sys.argv) > 1 else {}
    metrics = Metrics(backend, **options)
    metrics.gauge("g", 1)
    pid = os.fork()
    if pid == 0:
        metrics.gauge("child", 1)
        os._exit(0 if metrics.flush(5) == 0 and backend.metrics[-1].name == "child" else 3)
    child = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    print(json.dumps({"left": metrics.flush(5), "stored": len(backend.metrics), "child": child}))
""")


@pytest.mark.parametrize("buffered", [False, True])
def test_a_disk_full_before_the_first_write_never_stops_the_application(
    tmp_path: Path, buffered: bool
) -> None:
    script = tmp_path / "full_at_start.py"
    script.write_text(FULL_FROM_THE_START)
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
    extra = [str(tmp_path / "b.sqlite")] if buffered else []
    done = subprocess.run(
        [sys.executable, str(script), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"left": 0, "stored": 1, "child": 0}, done.stderr


def test_another_applications_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    from kaneda_core import ConfigurationError

    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE queue (id INTEGER PRIMARY KEY, payload BLOB)")
        db.execute("INSERT INTO users (name) VALUES ('ada')")
    before = path.read_bytes()
    with pytest.raises(ConfigurationError, match=r"app\.sqlite3.*(users|queue)"):
        Metrics(MemoryBackend(), buffer_path=path)
    assert path.read_bytes() == before  # no table added, no WAL mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite3"]


def test_when_the_file_fails_metrics_kept_in_memory_are_bounded_in_bytes(
    tmp_path: Path, failures: object
) -> None:
    from kaneda_core.dispatch import item_bytes

    backend = MemoryBackend()
    metrics = Metrics(
        backend, buffer_path=tmp_path / "b.sqlite", max_buffer_bytes=200_000, flush_interval=60
    )
    buffer = metrics._dispatcher.disk
    assert buffer is not None
    buffer._trouble("writing to", sqlite3.OperationalError("database or disk is full"))
    buffer._retry_at = time.monotonic() + 60  # the disk stays full for the test
    for i in range(100):
        metrics.event("dump", f"{i:03d}" + "x" * 10_000)  # 1 MB in all
    kept = sum(item_bytes(item) for item in buffer.staged)
    assert kept <= 200_000, kept
    dropped = metrics.stats().dropped
    assert dropped > 50  # counted, and shown to the failure hook
    assert metrics.flush(5) == 0
    assert len(backend.metrics) == 100 - dropped
    hooked = sum(len(batch) for batch, _ in failures.failures)  # type: ignore[attr-defined]
    assert 0 < hooked <= dropped  # what waits for the hook is bounded in bytes too
    assert sorted(m.value[:3] for m in backend.metrics)[-1] == "099"  # the newest kept
    metrics.close()


def test_a_buffer_path_that_is_a_folder_is_refused_at_once(tmp_path: Path) -> None:
    from kaneda_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="is a folder"):
        Metrics(MemoryBackend(), buffer_path=tmp_path)  # it ran on without its disk buffer


def test_a_metric_too_large_for_a_row_is_refused_alone_and_the_file_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite holds at most 1e9 bytes in a row (here made 10,000): such a metric was taken
    for a damaged file, which was moved aside with every metric in it, then a new one
    tried, for ever, the reporting call never returning."""
    from kaneda_core import disk_buffer

    monkeypatch.setattr(disk_buffer, "MAX_ROW_BYTES", 10_000)
    backend = MemoryBackend()
    metrics = Metrics(backend, buffer_path=tmp_path / "b.sqlite", flush_interval=60)
    metrics.increment("before")
    disk = metrics._dispatcher.disk  # type: ignore[union-attr]
    assert disk is not None and disk._db is not None  # written by the call
    disk._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)
    started = time.monotonic()
    metrics.event("huge", "a" * 20_000)
    metrics.increment("after")
    assert time.monotonic() - started < 2
    assert metrics.flush(10) == 0
    assert sorted(m.name for m in backend.metrics) == ["after", "before"]
    assert metrics.stats().failed == 1
    assert "more than the disk buffer's SQLite file holds in a row" in caplog.text
    assert [p.name for p in tmp_path.iterdir() if "damaged" in p.name] == []
    metrics.close()


def test_a_batch_sent_from_a_file_moved_aside_deletes_nothing_in_the_new_one(
    tmp_path: Path,
) -> None:
    """A damaged file moved aside while the worker sent a batch from it: the new file
    numbers its rows from 1 again, and the batch's ack deleted the new file's rows by
    those numbers (metrics never delivered, gone)."""
    buffer = DiskBuffer(str(tmp_path / "b.sqlite"))
    try:
        for i in range(3):
            buffer.append(("old", "gauge", i, {}, None, "h", None, i))
        batch = buffer.take(10)
        assert len(batch) == 3
        # What a read that finds the file damaged does (a unit of its own: the damage
        # itself is exercised above).
        buffer._move_aside(sqlite3.DatabaseError("database disk image is malformed"))
        for i in range(2):
            buffer.append(("new", "gauge", i, {}, None, "h", None, i))
        buffer.ack([seq for seq, _ in batch if seq is not None])  # the batch was delivered
        # The old rows were read back from the file moved aside (at least once: with
        # their ids) and numbered anew: the stale ack deleted none of them, nor new ones.
        taken = buffer.take(10)
        assert [item[0] for _, item in taken] == ["old", "old", "old", "new", "new"]
        assert [item[6] for _, item in taken[:3]] == [item[6] for _, item in batch]
    finally:
        buffer.close()


def test_a_delivery_that_raises_loses_no_metric_held_in_memory_uncounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file failing, metrics wait in memory; a MemoryError inside the worker's delivery
    # took those it held with it, counted nowhere (the queue in memory counts them).
    from kaneda_core import delivery

    backend = MemoryBackend()
    metrics = Metrics(backend, buffer_path=tmp_path / "b.sqlite", batch_size=50, flush_interval=60)
    buffer = metrics._dispatcher.disk
    assert buffer is not None
    buffer._trouble("writing to", sqlite3.OperationalError("disk I/O error"))
    buffer._retry_at = time.monotonic() + 60  # the disk stays failing for the test
    real = delivery.Delivery.to_metrics
    raised = []

    def once(self: object, items: object) -> object:
        if not raised:
            raised.append(True)
            raise MemoryError
        return real(self, items)  # type: ignore[arg-type]

    monkeypatch.setattr(delivery.Delivery, "to_metrics", once)
    for i in range(200):
        metrics.gauge("g", i)
    metrics.flush(5)
    stats = metrics.stats()
    assert raised and stats.failed == 50 and stats.sent == len(backend.metrics) == 150
    assert stats.queued == 0
    metrics.close()


def test_a_staged_batch_whose_writing_raises_stays_staged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import disk_buffer

    buffer = DiskBuffer(str(tmp_path / "b.sqlite"))
    for i in range(10):
        buffer.staged.append(("g", "gauge", i, {}, None, "h", None, i))
    real = disk_buffer._encode

    def failing(item: object) -> str:
        if item[2] == 5:  # type: ignore[index]
            raise MemoryError
        return real(item)

    monkeypatch.setattr(disk_buffer, "_encode", failing)
    with pytest.raises(MemoryError):
        buffer.take(10)  # writes what is staged first
    assert [item[2] for item in buffer.staged] == list(range(10))
    assert buffer.queued() == 10
    monkeypatch.undo()  # memory again: written, all of them
    assert [item[2] for _, item in buffer.take(20)] == list(range(10))
    buffer.close()


def test_a_delivery_that_raises_after_storing_part_counts_only_the_rest_failed(
    tmp_path: Path,
) -> None:
    # Nine stored (counted sent), the tenth waiting for its retry when the backend raises
    # SystemExit: failed is the one not counted yet, not the ten.
    from kaneda_core import DeliveryError, RetryPolicy

    class PartThenExit(MemoryBackend):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def send(self, batch: Sequence[object]) -> None:
            self.calls += 1
            if self.calls > 1:
                raise SystemExit(3)  # a client library calling sys.exit()
            super().send(batch[:-1])  # type: ignore[arg-type]
            raise DeliveryError("busy", retryable=True, metrics=batch[-1:])  # type: ignore[arg-type]

    backend = PartThenExit()
    retry = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.01)
    metrics = Metrics(
        backend, buffer_path=tmp_path / "b.sqlite", batch_size=10, flush_interval=60, retry=retry
    )
    buffer = metrics._dispatcher.disk
    assert buffer is not None
    buffer._trouble("writing to", sqlite3.OperationalError("disk I/O error"))
    buffer._retry_at = time.monotonic() + 60  # kept in memory, taken from there
    for i in range(10):
        metrics.gauge("g", i)
    metrics.flush(5)
    stats = metrics.stats()
    assert (stats.sent, stats.failed, len(backend.metrics)) == (9, 1, 9), stats
    metrics.close(1)


def test_metrics_being_written_from_the_staging_list_still_count_as_queued(
    tmp_path: Path,
) -> None:
    # The thread that writes takes everything staged, then inserts it: meanwhile those
    # metrics were neither staged nor in the file, and stats() missed them.
    import threading

    buffer = DiskBuffer(str(tmp_path / "b.sqlite"))
    for i in range(10):
        buffer.staged.append(("g", "gauge", i, {}, None, "h", None, i))
    inserting, release = threading.Event(), threading.Event()
    real = buffer._db

    class SlowInserts:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def __enter__(self) -> object:
            return real.__enter__()

        def __exit__(self, *exc: object) -> object:
            return real.__exit__(*exc)

        def executemany(self, sql: str, rows: object) -> object:
            inserting.set()
            release.wait(10)
            return real.executemany(sql, rows)  # type: ignore[arg-type]

    buffer._db = SlowInserts()  # type: ignore[assignment]
    writer = threading.Thread(target=buffer.take, args=(1,))
    writer.start()
    try:
        assert inserting.wait(10)
        assert buffer.queued() == 10
    finally:
        release.set()
        writer.join(10)
    buffer._db = real
    assert buffer.queued() == 10
    buffer.close()


def _open_paths(prefix: Path) -> list[str]:
    """The files under ``prefix`` this process holds open."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if link.startswith(str(prefix))]


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Files in ``folder`` can no longer be removed or renamed (a read-only remount)."""
    from kaneda_core import disk_buffer

    real_unlink, real_replace = os.unlink, os.replace

    def unlink(path: str) -> None:
        if str(path).startswith(str(folder)):
            raise OSError(30, "Read-only file system", str(path))
        real_unlink(path)

    def replace(source: str, target: str) -> None:
        if str(source).startswith(str(folder)):
            raise OSError(30, "Read-only file system", str(source))
        real_replace(source, target)

    monkeypatch.setattr(disk_buffer.os, "unlink", unlink)
    monkeypatch.setattr(disk_buffer.os, "replace", replace)


def test_close_in_a_folder_become_read_only_raises_nothing_and_lets_go_of_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, buffer_path=tmp_path / "b.sqlite", flush_interval=0.05)
    for i in range(100):
        metrics.gauge("g", i)
    assert metrics.flush(5) == 0
    _read_only(monkeypatch, tmp_path)
    assert metrics.close(5) == 0  # raises nothing
    assert len(backend.metrics) == 100
    assert _open_paths(tmp_path) == []  # the lock's descriptor too: the lock is free


def test_a_damaged_file_that_cannot_be_moved_aside_never_stops_the_application(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "b.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    _read_only(monkeypatch, tmp_path)
    backend = MemoryBackend()
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics(backend, buffer_path=path, flush_interval=0.05)  # raises nothing
        for i in range(10):
            metrics.gauge("g", i)
        assert metrics.flush(5) == 0  # delivered from memory
        assert metrics.close(5) == 0
    assert len(backend.metrics) == 10
    assert "moving it aside" in caplog.text
    assert path.read_bytes() == b"this is not a database" * 100  # left as it was
    assert _open_paths(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a 2 MiB filesystem of its own (tmpfs: needs root)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


class _Switchable(MemoryBackend):
    down = False

    def send(self, batch: Sequence[Metric]) -> None:
        if self.down:
            raise ConnectionRefusedError("down")
        super().send(batch)


def test_a_backlog_on_a_small_disk_is_delivered_once_and_the_disk_given_back(
    small_disk: Path,
) -> None:
    path = small_disk / "b.sqlite"
    backend = _Switchable()
    backend.down = True
    metrics = Metrics(backend, buffer_path=path, batch_size=500, flush_interval=0.05)
    for i in range(12_000):  # about the disk's size in rows: it could fill it
        metrics.gauge("g", i)
    time.sleep(0.3)
    backend.down = False
    assert metrics.flush(30) == 0
    metrics.close(10)
    assert len(backend.metrics) == 12_000
    # Delivered rows were deleted: the next process on the path delivers none again.
    later = MemoryBackend()
    Metrics(later, buffer_path=path).close(10)
    assert later.metrics == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM queue").fetchone()[0] == 0
    usage = os.statvfs(small_disk)
    assert usage.f_bavail / usage.f_blocks > 0.5  # the file shrank once all was delivered


def _fill(folder: Path) -> None:
    """Fill the filesystem of ``folder`` to its last byte."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_disk_filled_by_another_program_still_lets_delivered_rows_go(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import disk_buffer

    monkeypatch.setattr(disk_buffer, "RESERVE_BYTES", 128 << 10)
    monkeypatch.setattr(disk_buffer, "LOG_ROOM", 128 << 10)  # the file may grow
    path = small_disk / "b.sqlite"
    backend = _Switchable()
    backend.down = True
    metrics = Metrics(backend, buffer_path=path, batch_size=100, flush_interval=0.05)
    assert (small_disk / "b.sqlite.reserve").exists()
    for i in range(3000):
        metrics.gauge("g", i)
    metrics.flush(0.2)
    _fill(small_disk)  # a delete needs room in the log: the reserve gives it
    backend.down = False
    assert metrics.flush(30) == 0
    metrics.close(10)
    assert len(backend.metrics) == 3000
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM queue").fetchone()[0] == 0


# Reports with the backend down, has its buffer's file deleted (or replaced by an empty
# file), reports more, then dies by SIGKILL: what it held must be at the path.
DELETED_WHILE_OPEN = textwrap.dedent("""
    import os, signal, sys, time
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    class Down(MemoryBackend):
        def send(self, batch):
            raise ConnectionRefusedError("down")

    path, how = sys.argv[1], sys.argv[2]
    metrics = Metrics(Down(), buffer_path=path, batch_size=50, flush_interval=0.05)
    for i in range(100):
        metrics.gauge("before", i)
    time.sleep(0.3)
    for suffix in ("", "-wal", "-shm"):
        os.remove(path + suffix)
    if how == "replace":
        open(path, "w").close()
    for i in range(100):
        metrics.gauge("after", i)
    time.sleep(2.5)  # the worker looks at the file about every second
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("how", ["rm", "replace"])
def test_a_file_deleted_or_replaced_while_open_is_noticed_and_its_rows_kept(
    tmp_path: Path, how: str
) -> None:
    script = tmp_path / "deleted.py"
    script.write_text(DELETED_WHILE_OPEN)
    path = tmp_path / "b.sqlite"
    done = subprocess.run(
        [sys.executable, str(script), str(path), how], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9, done.stderr
    assert "deleted or replaced while open" in done.stderr
    backend = MemoryBackend()
    Metrics(backend, buffer_path=path).close(10)
    names = sorted((m.name, m.value) for m in backend.metrics)
    expected = [("after", float(i)) for i in range(100)] + [
        ("before", float(i)) for i in range(100)
    ]
    assert names == expected
    assert len({m.id for m in backend.metrics}) == 200


def _mapped_paths(prefix: Path) -> list[str]:
    """The files under ``prefix`` this process has mapped in memory (SQLite's -shm)."""
    with open("/proc/self/maps") as maps:
        return [line.split(maxsplit=5)[-1].strip() for line in maps if str(prefix) in line]


def _deleted_held(folder: Path) -> list[str]:
    """Deleted files under ``folder`` this process still holds, open or mapped."""
    held = _open_paths(folder) + _mapped_paths(folder)
    return sorted({path for path in held if path.endswith("(deleted)")})


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self")
@pytest.mark.parametrize("how", ["rm", "replace"])
def test_a_file_deleted_or_replaced_while_open_is_closed_once_its_rows_are_carried_over(
    tmp_path: Path, how: str
) -> None:
    """The old file was left open once its rows were carried over: a deleted file's
    space (30.9 MB in a run, its -wal and -shm with it) was held until the process
    exited, on a disk maybe full. Closed, it leaves the log and index of the file now at
    the path as they are (another buffer's here, in use)."""
    from kaneda_core import disk_buffer

    if sqlite3.sqlite_version_info < getattr(disk_buffer, "CLOSES_MOVED_FILES_SAFELY", ()):
        pytest.skip(f"SQLite {sqlite3.sqlite_version}: the old file is left open")
    path = tmp_path / "b.sqlite"
    backend = _Switchable()
    backend.down = True
    metrics = Metrics(backend, buffer_path=path, batch_size=100, flush_interval=0.05)
    for i in range(3000):
        metrics.gauge("g", i)
    metrics.flush(0.2)
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{path}{suffix}")
    assert len(_deleted_held(tmp_path)) == 3  # the file, its log and its index
    other = DiskBuffer(str(path)) if how == "replace" else None
    if other is not None:
        other.append(("other", "gauge", 1, {}, None, "h", None, 1))
        logs = {suffix: os.stat(f"{path}{suffix}").st_ino for suffix in ("-wal", "-shm")}
    disk = metrics._dispatcher.disk
    assert disk is not None
    # The worker looks at the file about every second while the backend is down.
    assert _until(lambda: disk._file_number == 1)
    assert _until(lambda: not _deleted_held(tmp_path), 2.0), _deleted_held(tmp_path)
    if other is not None:
        assert {s: os.stat(f"{path}{s}").st_ino for s in ("-wal", "-shm")} == logs
        assert [item[0] for _, item in other.take(10)] == ["other"]
        other.close()
    backend.down = False
    assert metrics.flush(20) == 0
    metrics.close(10)
    assert sorted(m.value for m in backend.metrics) == list(range(3000))  # once each


@pytest.mark.parametrize("outcome", ["delivered", "kept", "closed"])
def test_the_batch_in_flight_when_the_file_is_deleted_is_carried_over_only_if_not_delivered(
    tmp_path: Path, outcome: str
) -> None:
    """The worker's batch, sent (or waiting for a retry) when the file was found deleted,
    was carried over with the other rows, and delivered again once its ack deleted
    nothing in the new file (50 of 200 twice, same ids). Kept aside until its outcome is
    known: carried over if not delivered, or if the buffer closes first."""
    path = tmp_path / "b.sqlite"
    buffer = DiskBuffer(str(path))
    try:
        for i in range(10):
            buffer.append(("g", "gauge", i, {}, None, "h", None, i))
        batch = buffer.take(4)
        for suffix in ("", "-wal", "-shm"):
            os.remove(f"{path}{suffix}")
        buffer.look_at_file()  # the worker, between two tries of the batch
        assert buffer._file_number == 1  # carried over
        assert buffer.queued() == 10
        if outcome == "closed":  # the process ends before the batch does
            buffer.close()
            buffer = DiskBuffer(str(path))
        else:
            delivered = [seq for seq, _ in batch if seq is not None]
            buffer.ack(delivered if outcome == "delivered" else [])
        rest = buffer.take(100)
        values = sorted(item[2] for _, item in rest)
        assert values == (list(range(4, 10)) if outcome == "delivered" else list(range(10)))
        if outcome != "delivered":  # with the ids they were sent with
            sent = {item[2]: item[6] for _, item in batch}
            assert {item[2]: item[6] for _, item in rest if item[2] in sent} == sent
    finally:
        buffer.close()


def test_a_batch_retried_while_the_file_is_deleted_is_delivered_once(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    backend = _Switchable()
    backend.down = True
    metrics = Metrics(backend, buffer_path=path, batch_size=50, flush_interval=0.05)
    for i in range(200):
        metrics.gauge("g", i)
    metrics.flush(0.3)  # the worker has taken its first batch and retries it
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{path}{suffix}")
    disk = metrics._dispatcher.disk
    assert disk is not None
    assert _until(lambda: disk._file_number == 1)  # carried over while the batch waits
    backend.down = False
    assert metrics.flush(20) == 0
    metrics.close(10)
    assert sorted(m.value for m in backend.metrics) == list(range(200))
    assert len({m.id for m in backend.metrics}) == 200


def test_metrics_the_worker_took_from_memory_still_count_as_queued_and_bound_the_buffer(
    tmp_path: Path,
) -> None:
    backend = _Switchable()
    backend.down = True
    metrics = Metrics(
        backend,
        buffer_path=tmp_path / "b.sqlite",
        batch_size=100,
        flush_interval=0.02,
        max_buffer=500,
        overflow="drop_newest",
    )
    buffer = metrics._dispatcher.disk
    assert buffer is not None
    buffer._trouble("writing to it", sqlite3.OperationalError("database or disk is full"))
    buffer._retry_at = time.monotonic() + 60  # the disk stays full for the test
    for i in range(300):
        metrics.gauge("g", i)
    time.sleep(0.3)  # the worker took a batch from memory, and retries it
    assert len(buffer.staged) < 300
    assert metrics.stats().queued == 300
    for i in range(400):
        metrics.gauge("more", i)
    stats = metrics.stats()
    assert (stats.queued, stats.dropped) == (500, 200)  # max_buffer holds, batch included
    backend.down = False
    buffer._retry_at = 0.0
    assert metrics.flush(10) == 0
    assert len(backend.metrics) == 500
    metrics.close()


KILLED_AFTER_DELIVERING = textwrap.dedent("""
    import os, signal, sys
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    metrics = Metrics(MemoryBackend(), buffer_path=sys.argv[1], flush_interval=0.05)
    metrics.gauge("g", 1)
    assert metrics.flush(5) == 0  # delivered: no row of its own left
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_lock_files_of_killed_processes_are_swept_by_the_next_buffer(tmp_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED_AFTER_DELIVERING)
    path = tmp_path / "b.sqlite"
    for _ in range(5):
        done = subprocess.run([sys.executable, str(script), str(path)], timeout=60)
        assert done.returncode == -9
    metrics = Metrics(MemoryBackend(), buffer_path=path)
    assert len(list(tmp_path.glob("b.sqlite.*.lock"))) == 1  # its own; the others swept
    metrics.close()
    assert list(tmp_path.glob("b.sqlite.*.lock")) == []


def test_a_lock_file_swept_between_its_open_and_its_lock_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import disk_buffer

    path = str(tmp_path / "x.lock")
    real_flock = disk_buffer.fcntl.flock
    swept = []

    def flock(fd: int, operation: int) -> None:
        if not swept:  # another buffer removes the file just before the lock is taken
            swept.append(True)
            os.unlink(path)
        real_flock(fd, operation)

    monkeypatch.setattr(disk_buffer.fcntl, "flock", flock)
    fd = disk_buffer._lock_file(path, ours=True)
    assert fd is not None and os.path.exists(path)
    assert os.fstat(fd).st_ino == os.stat(path).st_ino  # the lock is on the file at the path
    os.close(fd)


def test_a_bad_page_costs_its_rows_not_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    _buffer_with_rows(path, [json.dumps(["g", "gauge", i, {}, None, 1]) for i in range(5000)])
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as file:  # a bad sector: one page in the middle
        file.seek(size // 4096 // 2 * 4096)
        file.write(bytes(range(256)) * 16)
    backend = MemoryBackend()
    metrics = Metrics(backend, buffer_path=path, batch_size=1000)
    assert metrics.flush(20) == 0
    stats = metrics.stats()
    metrics.close()
    delivered = len(backend.metrics)
    assert delivered > 4900  # the rows of the other pages
    assert delivered + stats.unreadable == 5000  # the others counted
    assert len({m.value for m in backend.metrics}) == delivered


def test_a_file_sqlite_cannot_read_at_all_counts_the_rows_its_bytes_hold(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    _buffer_with_rows(path, [json.dumps(["g", "gauge", i, {}, None, 1]) for i in range(3000)])
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10 // 4096 * 4096])  # cut short
    metrics = Metrics(MemoryBackend(), buffer_path=path)
    unreadable = metrics.stats().unreadable
    metrics.close()
    assert 1000 < unreadable <= 3000  # what is left of them, not 0


def test_a_backlog_delivered_gives_its_space_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import disk_buffer

    monkeypatch.setattr(disk_buffer, "SHRINK_ABOVE", 256 << 10)
    path = tmp_path / "b.sqlite"
    backend = _Switchable()
    backend.down = True
    metrics = Metrics(backend, buffer_path=path, batch_size=1000, flush_interval=0.05)
    for i in range(20_000):
        metrics.gauge("g", i, tags={"padding": "x" * 100})
    metrics.flush(0.2)

    def size() -> int:
        return sum(
            os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}")
        )

    grown = size()
    assert grown > 2 << 20
    backend.down = False
    assert metrics.flush(30) == 0
    assert size() < grown / 4  # the log truncated, the free pages given back
    metrics.close()


def _call_returns(call: Callable[[], object], seconds: float) -> bool:
    """Whether ``call`` returns within ``seconds`` (run in a thread left behind if not)."""
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_an_open_that_fails_after_taking_the_lock_lets_it_go_and_calls_never_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import disk_buffer

    path = tmp_path / "b.sqlite"
    real_identity = disk_buffer._identity
    failures = [OSError(28, "No space left on device")]

    def identity(where: str) -> tuple[int, int]:
        if failures:  # the open fails after the lock is taken (a full disk, say)
            raise failures.pop()
        return real_identity(where)

    monkeypatch.setattr(disk_buffer, "_identity", identity)
    backend = MemoryBackend()
    metrics = Metrics(backend, buffer_path=path, flush_interval=0.05)
    buffer = metrics._dispatcher.disk
    assert buffer is not None and buffer._db is None
    held = buffer._owner_lock
    try:
        locks_after_failure = list(tmp_path.glob("b.sqlite.*.lock"))
        buffer._retry_at = 0.0  # the disk has room again: the next call opens the file
        assert _call_returns(lambda: metrics.gauge("g", 1), 3)  # blocked for ever before
        assert locks_after_failure == []  # let go with the file
        assert buffer._db is not None
        assert len(list(tmp_path.glob("b.sqlite.*.lock"))) == 1
        assert metrics.flush(5) == 0
        assert [m.value for m in backend.metrics] == [1.0]
    finally:
        if held is not None and buffer._owner_lock != held:  # unblock the call left behind
            os.close(held)
    assert metrics.close(5) == 0


def test_an_own_lock_held_elsewhere_never_makes_the_open_wait(tmp_path: Path) -> None:
    import fcntl

    from kaneda_core import disk_buffer

    buffer = DiskBuffer(str(tmp_path / "b.sqlite"))
    buffer._let_go_of_file()  # the next write opens the file, under a new owner
    other = os.open(buffer._lock_path(buffer._owner), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)  # that owner's lock, held on another descriptor
    try:
        owner = buffer._owner
        assert _call_returns(lambda: buffer.append(("g", "gauge", 1, {}, None, "h", None, 1)), 3)
        assert buffer._db is not None and buffer._owner != owner  # a new owner, not a wait
        assert buffer.pending == 1
    finally:
        os.close(other)
    buffer.close()
    assert disk_buffer.RETRY_AFTER > 0


def test_a_damaged_file_shared_with_a_live_buffer_costs_it_only_the_rows_on_the_bad_page(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite"
    unreadable = {"a": 0, "b": 0}

    def counter(name: str) -> Callable[[int], None]:
        return lambda count: unreadable.__setitem__(name, unreadable[name] + count)

    a = DiskBuffer(str(path), on_unreadable=counter("a"))
    b = DiskBuffer(str(path), on_unreadable=counter("b"))  # another process's, live
    for i in range(3000):  # their rows side by side on the pages
        for who, buffer in (("a", a), ("b", b)):
            buffer.append(("g", "gauge", i, {"who": who, "pad": "x" * 50}, None, "h", None, 1))
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as file:  # a bad sector: one page in the middle
        file.seek(size // 4096 // 2 * 4096)
        file.write(b"\xff" * 4096)
    a._move_aside(sqlite3.DatabaseError("database disk image is malformed"))
    b._check_file()  # the file at the path is a new one: b carries its rows over
    assert len(b.staged) > 2900  # read back a range at a time: all rows but the bad page's
    assert len(b.staged) + unreadable["b"] == 3000  # those counted, none lost unsaid
    assert {item[3]["who"] for item in b.staged} == {"b"}
    # Each counts its own rows lost, not the other's too.
    assert len(a.staged) + unreadable["a"] == 3000
    assert {item[3]["who"] for item in a.staged} == {"a"}
    a.close()
    b.close()


class _For(_Switchable):
    """A backend for one destination."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def destination(self) -> str:
        return self.where


def test_a_backlog_delivered_gives_its_space_back_with_another_destinations_rows_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import disk_buffer

    monkeypatch.setattr(disk_buffer, "SHRINK_ABOVE", 256 << 10)
    path = tmp_path / "b.sqlite"
    other = _For("database appX")
    other.down = True
    left = Metrics(other, buffer_path=path, flush_interval=0.05)
    for i in range(3):
        left.gauge("x", i)
    left.close(0.2)  # its rows stay, for a process that delivers to appX
    backend = _For("database appY")
    backend.down = True
    metrics = Metrics(backend, buffer_path=path, batch_size=1000, flush_interval=0.05)
    for i in range(20_000):
        metrics.gauge("g", i, tags={"padding": "x" * 100})
    metrics.flush(0.2)
    grown = path.stat().st_size + _size(f"{path}-wal")
    assert grown > 2 << 20
    backend.down = False
    assert metrics.flush(30) == 0
    assert path.stat().st_size + _size(f"{path}-wal") < grown / 4  # kept it all before
    metrics.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM queue").fetchone()[0] == 3  # appX's, kept


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def test_a_reserve_given_back_is_set_aside_again_once_the_disk_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import disk_buffer

    monkeypatch.setattr(disk_buffer, "SPACE_EVERY", 0.05)
    path = tmp_path / "b.sqlite"
    reserve = tmp_path / "b.sqlite.reserve"
    backend = MemoryBackend()
    metrics = Metrics(backend, buffer_path=path, flush_interval=0.02)
    assert reserve.exists()
    buffer = metrics._dispatcher.disk
    assert buffer is not None
    assert buffer._give_back_reserve()  # as a delete on a disk another program filled does
    assert not reserve.exists()
    for i in range(20):  # the worker's rounds
        metrics.gauge("g", i)
        metrics.flush(1)
        time.sleep(0.06)
    assert reserve.exists() and reserve.stat().st_size == disk_buffer.RESERVE_BYTES
    metrics.close()
