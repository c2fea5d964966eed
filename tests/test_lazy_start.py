"""A Metrics starts its worker thread at its first reporting call, not when it is made.

Made before gevent's monkey-patch (gunicorn's ``post_fork`` hook runs before a gevent
worker patches; a module imported before ``patch_all()``), a worker started at once was
a real OS thread in a process of greenlets: each exit printed threading's "Exception
ignored in thread started by ... KeyError", and a first send at exit failed for good
(gevent's hub for that thread imports ``concurrent.futures`` after the interpreter's
shutdown began: "can't register atexit after shutdown"). Started by the first call, the
worker is what the calls' threads are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kaneda_core import Backend, Metric, Metrics
from kaneda_core.backends import MemoryBackend
from kaneda_core.errors import DeliveryError

OPTIONS = [{}, {"aggregate": True}, {"max_buffer_bytes": 10**6}, {"buffer_path": "BUFFER"}]
IDS = ["memory", "aggregate", "bytes", "disk"]


def _options(options: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {k: str(tmp_path / "b.sqlite") if v == "BUFFER" else v for k, v in options.items()}


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_no_thread_is_started_until_the_first_call(options: dict[str, Any], tmp_path: Path) -> None:
    metrics = Metrics(MemoryBackend(), **_options(options, tmp_path))
    dispatcher = metrics._dispatcher
    assert dispatcher._worker is None  # type: ignore[union-attr]
    metrics.increment("first")
    worker = dispatcher._worker  # type: ignore[union-attr]
    assert worker is not None and worker.is_alive()
    assert metrics.flush(10) == 0 and metrics.stats().sent == 1
    assert metrics.close(10) == 0


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_flush_and_close_with_nothing_reported_return_at_once_and_start_nothing(
    options: dict[str, Any], tmp_path: Path
) -> None:
    metrics = Metrics(MemoryBackend(), flush_interval=60, **_options(options, tmp_path))
    started = time.monotonic()
    assert metrics.flush(10) == 0
    assert metrics._dispatcher._worker is None  # type: ignore[union-attr]
    assert metrics.close(10) == 0
    assert metrics._dispatcher._worker is None  # type: ignore[union-attr]
    assert time.monotonic() - started < 2
    assert metrics.stats().sent == 0


def test_a_disk_buffers_rows_from_an_earlier_process_are_delivered_by_a_flush(
    tmp_path: Path,
) -> None:
    # Nothing reported yet, but something to deliver: flush() starts the worker.
    buffer = str(tmp_path / "b.sqlite")
    Metrics(MemoryBackend(), buffer_path=buffer, flush_interval=60)  # the file
    earlier = Metrics(_Down(), buffer_path=buffer, flush_interval=60)
    for n in range(5):
        earlier.gauge("earlier", n)
    earlier.close(2)  # the store down: the rows stay on disk
    backend = MemoryBackend()
    later = Metrics(backend, buffer_path=buffer, flush_interval=60)
    assert later.flush(10) == 0
    assert [m.name for m in backend.metrics] == ["earlier"] * 5
    later.close(10)


def test_a_disk_buffers_rows_from_an_earlier_process_are_delivered_without_a_call(
    tmp_path: Path,
) -> None:
    # A worker that forwards from a queue, restarted on its buffer with the queue empty
    # (kaneda-rq's end-to-end test): no call comes, the rows are delivered all the same.
    buffer = str(tmp_path / "b.sqlite")
    earlier = Metrics(_Down(), buffer_path=buffer, flush_interval=60)
    for n in range(5):
        earlier.gauge("earlier", n)
    earlier.close(2)
    backend = MemoryBackend()
    later = Metrics(backend, buffer_path=buffer, flush_interval=0.05)
    deadline = time.monotonic() + 20
    while len(backend.metrics) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [m.name for m in backend.metrics] == ["earlier"] * 5
    later.increment("later")  # the usual path, the worker started
    assert later.flush(10) == 0 and len(backend.metrics) == 6
    later.close(10)


class _Down(Backend):
    def send(self, batch: Sequence[Metric]) -> None:
        raise ConnectionRefusedError("down")


# -- gevent: made before the patch, reporting after it -------------------------------

BEFORE_THE_PATCH = """
import json, socket, sys, threading
from kaneda_core import Backend, Metrics

class Resolving(Backend):
    # Looks its host up before each send, as a network client does: with gevent, in
    # its hub's thread pool (what failed at exit from a real thread).
    def __init__(self, path):
        self.path = path
    def send(self, batch):
        socket.getaddrinfo("localhost", 8086)
        with open(self.path, "a") as out:
            out.write("".join(m.name + "\\n" for m in batch))

path, backend, options, first = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
target = f"logger://{path}" if backend == "logger" else Resolving(path)
metrics = Metrics(target, flush_interval=60, **options)
if first == "before":  # the first call before the patch: its worker is a real thread
    metrics.increment("before")
print(json.dumps(sorted(t.name for t in threading.enumerate())), flush=True)
from gevent import monkey
monkey.patch_all()
for n in range(100):
    metrics.increment("after", tags={"n": str(n % 3)})
sys.exit(0)  # the exit delivers what is queued
"""


def _before_the_patch(
    tmp_path: Path, backend: str, options: dict[str, Any], first: str = "after"
) -> tuple[list[str], list[str], str]:
    pytest.importorskip("gevent")
    path = tmp_path / "stored"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            BEFORE_THE_PATCH,
            str(path),
            backend,
            json.dumps(_options(options, tmp_path)),
            first,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    threads = json.loads(done.stdout.splitlines()[0])
    stored = path.read_text().splitlines() if path.exists() else []
    return threads, stored, done.stderr


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_a_metrics_made_before_gevents_patch_exits_without_noise(
    options: dict[str, Any], tmp_path: Path
) -> None:
    threads, stored, stderr = _before_the_patch(tmp_path, "logger", options)
    # Before: "Exception ignored in thread started by ... kaneda-worker ... KeyError".
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
    assert "kaneda-worker" not in threads and "kaneda-closer" not in threads, threads
    expected = 3 if options.get("aggregate") else 100
    assert len(stored) == expected, stderr


@pytest.mark.parametrize("options", OPTIONS, ids=IDS)
def test_a_metrics_made_before_gevents_patch_delivers_its_first_send_at_exit(
    options: dict[str, Any], tmp_path: Path
) -> None:
    # Before: 0 of 100 stored, "can't register atexit after shutdown", failed for good.
    _, stored, stderr = _before_the_patch(tmp_path, "resolving", options)
    assert "not delivered" not in stderr, stderr
    assert len(stored) == (3 if options.get("aggregate") else 100), stderr


def test_a_first_call_made_before_the_patch_keeps_its_batch_on_disk_for_the_next_process(
    tmp_path: Path,
) -> None:
    # The worker, started before the patch, is a real thread: its sends at exit fail
    # ("can't register atexit after shutdown"), as would the exit's own (gevent was not
    # patched when the worker started: nothing was loaded ahead). Not the batch's fault:
    # before, it failed for good; now the rows stay on disk, for the next process.
    _, stored, stderr = _before_the_patch(
        tmp_path, "resolving", {"buffer_path": "BUFFER"}, "before"
    )
    assert stored == [] and "not delivered" not in stderr, stderr
    backend = MemoryBackend()
    later = Metrics(backend, buffer_path=str(tmp_path / "b.sqlite"), flush_interval=60)
    assert later.flush(30) == 0
    assert len(backend.metrics) == 101
    later.close(10)


# -- what fails because the interpreter is exiting is not the batch's fault -----------

AT_SHUTDOWN = """
import atexit, sys, threading
from kaneda_core import Backend, Metrics
from kaneda_core.errors import DeliveryError

EXITING = []

class Worn(Backend):
    # Fails in Kaneda's worker once the exit began, as a client that needs a new thread
    # or an atexit callback does; the thread that runs the exit callbacks can send.
    def __init__(self, path, wrapped):
        self.path, self.wrapped = path, wrapped
    def send(self, batch):
        if EXITING and threading.current_thread() is not threading.main_thread():
            error = RuntimeError("can't register atexit after shutdown")
            if self.wrapped:  # as kaneda-influx wraps it
                raise DeliveryError(f"failed creating the database: {error!r}", retryable=False)
            raise error
        with open(self.path, "a") as out:
            out.write("".join(m.name + "\\n" for m in batch))

metrics = Metrics(Worn(sys.argv[1], sys.argv[2] == "wrapped"), flush_interval=60)
metrics.increment("first")
atexit.register(EXITING.append, True)  # runs before Kaneda's (registered at the call)
for n in range(100):
    metrics.increment("queued")
"""


@pytest.mark.parametrize("wrapped", ["raw", "wrapped"])
def test_a_send_that_fails_because_the_interpreter_exits_is_delivered_by_the_exit(
    wrapped: str, tmp_path: Path
) -> None:
    path = tmp_path / "stored"
    done = subprocess.run(
        [sys.executable, "-c", AT_SHUTDOWN, str(path), wrapped],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "not delivered" not in done.stderr, done.stderr
    assert len(path.read_text().splitlines()) == 101, done.stderr


def test_an_error_at_shutdown_is_retryable() -> None:
    from kaneda_core.delivery import Delivery

    delivery = Delivery(MemoryBackend())
    for error in (
        RuntimeError("can't register atexit after shutdown"),
        RuntimeError("cannot schedule new futures after interpreter shutdown"),
        DeliveryError("x: RuntimeError: can't register atexit after shutdown", retryable=False),
    ):
        _, retryable, isolate = delivery._classify(error, [])
        assert retryable and not isolate, error
    assert delivery._classify(RuntimeError("other"), [])[1] is False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_of_a_metrics_that_never_reported_starts_its_own_worker(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, flush_interval=60)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            metrics.increment("child")
            dispatcher = metrics._dispatcher
            ok = dispatcher._worker is not None and metrics.flush(10) == 0  # type: ignore[union-attr]
            code = 0 if ok and [m.name for m in backend.metrics] == ["child"] else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert metrics._dispatcher._worker is None  # type: ignore[union-attr]
    assert metrics.close(5) == 0 and backend.metrics == []
