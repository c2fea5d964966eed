"""A Metrics' life as applications lead it: let go of unclosed, closed by several threads
at once, closed while a call or a send is still running, several at exit."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import pytest

from kaneda_core import Backend, DeliveryError, Metric, Metrics, connect
from kaneda_core.backends import MemoryBackend


class ClosingCounted(MemoryBackend):
    """A memory backend that counts its close() calls (each ``pause`` seconds long)."""

    def __init__(self, pause: float = 0.0) -> None:
        super().__init__()
        self.closes = 0
        self.pause = pause

    def close(self) -> None:
        self.closes += 1
        time.sleep(self.pause)


def _kaneda_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kaneda-worker"]


@pytest.mark.parametrize("aggregate", [False, True], ids=["queue", "aggregate"])
def test_a_metrics_let_go_of_unclosed_delivers_and_ends_its_worker(aggregate: bool) -> None:
    """A Metrics made per request and never closed (kaneda 1.0's Metrics was a plain
    object) kept its worker thread, and its backend, for the life of the process: 5,000
    requests, 5,000 threads, each waking at every flush interval. A backend it made is
    closed; one the application passed in is left open (it may serve others)."""
    before = len(_kaneda_threads())
    made = [ClosingCounted() for _ in range(100)]
    given = [ClosingCounted() for _ in range(100)]
    collected = []
    for backend in made + given:
        metrics = Metrics(backend, flush_interval=60, aggregate=aggregate)
        metrics._delivery.owns_backend = backend in made  # as connect(url) marks it
        metrics.increment("requests")
        collected.append(weakref.ref(metrics))
        del metrics
    gc.collect()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        len(_kaneda_threads()) > before or any(b.closes == 0 for b in made)
    ):
        time.sleep(0.05)
    time.sleep(0.1)  # the given ones' closes would have come by now
    assert all(ref() is None for ref in collected)
    assert [len(b.metrics) for b in made + given] == [1] * 200  # delivered, not dropped
    assert [b.closes for b in made] == [1] * 100
    assert [b.closes for b in given] == [0] * 100
    assert len(_kaneda_threads()) <= before  # (another test's workers may end meanwhile)


def test_only_a_metrics_that_made_its_backend_owns_it() -> None:
    assert connect("memory://")._delivery.owns_backend
    assert Metrics("memory")._delivery.owns_backend
    assert not Metrics(MemoryBackend())._delivery.owns_backend


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "sync"])
def test_metrics_made_per_request_on_one_backend_object_never_break_each_other(
    batching: bool,
) -> None:
    """kaneda 1.0's ``Metrics(backend=BACKEND)`` in each request, in threads: each
    Metrics sent on the shared connection at once (a real InfluxDB: 1,105 of 1,200
    stored, "Request-sent", "NotConnected"), and each one let go of closed it under the
    others' sends (325 of 500 stored). One send at a time now, and the backend stays open."""
    backend = OneAtATime()

    def requests(thread: int) -> None:
        for n in range(100):
            metrics = Metrics(backend, batching=batching, flush_interval=0.01)
            metrics.increment("requests", tags={"thread": str(thread), "n": str(n)})
            del metrics

    threads = [threading.Thread(target=requests, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    gc.collect()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(backend.metrics) < 600:
        time.sleep(0.05)
    assert len(backend.metrics) == 600
    assert backend.overlaps == 0 and backend.closes == 0


class OneAtATime(MemoryBackend):
    """A backend with one connection: a send or close that overlaps another is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.busy = threading.Lock()
        self.overlaps = 0
        self.closes = 0

    def send(self, batch: Sequence[Metric]) -> None:
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            raise DeliveryError("Request-sent: another thread uses the connection", retryable=True)
        try:
            time.sleep(0.001)  # a round trip
            super().send(batch)
        finally:
            self.busy.release()

    def close(self) -> None:
        self.closes += 1


def test_metrics_let_go_of_while_the_store_is_down_are_closed_side_by_side() -> None:
    """Closed one at a time, each waited its exit_timeout for a store that was down: a
    Metrics made per request outran the closing, and worker threads piled up."""

    class Down(Backend):
        def send(self, batch: Sequence[Metric]) -> None:
            raise DeliveryError("connection refused", retryable=True)

    before = len(_kaneda_threads())
    for _ in range(20):
        metrics = Metrics(Down(), exit_timeout=1.0)
        metrics.increment("requests")
        del metrics
    gc.collect()
    started = time.monotonic()
    while time.monotonic() - started < 10 and len(_kaneda_threads()) > before:
        time.sleep(0.05)
    assert len(_kaneda_threads()) <= before
    assert time.monotonic() - started < 4  # about one exit_timeout, not twenty


LET_GO_PER_REQUEST = """
import gc, json, logging, sys, threading, time
from kaneda_core import Backend, DeliveryError, Metrics
from kaneda_core.closer import MAX_CLOSING

logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
sends = []


class Down(Backend):
    def send(self, batch):
        sends.append(len(batch))
        raise DeliveryError("connection refused", retryable=True)


def workers():
    return sum(t.name == "kaneda-worker" for t in threading.enumerate())


peak = 0
for request in range(300):  # a Metrics per request, never closed
    metrics = Metrics(Down(), exit_timeout=5.0)
    metrics.increment("requests")
    del metrics
    gc.collect()
    time.sleep(0.002)
    peak = max(peak, workers())
deadline = time.monotonic() + 20
while workers() and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"peak": peak, "left": workers(), "tried": sum(sends), "most": MAX_CLOSING}))
"""


def test_metrics_let_go_of_per_request_while_the_store_is_down_keep_few_threads() -> None:
    """Each let-go Metrics kept its worker thread for its whole exit_timeout, retrying a
    store that was down, and the next ones waited with theirs for the closer: 800 threads
    at 200 requests a second, and two error lines per request. Past MAX_CLOSING at once,
    the next are tried once; their failures are folded into a line, and the application
    is told it lets Metrics go."""
    done = subprocess.run(
        [sys.executable, "-c", LET_GO_PER_REQUEST], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["left"] == 0
    assert seen["peak"] <= seen["most"] + 20, seen  # 300 before
    assert seen["tried"] >= 300  # every one tried before it was given up
    lines = done.stderr.splitlines()
    assert sum("not delivered" in line for line in lines) <= 5, done.stderr[-3000:]
    told = [line for line in lines if "Metrics were let go of without close()" in line]
    assert len(told) == 1 and "make one Metrics and share it" in told[0]


FIRST_CALLS_AT_ONCE = """
import threading
from kaneda_core import Metrics
from kaneda_core.backends import MemoryBackend

barrier = threading.Barrier(8)
made = [Metrics(MemoryBackend()) for _ in range(8)]


def first_call(metrics):
    barrier.wait()
    metrics.increment("first")


threads = [threading.Thread(target=first_call, args=(m,)) for m in made]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(sum(thread.name == "kaneda-closer" for thread in threading.enumerate()))
"""


def test_first_calls_in_several_threads_at_once_start_one_closer() -> None:
    """Each saw no closer yet and started one: 2 to 8 closer threads in each of 10 runs."""
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", FIRST_CALLS_AT_ONCE], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout.split()) == (0, ["1"]), done.stderr


SYNC_PER_REQUEST = """
import os, sys
from kaneda_core import Metrics, connect
from kaneda_core.backends import LoggerBackend

folder = sys.argv[1]
given = LoggerBackend(filename=os.path.join(folder, "given.jsonl"))
fds = []
for n in range(300):
    made = connect(f"logger://{folder}/made.jsonl", batching=False)
    made.increment("requests")
    Metrics(given, batching=False).increment("requests")
    del made
    if n % 100 == 99:
        fds.append(len(os.listdir("/proc/self/fd")))
print(fds, given._file is not None)  # left open: the application's to close
given.close()
alive = connect(f"logger://{folder}/alive.jsonl", batching=False)  # at exit
alive.increment("requests")
"""


def test_a_sync_metrics_let_go_of_closes_the_backend_it_made_and_no_other(
    tmp_path: Path,
) -> None:
    """kaneda 1.0's Metrics() made from the settings in each request, never closed (it
    delivers in the caller's thread): its backend kept a file or socket until a garbage
    collection, 300 "unclosed file" ResourceWarnings, and one more at exit."""
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", SYNC_PER_REQUEST, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ResourceWarning" not in done.stderr, done.stderr[-2000:]
    fds, given_open = done.stdout.rsplit("]", 1)
    counts = json.loads(fds + "]")
    assert max(counts) - min(counts) <= 2 and given_open.strip() == "True"
    for name in ("made", "given", "alive"):
        assert len((tmp_path / f"{name}.jsonl").read_text().splitlines()) == (
            1 if name == "alive" else 300
        )


LET_GO_ONE_AT_A_TIME = """
import gc, logging, sys, time
from kaneda_core import Backend, DeliveryError, Metrics

logging.basicConfig(level=logging.ERROR, format="%(message)s", stream=sys.stderr)


class Down(Backend):
    def send(self, batch):
        raise DeliveryError("connection refused", retryable=True)


for _ in range(5):
    metrics = Metrics(Down(), exit_timeout=0.2)
    metrics.increment("requests")
    del metrics
    gc.collect()
    time.sleep(0.5)  # each closed before the next is let go of
"""


def test_metrics_let_go_of_one_at_a_time_share_one_folded_log() -> None:
    """The closer, idle between two, told its log and made a new one: a line each."""
    done = subprocess.run(
        [sys.executable, "-c", LET_GO_ONE_AT_A_TIME], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("not delivered") == 2, done.stderr  # the first, then the total
    assert "4 more batches (4 metrics) not delivered" in done.stderr, done.stderr


def test_a_metrics_still_referenced_is_left_alone() -> None:
    backend = ClosingCounted()
    metrics = Metrics(backend, flush_interval=60)
    metrics.increment("requests")
    gc.collect()
    time.sleep(0.2)
    assert backend.closes == 0 and metrics.stats().queued == 1
    metrics.close()
    assert backend.closes == 1 and len(backend.metrics) == 1


@pytest.mark.parametrize("aggregate", [False, True], ids=["queue", "aggregate"])
def test_a_reporting_method_kept_keeps_its_metrics(aggregate: bool) -> None:
    """``count = Metrics(...).increment`` at module level: the Metrics lives as long
    as the method (aggregation's calls are functions of their own, not bound methods)."""
    backend = ClosingCounted()
    count = Metrics(backend, flush_interval=0.05, aggregate=aggregate).increment
    gc.collect()
    time.sleep(0.1)
    for _ in range(5):
        count("requests")
    metrics = count.__self__  # type: ignore[attr-defined]
    metrics.flush(timeout=5)
    assert backend.closes == 0
    assert sum(m.value for m in backend.metrics) == 5
    assert metrics.stats().dropped == 0
    metrics.close()


def test_closes_from_several_threads_close_the_backend_once() -> None:
    """Four threads closing one Metrics each closed the backend (a file closed twice
    failed: "'NoneType' object has no attribute 'close'")."""
    for _ in range(10):
        backend = ClosingCounted(pause=0.05)  # long enough for the closes to overlap
        metrics = Metrics(backend)
        metrics.increment("requests")
        closers = [threading.Thread(target=metrics.close, args=(5,)) for _ in range(4)]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join(10)
        assert backend.closes == 1
        assert metrics.stats().sent == 1


class HeldSend(MemoryBackend):
    """A send that waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closes = 0

    def send(self, batch: Sequence[Metric]) -> None:
        self.entered.set()
        self.release.wait(10)
        super().send(batch)

    def close(self) -> None:
        self.closes += 1


@pytest.mark.parametrize("aggregate", [False, True], ids=["queue", "aggregate"])
def test_a_send_past_the_close_deadline_is_settled_when_it_returns(aggregate: bool) -> None:
    """close(timeout) ran out while the worker was in a send: the backend was never
    closed (its connections and files stayed open), and with aggregation the calls made
    meanwhile stayed in stats().queued for ever, delivered nowhere, counted nowhere."""
    backend = HeldSend()
    metrics = Metrics(backend, flush_interval=0.05, aggregate=aggregate)
    metrics.increment("first")
    assert backend.entered.wait(5)
    for _ in range(100):
        metrics.increment("meanwhile")
    metrics.close(timeout=0.2)
    assert backend.closes == 0  # the send is still running: the backend is in use
    backend.release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and backend.closes == 0:
        time.sleep(0.02)
    assert backend.closes == 1
    stats = metrics.stats()
    assert stats.queued == 0, stats
    delivered = sum(m.value for m in backend.metrics if m.name == "meanwhile")
    assert delivered + stats.failed + stats.dropped == 100, stats
    metrics.close()
    assert backend.closes == 1


class HeldCheck(Backend):
    """A backend whose check of one metric waits: a call held between its look at the
    Metrics' state and its append to the queue."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sent: list[Metric] = []

    def check(self, metric: Metric) -> None:
        if metric.name == "held":
            self.entered.set()
            self.release.wait(10)

    def send(self, batch: Sequence[Metric]) -> None:
        self.sent.extend(batch)


def test_a_call_that_raced_close_is_counted_not_stranded() -> None:
    """A call already past its look at the Metrics when close() began queued its metric
    after close() had taken the last of the queue: never delivered, never counted
    dropped, in stats().queued for ever."""
    backend = HeldCheck()
    metrics = Metrics(backend, flush_interval=0.05)
    call = threading.Thread(target=metrics.increment, args=("held",))
    call.start()
    assert backend.entered.wait(5)
    assert metrics.close(timeout=2) == 0
    backend.release.set()
    call.join(5)
    stats = metrics.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (0, 0, 1), stats


def test_an_exit_waits_for_its_metrics_side_by_side_not_one_after_another(
    tmp_path: Path,
) -> None:
    """Four Metrics on a store that is down: the exit took four exit timeouts (16 s past
    SIGTERM, where docker stop kills at 10 s). Each has its exit_timeout, at once."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from kaneda_core import Backend, DeliveryError, Metrics

            class Down(Backend):
                def send(self, batch):
                    time.sleep(0.2)
                    raise DeliveryError("the store does not answer", retryable=True)

            kept = [Metrics(Down(), exit_timeout=2) for _ in range(4)]
            for metrics in kept:
                metrics.increment("requests")
            print("ready", flush=True)
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert done.stdout.strip() == "ready", done.stderr
    assert took < 5, f"exit took {took:.1f} s"  # one exit_timeout (2 s) and start-up
    assert done.stderr.count("1 metrics not delivered to Down") == 4, done.stderr


def test_leaving_a_with_block_is_bounded_by_exit_timeout() -> None:
    """Leaving ``with Metrics(...)`` closed without a timeout: with the store down, the
    block was held as long as the queue's retries took (55 s for 2,000 metrics)."""

    class Down(Backend):
        def send(self, batch: Sequence[Metric]) -> None:
            raise DeliveryError("connection refused", retryable=True)

    started = time.monotonic()
    with Metrics(Down(), exit_timeout=0.5, batch_size=10) as metrics:
        for _ in range(100):
            metrics.increment("requests")
    assert time.monotonic() - started < 3
    stats = metrics.stats()
    assert stats.queued == 0 and stats.failed == 100, stats


def test_a_metrics_made_by_a_late_exit_handler_delivers(tmp_path: Path) -> None:
    """An exit handler that runs after Kaneda's (registered before Kaneda was first used)
    made a Metrics lazily: its worker delivered nothing, nothing said so."""
    out = tmp_path / "metrics.jsonl"
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import atexit

            def report_shutdown():
                from kaneda_core import Metrics
                # A lazy global, first used here (aggregation asked for: not possible now)
                metrics = Metrics("logger://{out}", aggregate=True)
                metrics.event("shutdown", "worker stopping")
                metrics.increment("shutdown.count")

            atexit.register(report_shutdown)  # registered first: runs last

            from kaneda_core import Metrics
            Metrics("logger://{out}").increment("request")
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 3, done.stderr
    assert "after Kaneda's exit callback ran" in done.stderr


@pytest.mark.parametrize("face", ["kaneda", "kaneda_core"])
def test_a_call_from_a_finalizer_at_interpreter_shutdown_raises_nothing(
    tmp_path: Path, face: str
) -> None:
    """An object whose __del__ reports, collected as modules are torn down: the call
    raised ImportError ("sys.meta_path is None") from an import on the delivery path."""
    script = tmp_path / "app.py"
    options = "" if face == "kaneda" else ", batching=False"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from {face} import Metrics

            metrics = Metrics("logger://{tmp_path / "m.jsonl"}"{options})

            class Connection:
                def __del__(self):
                    try:
                        metrics.increment("db.connection.closed")
                    except Exception as error:
                        sys.stderr.write(f"the call raised {{error!r}}\\n")

            connection = Connection()  # a module global: collected at teardown
            metrics.increment("started")
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "the call raised" not in done.stderr, done.stderr


def test_a_child_forked_while_a_thread_reads_a_closed_metrics_stats_reads_them_too() -> None:
    """A closed Metrics was no longer reset in a forked child: a child forked while
    another thread of the parent read stats() (a health check) inherited its lock held,
    and its own stats() waited for ever (11 children in 30)."""
    metrics = Metrics(MemoryBackend())
    metrics.increment("requests")
    metrics.close()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            metrics.stats()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    hung = 0
    try:
        for _ in range(20):
            pid = os.fork()
            if pid == 0:  # the child: a second to read its stats, else it is killed
                signal.alarm(2)
                metrics.stats()
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            hung += os.waitstatus_to_exitcode(status) != 0
    finally:
        stop.set()
        reader.join(5)
    assert hung == 0
