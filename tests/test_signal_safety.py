"""Reporting from a signal handler, which interrupts its thread anywhere inside Kaneda."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
