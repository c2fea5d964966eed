"""Reporting from a signal handler, which interrupts its thread anywhere inside Kaneda."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kaneda_core import Metrics

SCRIPT = textwrap.dedent("""
    import json, signal, sys, time
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    mode, path = sys.argv[1], sys.argv[2]
    options = {
        "disk": dict(buffer_path=path, batch_size=50, flush_interval=0.001),
        "full": dict(max_buffer=5, batch_size=1000, flush_interval=0.001),
        "block": dict(max_buffer=5, overflow="block", block_timeout=0.0005),
        "sync": dict(batching=False),
    }[mode]
    backend = MemoryBackend()
    metrics = Metrics(backend, **options)
    handled = 0

    def on_alarm(signum, frame):
        global handled
        handled += 1
        metrics.increment("from_handler", tags={"n": str(handled % 7)})

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
    calls = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        metrics.gauge("from_main", calls, tags={"k": "v"})
        metrics.custom("c", "shape", {"size": calls})
        calls += 2
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    left = metrics.flush(20)
    stats = metrics.stats()
    metrics.close(5)
    print(json.dumps({
        "calls": calls, "handled": handled, "left": left, "stored": len(backend.metrics),
        "sent": stats.sent, "dropped": stats.dropped, "failed": stats.failed,
    }))
""")


@pytest.mark.parametrize("mode", ["disk", "full", "block", "sync"])
def test_reporting_from_a_signal_handler_never_deadlocks(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "signals.py"
    script.write_text(SCRIPT)
    try:
        done = subprocess.run(
            [sys.executable, str(script), mode, str(tmp_path / "b.sqlite")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"the process deadlocked ({mode})") from hung
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["handled"] > 100, result  # the handler really ran, many times
    accepted = result["calls"] + result["handled"]
    # Everything accepted is accounted for: stored, or dropped because the buffer was full.
    assert result["left"] == 0
    assert result["stored"] == result["sent"], result
    assert result["sent"] + result["dropped"] + result["failed"] == accepted, result
    if mode in ("disk", "sync"):
        assert result["sent"] == accepted, result


# A handler that flushes or closes (a SIGTERM handler's usual job) while its thread was
# inside Kaneda holding what the worker needs (the disk buffer's file, the queue's state).
FLUSHING_HANDLER = textwrap.dedent("""
    import json, signal, sys, time
    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend

    mode, action, path = sys.argv[1], sys.argv[2], sys.argv[3]
    options = {
        "disk": dict(buffer_path=path, batch_size=50, flush_interval=0.001),
        "memory": dict(batch_size=10, flush_interval=0.001),
    }[mode]
    accepted = stored = 0
    for round in range(8):
        backend = MemoryBackend()
        metrics = Metrics(backend, **options)
        inside = [False]

        def on_alarm(signum, frame):
            if inside[0]:
                return
            inside[0] = True
            try:
                metrics.increment("from_handler")
                getattr(metrics, action)()  # no timeout: it must not wait for ever
            finally:
                inside[0] = False

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.0007, 0.0007)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            metrics.gauge("from_main", 1, tags={"k": "v"})
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        metrics.flush(10)
        stats = metrics.stats()
        metrics.close(10)
        accepted += stats.sent + stats.dropped + stats.failed
        stored += len(backend.metrics)
    print(json.dumps({"sent_or_counted": accepted, "stored": stored}))
""")


@pytest.mark.parametrize(
    ("mode", "action"),
    [("disk", "flush"), ("disk", "close"), ("memory", "flush"), ("memory", "close")],
)
def test_a_signal_handler_that_flushes_or_closes_never_deadlocks(
    tmp_path: Path, mode: str, action: str
) -> None:
    script = tmp_path / "flushing.py"
    script.write_text(FLUSHING_HANDLER)
    try:
        done = subprocess.run(
            [sys.executable, str(script), mode, action, str(tmp_path / "b.sqlite")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"a handler's {action}() deadlocked ({mode})") from hung
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["stored"] > 0, result


def test_a_failure_hook_that_flushes_or_closes_does_not_wait_for_its_own_thread(
    plugin: object,
) -> None:
    import threading

    from kaneda_core import Metrics
    from kaneda_core.backends import MemoryBackend
    from kaneda_core.hookspecs import hookimpl

    class Down(MemoryBackend):
        def send(self, batch: object) -> None:
            raise ValueError("refused")

    metrics = Metrics(Down(), flush_interval=0.01)
    answers: list[int] = []

    class FlushAndClose:  # runs in the worker thread, which is delivering
        @hookimpl
        def kaneda_batch_failed(self, metrics: object, error: object, backend: object) -> None:
            answers.append(kaneda.flush())
            answers.append(kaneda.close())

    kaneda = metrics
    plugin.register(FlushAndClose())  # type: ignore[attr-defined]
    metrics.increment("x")
    waiter = threading.Thread(target=metrics.flush, daemon=True)
    waiter.start()
    waiter.join(10)
    assert not waiter.is_alive(), "the worker waited for itself"
    assert len(answers) == 2  # each returned what was left, without waiting
    assert metrics.close(5) == 0 and metrics.stats().failed == 1


# close() interrupted (Ctrl-C, a second SIGTERM) is completed at exit, within exit_timeout.
# Ctrl-C comes once the main thread waits inside close(), and every send waits for it: a
# close that ended first (a slow machine) would leave the signal to interpreter shutdown.
INTERRUPTED_CLOSE = textwrap.dedent("""
    import os, signal, sys, threading, time
    from kaneda_core import Metrics
    from kaneda_core.backends import LoggerBackend

    # As in a terminal: a job started in the background by a script inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupted = threading.Event()

    class Slow(LoggerBackend):
        def send(self, batch):
            interrupted.wait(30)
            time.sleep(0.05)
            super().send(batch)

    def waiting_in_close(thread_id):
        frame = sys._current_frames().get(thread_id)
        names = []
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        return "close" in names and names[0] == "wait"

    def press_ctrl_c(main):
        while not waiting_in_close(main):
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGINT)
        interrupted.set()

    metrics = Metrics(Slow(filename=sys.argv[1]), batch_size=100)
    for i in range(3000):
        metrics.increment("x")
    threading.Thread(target=press_ctrl_c, args=(threading.get_ident(),), daemon=True).start()
    try:
        metrics.close()
    except KeyboardInterrupt:
        print("interrupted")
""")


def test_a_close_interrupted_by_ctrl_c_is_completed_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_CLOSE)
    lines = tmp_path / "m.jsonl"
    done = subprocess.run(
        [sys.executable, str(script), str(lines)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "interrupted", done.stderr
    assert len(lines.read_text().splitlines()) == 3000, done.stderr
    assert "not delivered" not in done.stderr, done.stderr


def _blocked_signals(thread_name: str) -> set[int]:
    """The signals every live thread named ``thread_name`` blocks (Linux: /proc); other
    tests' instances may still be running, and each of them must block them too."""
    import threading

    threads = [t for t in threading.enumerate() if t.name == thread_name and t.native_id]
    assert threads, f"no thread named {thread_name}"
    blocked = set(range(1, 65))
    for thread in threads:
        try:
            status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
        except FileNotFoundError:  # it ended while we looked
            continue
        mask = int(
            next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1],
            16,
        )
        blocked &= {number for number in range(1, 65) if mask & (1 << (number - 1))}
    return blocked


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_kanedas_threads_leave_the_processes_signals_to_the_applications_threads() -> None:
    """A SIGTERM that lands on Kaneda's worker would never wake a main thread blocked on a
    lock (a Pool worker waiting for a task): Pool.terminate() then waited for ever."""
    metrics = Metrics("memory", flush_interval=0.05)
    metrics.increment("x")
    metrics.flush(5)
    blocked = _blocked_signals("kaneda-worker")
    assert {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM} <= blocked
    assert signal.SIGTERM not in _blocked_signals("MainThread")
    metrics.close()
