"""Timestamp slots: one folder of lock files for every process and user of the host."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Each child starts its search at the same slot (its process id, faked, ends in 00): two
# children that do not see each other's lock files then take the same slot.
HOLDER = textwrap.dedent(
    """
    import os, sys
    os.getpid = lambda: 4200
    from kaneda_core import stamps
    print(stamps.process_slot(), flush=True)
    sys.stdin.readline()  # holds its slot until told
    """
)


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP")}
    env.update(values)
    return env


def _run(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_processes_with_different_temporary_folders_take_different_slots(
    tmp_path: Path,
) -> None:
    """As two systemd services with PrivateTmp do: each has a /tmp of its own."""
    children = []
    try:
        for name in ("a", "b"):
            tmp = tmp_path / name
            tmp.mkdir()
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", HOLDER],
                    env=_env(TMPDIR=str(tmp)),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        slots = [child.stdout.readline().strip() for child in children]  # type: ignore[union-attr]
        assert all(slot.isdigit() for slot in slots), slots
        assert slots[0] != slots[1]
    finally:
        for child in children:
            try:
                child.communicate("\n", timeout=30)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    assert [child.returncode for child in children] == [0, 0]


def test_lock_files_and_their_folder_are_usable_by_every_user(tmp_path: Path) -> None:
    out = _run(
        f"""
        import os, stat
        os.umask(0o077)  # what the lock files and the folder are created under
        from kaneda_core import stamps
        stamps.process_slot()
        print(oct(stat.S_IMODE(os.stat(stamps._lock_path).st_mode)))
        folder = {str(tmp_path / "slots")!r}
        stamps._make_folder(folder)
        print(oct(stat.S_IMODE(os.stat(folder).st_mode)))
        fd = stamps._open_lock(os.path.join(folder, "00.lock"))
        print(oct(stat.S_IMODE(os.fstat(fd).st_mode)))
        """
    )
    used, folder, made = (int(mode, 8) for mode in out.split())
    assert used & 0o044 == 0o044
    assert folder == 0o1777
    assert made == 0o644


def test_a_lock_file_of_another_user_is_still_locked(tmp_path: Path) -> None:
    """fs.protected_regular refuses O_CREAT on another user's file in a sticky folder."""
    out = _run(
        f"""
        import fcntl, os
        from kaneda_core import stamps
        path = {str(tmp_path / "07.lock")!r}
        open(path, "w").close()
        real_open = os.open
        def refusing_open(file, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                raise PermissionError(13, "Permission denied", file)
            return real_open(file, flags, *args, **kwargs)
        os.open = refusing_open
        fd = stamps._open_lock(path)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("locked")
        """
    )
    assert out.split() == ["locked"]


def test_a_lock_file_that_cannot_be_opened_is_skipped(tmp_path: Path) -> None:
    out = _run(
        """
        import os
        os.getpid = lambda: 4200
        from kaneda_core import stamps
        real_open = os.open
        def refusing_open(file, flags, *args, **kwargs):
            if str(file).endswith("00.lock"):
                raise PermissionError(13, "Permission denied", file)
            return real_open(file, flags, *args, **kwargs)
        os.open = refusing_open
        print(stamps.process_slot())
        """,
        TMPDIR=str(tmp_path),
    )
    assert out.split() != ["0"] and out.split()[0].isdigit()


def test_what_is_not_a_regular_file_is_skipped_not_waited_on(tmp_path: Path) -> None:
    # A FIFO named like a lock file (any user of the host may make one in the shared
    # folder) blocked the open for ever: every process's Metrics() hung, root's too.
    os.mkfifo(tmp_path / "00.lock", 0o600)
    (tmp_path / "01.lock").mkdir()
    out = _run(
        f"""
        from kaneda_core import stamps
        print(*stamps._slot_in({str(tmp_path)!r}, 0))
        """
    )
    assert out.split() == ["2", "2"]  # slot 2; two refused


#: Takes a slot with the shared folder at ``shared`` (not the host's /dev/shm), the
#: warnings on stdout; prints the slot and its lock file last.
TAKER = """
import logging, os, sys
logging.basicConfig(stream=sys.stdout, format="LOG %(message)s")
os.getpid = lambda: 4200
from kaneda_core import stamps
stamps.SHARED_MEMORY = {shared!r}
{before}
print(stamps.process_slot(), stamps._lock_path)
"""


def _take(tmp_path: Path, before: str = "") -> tuple[str, list[str]]:
    """The warnings logged, and (slot, lock file) as the last line."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "shm").mkdir(exist_ok=True)
    out = _run(
        TAKER.format(shared=str(tmp_path / "shm"), before=textwrap.dedent(before)),
        TMPDIR=str(tmp_path / "tmp"),
    )
    *logged, last = out.strip().splitlines()
    return last, logged


def test_a_shared_folder_that_cannot_be_used_is_named_in_a_warning(tmp_path: Path) -> None:
    # A process took a slot of $TMPDIR without a word, one a process using the shared
    # folder may hold: their points' timestamps then collide.
    (tmp_path / "shm").mkdir()
    (tmp_path / "shm" / "kaneda-slots").write_text("")  # not a folder: cannot be used
    last, logged = _take(tmp_path)
    assert last.split()[1].startswith(str(tmp_path / "tmp" / "kaneda-slots"))
    [warning] = logged
    assert str(tmp_path / "shm" / "kaneda-slots") in warning
    assert "File exists" in warning and "same timestamp" in warning


def test_with_no_folder_usable_the_warning_quotes_each_folders_error(tmp_path: Path) -> None:
    (tmp_path / "shm").mkdir()
    (tmp_path / "shm" / "kaneda-slots").write_text("")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "kaneda-slots").symlink_to(tmp_path)  # not followed
    last, logged = _take(tmp_path)
    assert last.split() == ["0", "None"]  # the process id's
    [warning] = logged
    assert f"{tmp_path / 'shm' / 'kaneda-slots'}: [Errno 17] File exists" in warning
    assert f"{tmp_path / 'tmp' / 'kaneda-slots'}: [Errno 20] not a folder" in warning


def test_a_read_only_shared_folder_still_locks_the_lock_files_in_it(tmp_path: Path) -> None:
    # Made by other processes: opened and locked read-only, where no file can be made.
    folder = tmp_path / "shm" / "kaneda-slots"
    folder.mkdir(parents=True)
    (folder / "07.lock").write_text("")
    last, logged = _take(
        tmp_path,
        """
        import errno
        real_open = os.open
        def read_only(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and not os.path.exists(path):
                raise OSError(errno.EROFS, "Read-only file system", path)
            return real_open(path, flags, *args, **kwargs)
        os.open = read_only
        """,
    )
    assert last.split() == ["7", str(folder / "07.lock")]
    assert logged == []


def test_a_deleted_lock_file_is_locked_again(tmp_path: Path) -> None:
    # A temporary-file cleaner deleted it: a process coming later would make the file
    # anew and take this process's slot.
    last, logged = _take(
        tmp_path,
        """
        stamps.process_slot()
        os.unlink(stamps._lock_path)
        stamps.release_passed()  # (as the delivery worker does at each round)
        """,
    )
    folder = tmp_path / "shm" / "kaneda-slots"
    assert last.split() == ["0", str(folder / "00.lock")]
    assert os.path.exists(folder / "00.lock")
    [warning] = logged
    assert f"{folder / '00.lock'}, was deleted; locked it again" in warning


def test_a_deleted_lock_file_another_process_locked_anew_moves_to_another_slot(
    tmp_path: Path,
) -> None:
    last, logged = _take(
        tmp_path,
        """
        import fcntl
        stamps.process_slot()
        stamps.release_passed()  # checked: nothing to do, nor for CHECK_LOCK_EVERY seconds
        os.unlink(stamps._lock_path)
        other = os.open(stamps._lock_path, os.O_RDONLY | os.O_CREAT)  # a later process's
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        stamps.release_passed()
        print(stamps.slot)
        stamps._lock_checked -= stamps.CHECK_LOCK_EVERY
        stamps.release_passed()
        """,
    )
    assert logged[0] == "0"  # not looked at again before CHECK_LOCK_EVERY seconds
    assert last.split()[0] == "1"
    assert last.split()[1].endswith("01.lock")
    assert "00.lock, was deleted; another process holds the new one" in logged[1]
    assert "now stamps in slot 1" in logged[1]


def test_a_hard_link_is_not_used_as_a_lock_nor_made_readable(tmp_path: Path) -> None:
    # Any user may link a file of root's into the shared folder: the chmod made it 0644.
    secret = tmp_path / "secret"
    secret.write_text("")
    secret.chmod(0o600)
    folder = tmp_path / "slots"
    folder.mkdir()
    os.link(secret, folder / "00.lock")
    out = _run(
        f"""
        from kaneda_core import stamps
        print(*stamps._slot_in({str(folder)!r}, 0))
        """
    )
    assert out.split() == ["1", "1"]  # slot 1; one refused
    assert secret.stat().st_mode & 0o777 == 0o600
