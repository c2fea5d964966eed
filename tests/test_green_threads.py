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
