"""Forked children: their own connections, counters and locks, and their metrics delivered."""

from __future__ import annotations

import faulthandler
import io
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from kaneda_core import Backend, Metric, Metrics
from kaneda_core.backends import LoggerBackend, MemoryBackend

sys.path.insert(0, str(Path(__file__).parent / "support"))

from full_pipe import kaneda_logging_into_a_full_pipe

fork = multiprocessing.get_context("fork")


class Connected(Backend):
    """A backend that opens a "connection" (a pid stamp) on first use and counts forks."""

    def __init__(self) -> None:
        self.opened_by: int | None = None
        self.forks = 0
        self.sent_by: set[int] = set()

    def send(self, batch: Sequence[Metric]) -> None:
        if self.opened_by is None:
            self.opened_by = os.getpid()
        if self.opened_by != os.getpid():
            raise AssertionError("a child used its parent's connection")
        self.sent_by.add(os.getpid())

    def after_fork(self) -> None:
        self.forks += 1
        self.opened_by = None


def _in_child(work: object) -> int:
    """Run ``work()`` in a forked child; its exit status (0 when it returned True)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if work() else 3  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("batching", [True, False])
def test_a_child_never_uses_its_parents_connection_and_counts_from_zero(batching: bool) -> None:
    backend = Connected()
    metrics = Metrics(backend, batching=batching)
    metrics.increment("parent")
    metrics.flush(5)
    assert backend.opened_by == os.getpid() and metrics.stats().sent == 1

    def child() -> bool:
        starts_at_zero = metrics.stats().sent == 0
        metrics.increment("child")
        metrics.flush(5)
        return (
            starts_at_zero
            and backend.forks == 1
            and backend.opened_by == os.getpid()
            and metrics.stats().sent == 1
        )

    assert _in_child(child) == 0
    assert backend.forks == 0  # the parent's backend was not touched
    metrics.close()


def _buffer_fds(path: Path) -> int:
    """The descriptors this process holds on the buffer file ``path`` and its log."""
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            held += os.readlink(f"/proc/self/fd/{fd}") in (str(path), f"{path}-wal")
        except OSError:
            continue
    return held


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_chain_of_forked_children_holds_its_own_connection_not_its_ancestors(
    tmp_path: Path,
) -> None:
    """Each child abandons its parent's connection (never closes it through SQLite), but
    kept its descriptors on the file and its log open: two more per generation (a chain
    of five: 2, 4, 6, 8, 10, 12)."""
    path = tmp_path / "b.sqlite"
    metrics = Metrics(MemoryBackend(), buffer_path=path, flush_interval=0.05)
    metrics.increment("parent")
    metrics.flush(5)
    counts = tmp_path / "counts"

    def generation(left: int) -> bool:
        metrics.increment("child")  # each child opens the file: a connection of its own
        metrics.flush(5)
        with open(counts, "a") as out:
            out.write(f"{_buffer_fds(path)}\n")
        return left == 0 or _in_child(lambda: generation(left - 1)) == 0

    try:
        assert _buffer_fds(path) == 2
        assert _in_child(lambda: generation(3)) == 0
        assert counts.read_text().split() == ["2"] * 4
    finally:
        metrics.close()


@pytest.mark.parametrize(
    "options", [{}, {"aggregate": True}, {"max_buffer_bytes": 10**6}], ids=["queue", "agg", "bytes"]
)
def test_a_child_starts_its_worker_at_its_first_call_and_one_only_from_racing_threads(
    options: dict[str, Any],
) -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, flush_interval=0.05, **options)
    metrics.increment("parent")
    assert metrics.flush(5) == 0

    def workers() -> int:
        return sum(thread.name == "kaneda-worker" for thread in threading.enumerate())

    def child() -> bool:
        # None at the fork: a child that patches threading next (gevent) gets a green one.
        none_at_fork = workers() == 0 and metrics.flush(5) == 0 and workers() == 0
        sys.setswitchinterval(1e-6)  # the first calls of the threads interleave
        barrier = threading.Barrier(8)

        def report(thread: int) -> None:
            barrier.wait()
            for n in range(50):
                metrics.increment("child", tags={"t": str(thread), "n": str(n)})

        threads = [threading.Thread(target=report, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        one = workers() == 1
        delivered = metrics.flush(5) == 0 and metrics.stats().sent == 400
        return none_at_fork and one and delivered and metrics.close(5) == 0

    assert _in_child(child) == 0
    assert metrics.stats().sent == 1
    metrics.close()


def test_a_signal_handler_reporting_during_a_childs_first_call_starts_no_second_worker() -> None:
    # A handler may run between any two lines of the first call, under its reentrant
    # lock: one child per line of start_at_first_call, the handler's report made there.
    from kaneda_core.dispatch import BatchingDispatcher

    code = BatchingDispatcher.start_at_first_call.__code__
    lines = sorted({line for _, _, line in code.co_lines() if line and line > code.co_firstlineno})
    metrics = Metrics(MemoryBackend(), flush_interval=0.5)
    metrics.event("parent", "x")

    def child_interrupted_at(line: int) -> Callable[[], bool]:
        def child() -> bool:
            fired = _call_interrupted_at(metrics, code, line)
            workers = [t for t in threading.enumerate() if t.name == "kaneda-worker"]
            delivered = metrics.close(5) == 0 and metrics.stats().sent == 1 + fired
            return len(workers) == 1 and delivered

        return child

    failed = [line for line in lines if _in_child(child_interrupted_at(line)) != 0]
    assert not failed, f"a report at line(s) {failed} started two workers or lost metrics"
    metrics.close()


def test_a_signal_handler_reporting_during_the_first_call_starts_no_second_worker() -> None:
    # A handler may run between any two lines of the first call, under its reentrant
    # lock: one Metrics (never forked) per line of start_at_first_call, the handler's
    # report made there.
    from kaneda_core.dispatch import BatchingDispatcher

    code = BatchingDispatcher.start_at_first_call.__code__
    lines = sorted({line for _, _, line in code.co_lines() if line and line > code.co_firstlineno})
    failed = [line for line in lines if not _first_call_interrupted_at(code, line)]
    assert not failed, f"a report at line(s) {failed} started two workers or lost metrics"


def _first_call_interrupted_at(code: Any, line: int) -> bool:
    """One worker started, and both metrics delivered, a report made at ``line``."""
    from kaneda_core.dispatch import BatchingDispatcher

    metrics = Metrics(MemoryBackend(), flush_interval=0.5)
    dispatcher = metrics._dispatcher
    assert isinstance(dispatcher, BatchingDispatcher)
    started: list[threading.Thread] = []
    start_worker = dispatcher._start_worker

    def counting_start() -> None:
        start_worker()
        if dispatcher._worker is not None:
            started.append(dispatcher._worker)

    dispatcher._start_worker = counting_start  # type: ignore[method-assign]
    fired = _call_interrupted_at(metrics, code, line)
    delivered = metrics.close(5) == 0 and metrics.stats().sent == 1 + fired
    return len(started) == 1 and delivered


def _call_interrupted_at(metrics: Metrics, code: Any, line: int) -> int:
    """Report once, a second report made when ``code`` reaches ``line`` (what a signal
    handler run there does); how many such reports were made (0 or 1)."""
    fired: list[bool] = []

    def trace(frame: Any, event: str, _: Any) -> Any:
        if frame.f_code is not code:
            return None
        if event == "line" and frame.f_lineno == line and not fired:
            fired.append(True)
            metrics.event("signal", "s")  # what a signal handler's report does
        return trace

    sys.settrace(trace)
    try:
        metrics.event("call", "c")
    finally:
        sys.settrace(None)
    return len(fired)


def test_every_backend_gets_its_fork_step_once_even_when_shared() -> None:
    backend = Connected()
    first, second = Metrics(backend), Metrics(backend, batching=False)
    unattached = Connected()  # made and never given to a Metrics

    def child() -> bool:
        return backend.forks == 1 and unattached.forks == 1

    assert _in_child(child) == 0
    first.close()
    second.close()


def test_a_failing_fork_step_does_not_break_the_child(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryBackend):
        def after_fork(self) -> None:
            raise RuntimeError("cannot reset")

    metrics = Metrics(Broken())

    def child() -> bool:
        metrics.increment("x")
        return metrics.flush(5) == 0

    assert _in_child(child) == 0
    metrics.close()


@pytest.mark.parametrize("buffered", [False, True])
def test_fork_while_other_threads_hold_kanedas_locks_never_hangs_a_child(
    tmp_path: Path, buffered: bool
) -> None:
    """Threads report and drop (counter lock, buffer state, disk file) while we fork."""
    backend = MemoryBackend()
    options = {"buffer_path": tmp_path / "b.sqlite"} if buffered else {}
    metrics = Metrics(backend, batch_size=50, flush_interval=0.001, max_buffer=20, **options)
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            metrics.increment("busy")  # the buffer is full: drops take the counters' lock
            metrics.stats()

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    children = []
    _dump_stacks_on_sigusr1(tmp_path / "stacks.txt")
    try:
        for _ in range(60):
            pid = os.fork()
            if pid == 0:
                try:
                    metrics.increment("child")
                    metrics.stats()
                    metrics.flush(2)
                    metrics.close(2)
                finally:
                    os._exit(0)
            children.append(pid)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    hung, stacks = _reap(children, tmp_path / "stacks.txt", within=60)
    assert hung == 0, f"{hung} children hung; their threads:\n{stacks}"
    metrics.close(5)


def test_a_child_forked_while_kanedas_thread_writes_a_log_line_can_log(tmp_path: Path) -> None:
    """The log stream's own lock, held by the worker mid-write at the fork, is not inherited.

    The stream is a real pipe (as stderr under systemd or Docker is) made small, read
    slowly, so the worker's writes block inside the stream's lock; before each fork the
    forking thread waits for the write to end. Without that, some children hang for
    ever on their first log line (4 to 6 in 40 here).
    """
    children = []
    _dump_stacks_on_sigusr1(tmp_path / "stacks.txt")
    with kaneda_logging_into_a_full_pipe() as received:
        for number in range(40):
            pid = os.fork()
            if pid == 0:
                try:
                    logging.getLogger("kaneda").warning("child %d logged", number)
                finally:
                    os._exit(0)
            children.append(pid)
            time.sleep(0.01)
        hung, stacks = _reap(children, tmp_path / "stacks.txt", within=20)
        written_by_then = len(received)
        time.sleep(0.3)
    assert hung == 0, f"{hung} children hung; their threads:\n{stacks}"
    assert received.count(b"logged\n") == 40
    assert len(received) > written_by_then  # the parent's worker logs on after the forks


def test_a_handler_whose_writer_is_stuck_delays_a_fork_for_the_hold_timeout_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write that never ends (a pipe nobody reads) must not stop the process forking."""
    from kaneda_core import forking

    monkeypatch.setattr(forking, "HOLD_TIMEOUT", 0.3)
    Metrics(MemoryBackend()).close()  # Kaneda's fork steps are installed
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger("kaneda.test.stuck").addHandler(handler)
    holding, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def stuck_writer() -> None:
        try:
            with handler.lock:  # type: ignore[union-attr]
                holding.set()
                done.wait(10)
        except RuntimeError as error:  # released by someone else meanwhile
            errors.append(error)

    writer = threading.Thread(target=stuck_writer)
    writer.start()
    holding.wait(5)
    try:
        started = time.monotonic()
        status = _in_child(lambda: True)
        took = time.monotonic() - started
    finally:
        done.set()
        writer.join()
        logging.getLogger("kaneda.test.stuck").removeHandler(handler)
    assert status == 0 and not errors
    assert 0.3 <= took < 2.0


def _dump_stacks_on_sigusr1(path: Path) -> None:
    """Children forked from now on write every thread's stack to ``path`` on SIGUSR1."""
    stacks = path.open("a")
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    _open_files.append(stacks)


_open_files: list[object] = []


def _reap(children: list[int], stacks: Path, within: float) -> tuple[int, str]:
    """Wait for ``children``; kill those still running after ``within`` seconds.

    Returns how many were killed, and the stacks they showed first (a hang's cause).
    """
    deadline = time.monotonic() + within
    hung = 0
    for pid in children:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGUSR1)
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                hung += 1
                break
            time.sleep(0.01)
    faulthandler.unregister(signal.SIGUSR1)
    return hung, stacks.read_text() if stacks.exists() else ""


def test_a_child_forked_while_a_thread_loads_a_backend_or_the_hooks_does_not_wait_for_it() -> None:
    """The registry's and the plugin manager's locks, held by a thread at the fork."""
    from kaneda_core import plugins, registry

    held = [registry._lock, plugins._lock]
    for lock in held:
        lock.acquire()  # as a thread loading a plugin or building the hooks holds them
    try:

        def child() -> bool:
            registry._loaded.clear()
            plugins._manager = None
            metrics = Metrics("memory")
            metrics.increment("x")
            return metrics.flush(5) == 0

        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if child() else 3
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the child waited for a lock its parent's thread held at the fork")
            time.sleep(0.01)
    finally:
        for lock in held:
            lock.release()


def _report_to_file(path: str, count: int) -> None:
    metrics = _shared["metrics"]
    for i in range(count):
        metrics.gauge("from_child", i, tags={"pid": str(os.getpid())})


_shared: dict[str, Metrics] = {}


def _lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_of_a_multiprocessing_process_are_delivered_when_it_exits(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    metrics = Metrics(LoggerBackend(filename=str(path)), flush_interval=60, batch_size=10_000)
    _shared["metrics"] = metrics
    metrics.gauge("parent", 1)  # the Metrics is in use before the fork
    process = fork.Process(target=_report_to_file, args=(str(path), 500))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert len([line for line in _lines(path) if line["name"] == "from_child"]) == 500
    metrics.close()
    assert [line["name"] for line in _lines(path)].count("parent") == 1


def test_metrics_of_pool_workers_are_delivered_when_the_pool_closes(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    metrics = Metrics(LoggerBackend(filename=str(path)), flush_interval=60, batch_size=10_000)
    _shared["metrics"] = metrics
    with fork.Pool(2) as pool:
        pool.starmap(_report_to_file, [(str(path), 100)] * 6)
        pool.close()
        pool.join()
    assert len([line for line in _lines(path) if line["name"] == "from_child"]) == 600
    metrics.close()


# Leaving a ``with Pool()`` block calls Pool.terminate(): the workers get SIGTERM while
# their last tasks' metrics still wait in their queues. A script of its own, so that
# spawn and forkserver workers, which import it, make their Metrics as the parent did.
POOL_SCRIPT = """
import json, multiprocessing, os, sys
from kaneda_core import Metrics
from kaneda_core.backends import LoggerBackend

path = sys.argv[2]
metrics = Metrics(LoggerBackend(filename=path), flush_interval=60, batch_size=10_000)

def task(i):
    metrics.increment("task", tags={"pid": str(os.getpid())})
    return i

if __name__ == "__main__":
    with multiprocessing.get_context(sys.argv[1]).Pool(3) as pool:
        done = pool.map(task, range(300), chunksize=5)
    metrics.close()
    with open(path) as lines:
        print(json.dumps({"done": len(done), "stored": sum('"task"' in l for l in lines)}))
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_metrics_of_pool_workers_are_delivered_when_a_with_block_terminates_the_pool(
    tmp_path: Path, method: str
) -> None:
    import subprocess
    import sys

    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), method, str(tmp_path / "m.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"done": 300, "stored": 300}, done.stderr


# The Metrics is made in the child itself (a Pool initializer, a lazy module global):
# the parent never had one, so no fork step of Kaneda's ran in the child.
LAZY_SCRIPT = """
import json, multiprocessing, os, sys
path = sys.argv[3]
_metrics = []

def metrics():
    if not _metrics:
        from kaneda_core import Metrics
        from kaneda_core.backends import LoggerBackend
        _metrics.append(Metrics(LoggerBackend(filename=path), flush_interval=60))
    return _metrics[0]

def task(i):
    metrics().increment("task")
    return i

def process():
    for i in range(100):
        task(i)

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    if sys.argv[2] == "process":
        children = [context.Process(target=process) for _ in range(3)]
        for child in children:
            child.start()
        for child in children:
            child.join()
    elif sys.argv[2] == "pool":
        pool = context.Pool(3)
        pool.map(task, range(300), chunksize=5)
        pool.close()
        pool.join()
    else:
        with context.Pool(3) as pool:
            pool.map(task, range(300), chunksize=5)
    with open(path) as lines:
        print(sum('"task"' in line for line in lines))
"""


@pytest.mark.parametrize("method", ["fork", "forkserver"])
@pytest.mark.parametrize("how", ["process", "pool", "with"])
def test_metrics_made_in_a_multiprocessing_child_are_delivered_when_it_ends(
    tmp_path: Path, method: str, how: str
) -> None:
    import subprocess
    import sys

    script = tmp_path / "lazy.py"
    script.write_text(LAZY_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), method, how, str(tmp_path / "m.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "300", done.stderr


def _blocked_when_terminated(path: str, lock: Any) -> None:
    metrics = Metrics(LoggerBackend(filename=path), flush_interval=60)
    metrics.increment("before_the_end")

    def send_sigterm_to_this_thread() -> None:
        # The signal reaches another thread than the main one, which has just blocked:
        # the handler's flag is set, but the main thread takes no step to run it.
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    threading.Thread(target=send_sigterm_to_this_thread).start()
    lock.acquire()  # held by the parent: blocks, as a Pool worker waits for its next task


def test_a_sigterm_the_blocked_main_thread_did_not_hear_still_ends_the_child_delivered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.jsonl"
    lock = fork.Lock()
    lock.acquire()
    child = fork.Process(target=_blocked_when_terminated, args=(str(path), lock))
    child.start()
    child.join(20)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("the child lived on after SIGTERM: its main thread never ran the handler")
    lock.release()
    assert child.exitcode == -signal.SIGTERM
    assert [line["name"] for line in _lines(path)] == ["before_the_end"]
