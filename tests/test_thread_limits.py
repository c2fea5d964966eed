"""When no thread can be started (a container's pids limit, ``ulimit -u``, no memory for a
stack), the application still starts, its calls and its close() never raise, and every
metric is delivered or counted.

Each case runs in a fresh interpreter whose ``Thread.start`` refuses Kaneda's threads by
name, as CPython does at a thread limit (``RuntimeError: can't start new thread``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REFUSING = """
import sys, threading
REFUSED = set({refused!r})
_start = threading.Thread.start
def start(self):
    if any(self.name.startswith(name) for name in REFUSED):
        raise RuntimeError("can't start new thread")
    return _start(self)
threading.Thread.start = start
"""


def run(
    code: str, refused: tuple[str, ...], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    script = REFUSING.format(refused=refused) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("options", ["", "aggregate=True", "buffer_path=BUFFER"])
def test_with_no_worker_thread_metrics_starts_and_delivers_in_the_callers_thread(
    options: str, tmp_path: Path
) -> None:
    done = run(
        f"""
        from kaneda_core import Metrics
        from kaneda_core.backends import MemoryBackend
        BUFFER = {str(tmp_path / "buffer.sqlite")!r}
        backend = MemoryBackend()
        metrics = Metrics(backend, {options})
        sys.stderr.write("made\\n")
        metrics.increment("a")
        metrics.gauge("g", 1)
        print(len(backend.metrics), metrics.stats().sent)
        metrics.close()
        """,
        refused=("kaneda-worker",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2"]
    # Said once, at the first call: no thread is started when a Metrics is made.
    warning = "cannot start Kaneda's kaneda-worker thread"
    assert done.stderr.count(warning) == 1, done.stderr
    assert done.stderr.index("made") < done.stderr.index(warning), done.stderr
    assert "delivers each metric in the caller's thread" in done.stderr


@pytest.mark.parametrize(
    "options",
    [
        "",
        "aggregate=True",
        "buffer_path=BUFFER",
        "max_buffer_bytes=10**6",
        "aggregate=True, buffer_path=BUFFER",
        "aggregate=True, max_buffer_bytes=10**6",
    ],
)
def test_with_no_worker_thread_a_method_taken_before_the_first_call_loses_nothing(
    options: str, tmp_path: Path
) -> None:
    # Taken before the first call, an aggregated increment folds as before: what it
    # folds is delivered with the next call, flush, close or exit, in the caller's thread.
    done = run(
        f"""
        import threading
        from kaneda_core import Metrics
        from kaneda_core.backends import MemoryBackend
        BUFFER = {str(tmp_path / "buffer.sqlite")!r}
        backend = MemoryBackend()
        metrics = Metrics(backend, {options})
        increment = metrics.increment
        for _ in range(5):
            increment("a")
        metrics.gauge("g", 1)
        increment("a")
        left = metrics.flush(5)
        stats = metrics.stats()
        total = sum(m.value for m in backend.metrics if m.name == "a")
        workers = [t for t in threading.enumerate() if t.name == "kaneda-worker"]
        print(left, stats.queued, stats.failed, stats.dropped, total, len(workers))
        increment("a")
        print(metrics.close(5), sum(m.value for m in backend.metrics if m.name == "a"))
        """,
        refused=("kaneda-worker",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0", "0", "0", "6", "0", "0", "7"], done.stdout


def test_with_no_worker_thread_a_disk_buffer_holding_rows_keeps_them_and_delivers_calls(
    tmp_path: Path,
) -> None:
    # Rows an earlier process left start the worker when the Metrics is made: with no
    # thread to be had, the rows stay on disk and the calls deliver in the caller's thread.
    done = run(
        f"""
        from kaneda_core import Backend, Metrics
        from kaneda_core.backends import MemoryBackend
        class Down(Backend):
            def send(self, batch):
                raise ConnectionRefusedError("down")
        BUFFER = {str(tmp_path / "buffer.sqlite")!r}
        REFUSED.clear()
        earlier = Metrics(Down(), buffer_path=BUFFER, flush_interval=60)
        for n in range(3):
            earlier.gauge("earlier", n)
        earlier.close(2)
        REFUSED.add("kaneda-worker")
        backend = MemoryBackend()
        metrics = Metrics(backend, buffer_path=BUFFER, aggregate=True)
        metrics.increment("a")
        metrics.gauge("g", 1)
        print(sorted(m.name for m in backend.metrics), metrics.close(5))
        REFUSED.clear()
        later = MemoryBackend()
        Metrics(later, buffer_path=BUFFER).close(10)
        print(len(later.metrics))
        """,
        refused=(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['a',", "'g']", "0", "3"], done.stdout + done.stderr


def test_without_closer_or_signal_watcher_threads_metrics_works(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    done = run(
        f"""
        from kaneda_core import Metrics
        metrics = Metrics("logger://{path}")
        for i in range(100):
            metrics.gauge("g", i)
        print(metrics.close(5))
        """,
        refused=("kaneda-closer", "kaneda-sigterm"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"] and len(lines(path)) == 100


def test_close_and_leaving_a_with_block_never_raise_for_want_of_a_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.jsonl"
    done = run(
        f"""
        from kaneda_core import Metrics
        try:
            with Metrics("logger://{path}", exit_timeout=2) as metrics:
                metrics.increment("a")
                raise ValueError("the application's own")
        except ValueError as error:
            print("kept:", error)
        again = Metrics("logger://{path}")
        again.increment("b")
        print("left", again.close(2))
        """,
        refused=("kaneda-close", "kaneda-hook"),
    )
    assert done.returncode == 0, done.stderr
    assert "kept: the application's own" in done.stdout and "left 0" in done.stdout
    assert sorted(str(line["name"]) for line in lines(path)) == ["a", "b"]


def test_at_exit_every_metrics_is_delivered_without_a_closing_thread(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    done = run(
        f"""
        from kaneda_core import Metrics
        a = Metrics("logger://{first}", flush_interval=3600, batch_size=1000)
        b = Metrics("logger://{second}", flush_interval=3600, batch_size=1000)
        for i in range(100):
            a.gauge("a", i)
            b.gauge("b", i)
        """,
        refused=("kaneda-close", "kaneda-hook"),
    )
    assert done.returncode == 0, done.stderr
    assert (len(lines(first)), len(lines(second))) == (100, 100)
    assert "exit handler failed" not in done.stderr


def test_a_closer_that_could_not_start_is_started_by_a_later_metrics() -> None:
    done = run(
        """
        import gc, threading, time
        from kaneda_core import Metrics
        from kaneda_core.backends import MemoryBackend
        Metrics(MemoryBackend()).increment("first")  # let go of: no closer yet
        REFUSED.clear()
        for _ in range(3):
            Metrics(MemoryBackend()).increment("later")
        gc.collect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            workers = [t for t in threading.enumerate() if t.name == "kaneda-worker"]
            if not workers:
                break
            time.sleep(0.05)
        print(len(workers))
        """,
        refused=("kaneda-closer",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]
    assert "a Metrics let go of unclosed is closed later" in done.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_with_no_thread_to_spare_never_hangs_and_counts_its_metrics(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.jsonl"
    done = run(
        f"""
        import os, threading
        from kaneda_core import Metrics
        metrics = Metrics("logger://{path}")
        metrics.increment("parent")
        metrics.flush(5)
        REFUSED.add("kaneda-worker")  # the child's, started at the fork
        pid = os.fork()
        if pid == 0:
            for i in range(100):
                metrics.gauge("child", i)
            left = metrics.flush()  # no timeout: returns, no worker to wait for
            stats = metrics.stats()
            print("child", left, stats.queued, flush=True)
            REFUSED.clear()  # a thread can be had again: a later flush starts one
            import time
            time.sleep(1.1)
            print("child", metrics.flush(10), flush=True)
            os._exit(0)
        REFUSED.clear()
        os.waitpid(pid, 0)
        """,
        refused=(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["child", "100", "100", "child", "0"]
    assert "in this forked child" in done.stderr
    names = [line["name"] for line in lines(path)]
    assert names.count("child") == 100 and names.count("parent") == 1


def test_a_request_deadline_without_its_watchdog_thread_still_runs_the_block() -> None:
    done = run(
        """
        from kaneda_core.deadline import Watchdog
        watchdog = Watchdog()
        with watchdog.guard(0.01, lambda: print("aborted")):
            pass
        print("ran")
        """,
        refused=("kaneda-deadline",),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ran"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("options", ["", "max_buffer_bytes=10**6", "buffer_path=BUFFER"])
def test_a_forked_childs_worker_is_started_by_its_calls_once_a_thread_can_be_had(
    options: str, tmp_path: Path
) -> None:
    # Calls alone (no flush): the worker is tried again as batches fill, whatever the
    # buffer, not only by flush() or close().
    path = tmp_path / "m.jsonl"
    done = run(
        f"""
        import os, time
        from kaneda_core import Metrics
        BUFFER = {str(tmp_path / "buffer.sqlite")!r}
        metrics = Metrics("logger://{path}", batch_size=100, max_buffer=1000, {options})
        REFUSED.add("kaneda-worker")
        pid = os.fork()
        if pid == 0:
            REFUSED.clear()  # the limit passes just after the fork
            for i in range(3000):
                metrics.gauge("child", i)
                time.sleep(0.0005)
            time.sleep(1.5)
            stats = metrics.stats()
            print("child", stats.sent + stats.queued, stats.dropped, flush=True)
            os._exit(0)
        REFUSED.clear()
        os.waitpid(pid, 0)
        """,
        refused=(),
    )
    assert done.returncode == 0, done.stderr
    sent_or_queued, dropped = map(int, done.stdout.split()[1:])
    assert (sent_or_queued, dropped) == (3000, 0), done.stdout
