"""gevent and eventlet: Kaneda's threads run as greenlets, and hold none of the others up.

Monkey-patched first (gunicorn's gevent worker, Celery's ``-P gevent`` or ``-P eventlet``),
``threading.Thread`` is a greenlet of the main OS thread: a wait in a C queue, a blocking
read or a signal mask there would stop the whole process, signals included.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PATCH = """
import sys
lib, when = sys.argv[1], sys.argv[2]

def patch():
    if lib == "gevent":
        from gevent import monkey
        monkey.patch_all()
    else:
        import eventlet
        eventlet.monkey_patch()

if when == "first":
    patch()
import kaneda_core
if when == "after import":
    patch()
"""

REPORTER = (
    PATCH
    + """
import gc, json, time
from kaneda_core import connect

path = sys.argv[3]
metrics = connect(f"logger://{path}.kept")
for n in range(2000):
    metrics.increment("green", tags={"n": str(n)})
left = metrics.flush(10)
let_go = connect(f"logger://{path}.let-go")  # never closed: the closer closes it
let_go.increment("let.go")
del let_go
gc.collect()
time.sleep(1)
status = open("/proc/self/status").read()
blocked = [line.split()[1] for line in status.splitlines() if line.startswith("SigBlk")]
print(json.dumps({"left": left, "sent": metrics.stats().sent, "blocked": blocked[0]}))
metrics.close()
"""
)

WAITER = (
    PATCH
    + """
import time
from kaneda_core import connect

metrics = connect(f"logger://{sys.argv[3]}", flush_interval=60)
for n in range(100):
    metrics.increment("before.sigterm")
print("ready", flush=True)
time.sleep(60)
"""
)

CASES = [(lib, when) for lib in ("gevent", "eventlet") for when in ("first", "after import")]


@pytest.mark.parametrize(("lib", "when"), CASES)
def test_a_patched_process_reports_closes_what_it_let_go_of_and_blocks_no_signal(
    lib: str, when: str, tmp_path: Path
) -> None:
    path = tmp_path / "metrics"
    done = subprocess.run(
        [sys.executable, "-c", REPORTER, lib, when, str(path)],
        capture_output=True,
        text=True,
        timeout=30,  # before: Metrics() never returned
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["left"] == 0 and result["sent"] == 2000
    assert int(result["blocked"], 16) == 0  # SIGTERM and the others reach the application
    assert len(Path(f"{path}.kept").read_text().splitlines()) == 2000
    assert len(Path(f"{path}.let-go").read_text().splitlines()) == 1


@pytest.mark.parametrize(("lib", "when"), CASES)
def test_a_patched_process_delivers_and_ends_on_sigterm(
    lib: str, when: str, tmp_path: Path
) -> None:
    path = tmp_path / "metrics.jsonl"
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAITER, lib, when, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiter.stdout is not None
        assert select.select([waiter.stdout], [], [], 30)[0], "Metrics() did not return"
        assert waiter.stdout.readline() == "ready\n"
        started = time.monotonic()
        waiter.send_signal(signal.SIGTERM)
        assert waiter.wait(20) == -signal.SIGTERM
        assert time.monotonic() - started < 10
    finally:
        waiter.kill()
        waiter.wait()
    assert len(path.read_text().splitlines()) == 100


# gunicorn -k gevent --preload: the master makes the Metrics and forks; each worker patches
# threading after the fork, then reports, flushes or does nothing, and exits.
FORKED_THEN_PATCHED = """
import json, os, sys, time
from kaneda_core import connect

path, options, does = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
metrics = connect(f"logger://{path}", **options)
metrics.increment("parent")
children = []
for child in range(2):
    pid = os.fork()
    if pid == 0:
        from gevent import monkey
        monkey.patch_all()
        if does == "reports":
            for n in range(50):
                metrics.increment("child", tags={"n": str(n)})
        elif does == "flushes":  # no call before: nothing to wait for
            said = f"child {metrics.flush(5)} {metrics.stats().queued} {metrics.close(5)}\\n"
            os.write(1, said.encode())  # one write: the two children share the pipe
        sys.exit(0)  # the exit delivers what is queued
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print("codes", *codes, flush=True)
metrics.close()
"""

OPTIONS = [{}, {"aggregate": True}, {"max_buffer_bytes": 10**6}, {"buffer_path": "BUFFER"}]


def _forked_then_patched(tmp_path: Path, options: dict[str, object], does: str) -> tuple[str, int]:
    path = tmp_path / "metrics.jsonl"
    options = {k: str(tmp_path / "b.sqlite") if v == "BUFFER" else v for k, v in options.items()}
    done = subprocess.run(
        [sys.executable, "-c", FORKED_THEN_PATCHED, str(path), json.dumps(options), does],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "codes 0 0" in done.stdout, done.stdout + done.stderr
    # Before: threading's own "Exception ignored in thread started by ... KeyError" at
    # each child's exit (Kaneda's worker, a real thread started at the fork, ended after
    # the patch) and, flushing with aggregation, a child that never returned.
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    return done.stdout, len(path.read_text().splitlines())


@pytest.mark.parametrize("options", OPTIONS, ids=["memory", "aggregate", "bytes", "disk"])
def test_a_child_patched_after_the_fork_delivers_its_metrics_at_exit_without_noise(
    options: dict[str, object], tmp_path: Path
) -> None:
    _, stored = _forked_then_patched(tmp_path, options, "reports")
    assert stored == 1 + 2 * 50


@pytest.mark.parametrize("does", ["flushes", "does nothing"])
@pytest.mark.parametrize("options", OPTIONS[:2], ids=["memory", "aggregate"])
def test_a_child_patched_after_the_fork_that_never_reports_ends_at_once_without_noise(
    options: dict[str, object], does: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    out, stored = _forked_then_patched(tmp_path, options, does)
    assert time.monotonic() - started < 20
    assert stored == 1
    if does == "flushes":
        assert out.count("child 0 0 0") == 2, out
