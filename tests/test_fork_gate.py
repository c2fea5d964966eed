"""A fork waits for the threads inside a backend or a hook; Kaneda's threads import nothing outside.

A module a thread is importing when the process forks stays locked in the child, and
the child's own import of it never returns (CPython copies the module's import lock as
it is). Celery's, RQ's and RethinkDB's clients import modules at their first send, in
Kaneda's worker thread: the fork gate makes a fork wait until the send is over.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kaneda_core import Backend, Metric, Metrics, forking
from kaneda_core.fork_gate import gate

sys.path.insert(0, str(Path(__file__).parent / "support"))

from fixtures import influx_db, influx_server, influx_url, redis_server

from scripts import THREAD_IMPORTS

__all__ = ["influx_db", "influx_server", "influx_url", "redis_server"]


def _wait_for(pid: int, within: float) -> int | None:
    """The exit status of child ``pid``; None (and the child killed) if it runs on."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


@pytest.mark.parametrize("batching", [True, False])
def test_a_child_forked_while_a_backend_imports_a_module_can_import_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batching: bool
) -> None:
    """The first send imports a module that takes a while (as a client library does),
    in Kaneda's worker or, delivering synchronously, in another thread of the application."""
    (tmp_path / "kaneda_slow_client.py").write_text("import time\ntime.sleep(0.5)\nREADY = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kaneda_slow_client", raising=False)
    importing = threading.Event()

    class ImportsAtFirstSend(Backend):
        def send(self, batch: Sequence[Metric]) -> None:
            importing.set()
            import kaneda_slow_client  # noqa: F401

    metrics = Metrics(ImportsAtFirstSend(), batching=batching, flush_interval=0.01)
    reporter = threading.Thread(target=metrics.increment, args=("first",))
    reporter.start()
    assert importing.wait(5)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import kaneda_slow_client

            code = 0 if kaneda_slow_client.READY else 3
        finally:
            os._exit(code)
    waited = time.monotonic() - started
    status = _wait_for(pid, within=10)
    reporter.join(5)
    assert metrics.flush(5) == 0 and metrics.stats().sent == 1
    metrics.close()
    assert status == 0, "the child hung on the import its parent's worker was doing"
    assert 0.2 < waited < forking.HOLD_TIMEOUT  # the fork waited for the send to end


def _fork_and_time() -> float:
    """Seconds the parent's os.fork() took; the child leaves at once."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    took = time.monotonic() - started
    assert _wait_for(pid, within=5) == 0
    return took


def test_a_send_that_never_ends_delays_forks_for_the_hold_timeout_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forking, "HOLD_TIMEOUT", 0.3)
    sending = [threading.Event(), threading.Event()]
    released = [threading.Event(), threading.Event()]

    class StuckTwice(Backend):
        def __init__(self) -> None:
            self.sends = 0

        def send(self, batch: Sequence[Metric]) -> None:
            number, self.sends = self.sends, self.sends + 1
            if number < 2:
                sending[number].set()
                released[number].wait(10)

    metrics = Metrics(StuckTwice(), flush_interval=0.01)
    try:
        metrics.increment("first")
        assert sending[0].wait(5)
        first = _fork_and_time()
        # Later forks do not wait for the same stuck send again (a pool of processes
        # started during an outage)...
        again = [_fork_and_time() for _ in range(3)]
        released[0].set()
        # ... but do for the next send that hangs, once the first has left.
        metrics.increment("second")
        assert sending[1].wait(5)
        next_send = _fork_and_time()
    finally:
        for event in released:
            event.set()
    assert 0.3 <= first < 2.0
    assert max(again) < 0.2, again
    assert 0.3 <= next_send < 2.0
    # The parent's gate is open: every send ended, the next one goes through at once.
    metrics.increment("third")
    assert metrics.flush(5) == 0
    assert metrics.stats().sent == 3
    metrics.close()


def test_a_backend_that_forks_inside_its_send_does_not_wait_for_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forking, "HOLD_TIMEOUT", 3.0)
    took: list[float] = []

    class Forking(Backend):
        def send(self, batch: Sequence[Metric]) -> None:
            started = time.monotonic()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            took.append(time.monotonic() - started)
            assert _wait_for(pid, within=5) == 0

    metrics = Metrics(Forking())
    metrics.increment("x")
    assert metrics.flush(10) == 0
    metrics.close()
    assert len(took) == 1 and took[0] < 1.0


def test_the_gate_is_left_when_a_send_raises_and_during_a_backoff() -> None:
    from kaneda_core import RetryPolicy

    seen: list[bool] = []

    class Flaky(Backend):
        def send(self, batch: Sequence[Metric]) -> None:
            seen.append(gate.entered())
            if len(seen) == 1:
                raise ConnectionError("down for a moment")

    metrics = Metrics(Flaky(), retry=RetryPolicy(attempts=3, initial_delay=0.2))
    metrics.increment("x")
    time.sleep(0.1)  # within the backoff: the worker is not inside
    assert not any(gate.entered() for _ in range(3))
    assert metrics.flush(10) == 0
    metrics.close()
    assert seen == [True, True]
    assert gate._inside == []  # every entry was left


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Backends by URL, working (real servers) and not (a closed port: the failure paths).
PROBES: dict[str, Callable[[pytest.FixtureRequest], tuple[str, dict[str, object]]]] = {
    "memory": lambda request: ("memory://", {}),
    "logger": lambda request: ("logger://", {}),
    "influx": lambda request: (request.getfixturevalue("influx_url"), {}),
    "influx aggregated": lambda request: (
        request.getfixturevalue("influx_url"),
        {"aggregate": True},
    ),
    "influx down": lambda request: (f"influx://127.0.0.1:{_closed_port()}/probe", {}),
    "influx down, disk buffer": lambda request: (
        f"influx://127.0.0.1:{_closed_port()}/probe",
        {"buffer_path": str(request.getfixturevalue("tmp_path") / "buffer.sqlite")},
    ),
    "rq": lambda request: (
        request.getfixturevalue("redis_server").url.replace("redis://", "rq://")
        + "?queue_name=probe",
        {},
    ),
    "celery on redis": lambda request: (
        request.getfixturevalue("redis_server").url.replace("redis://", "celery+redis://")
        + "?queue_name=probe",
        {},
    ),
    "rethinkdb down": lambda request: (f"rethinkdb://localhost:{_closed_port()}/probe", {}),
    "elasticsearch down": lambda request: (
        f"elasticsearch://127.0.0.1:{_closed_port()}/?index_name=probe&app_name=probe",
        {},
    ),
    "mongodb down": lambda request: (
        f"mongodb://127.0.0.1:{_closed_port()}/probe?collection_name=probe",
        {},
    ),
}


@pytest.mark.parametrize("probe", PROBES)
def test_whatever_kanedas_threads_import_they_import_inside_the_fork_gate(
    probe: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url, options = PROBES[probe](request)
    script = tmp_path / "thread_imports.py"
    script.write_text(THREAD_IMPORTS)
    done = subprocess.run(
        [sys.executable, str(script), url, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["sent"] + result["failed"] + result["queued"] + result["folded"] >= 5, result
    assert result["imported"]["outside"] == [], result["imported"]


def test_a_host_name_is_looked_up_inside_the_fork_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """kaneda_core.connecting's lookup thread (InfluxDB's, Elasticsearch's and RethinkDB's
    connections): a first lookup imports encodings.idna, which a fork must not copy half
    done. The probes above connect to IP addresses, or import it before (InfluxDB's and
    Elasticsearch's clients), so this asks the Resolver itself."""
    from kaneda_core.connecting import Resolver

    seen: list[tuple[str, bool]] = []

    def getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        seen.append((threading.current_thread().name, gate.entered()))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 1))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert Resolver("gate-probe.internal", 1).resolve(time.monotonic() + 5, "within 5 s")
    assert seen == [("kaneda-resolve", True)]


def test_a_thread_inside_enters_again_without_waiting_for_a_fork_that_waits_for_it() -> None:
    """A hook that reports through a synchronous Metrics while a fork is waiting."""
    from kaneda_core.fork_gate import ForkGate

    own = ForkGate()
    own.enter()
    held: list[float] = []
    forker = threading.Thread(target=lambda: held.append(_timed(lambda: own.hold_for_fork(5.0))))
    forker.start()
    time.sleep(0.1)  # the gate is closed now, the forker waiting for this thread
    nested = _timed(own.enter)
    own.leave()
    own.leave()
    forker.join(5)
    own.release_after_fork()
    assert nested < 0.5
    assert held and 0.1 <= held[0] < 1.0


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_everything_a_fork_waits_for_shares_one_hold_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A stuck send, a stuck disk buffer and a stuck log handler: 0.5 s, not three times it."""
    import io
    import logging

    monkeypatch.setattr(forking, "HOLD_TIMEOUT", 0.5)
    inside, release = threading.Event(), threading.Event()

    class Stuck(Backend):
        def send(self, batch: Sequence[Metric]) -> None:
            inside.set()
            release.wait(10)

    metrics = Metrics(Stuck(), flush_interval=0.01, buffer_path=tmp_path / "buffer.sqlite")
    metrics.increment("stuck")
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger("kaneda.test.stuck").addHandler(handler)
    lock = handler.lock
    assert lock is not None
    holders = [threading.Thread(target=lambda: (lock.acquire(), release.wait(10), lock.release()))]
    disk = metrics._dispatcher.disk  # type: ignore[union-attr]
    holders.append(
        threading.Thread(
            target=lambda: (disk._lock.acquire(), release.wait(10), disk._lock.release())
        )
    )
    assert inside.wait(5)
    for holder in holders:
        holder.start()
    time.sleep(0.1)
    try:
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        took = time.monotonic() - started
        status = _wait_for(pid, within=5)
    finally:
        release.set()
        for holder in holders:
            holder.join(5)
        logging.getLogger("kaneda.test.stuck").removeHandler(handler)
    metrics.close(5)
    assert status == 0
    assert 0.5 <= took < 1.3  # three timeouts of their own would take 1.5 s


def test_the_gate_stays_closed_until_the_last_of_two_simultaneous_forks_is_done() -> None:
    from kaneda_core.fork_gate import ForkGate

    own = ForkGate()
    own.hold_for_fork(1.0)  # one thread's fork
    own.hold_for_fork(1.0)  # another thread's, at the same time
    own.release_after_fork()  # the first is done; the second is not
    entered = threading.Event()

    def sender() -> None:
        own.enter()
        entered.set()
        own.leave()

    thread = threading.Thread(target=sender)
    thread.start()
    assert not entered.wait(0.3)  # a send waits for the second fork
    own.release_after_fork()
    assert entered.wait(5)
    thread.join(5)
