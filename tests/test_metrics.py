"""The Metrics API: each method's meaning, timed, batching, failures and hooks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from kaneda_core import (
    Backend,
    ConfigurationError,
    DeliveryError,
    InvalidMetric,
    Metric,
    Metrics,
    RetryPolicy,
)
from kaneda_core.backends import MemoryBackend
from kaneda_core.delivery import BufferFull
from kaneda_core.hookspecs import hookimpl
from kaneda_core.plugins import get_plugin_manager

FAST_RETRY = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)


class FlakyBackend(MemoryBackend):
    """Fails the first ``failures`` sends with ``error``, then stores."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__()
        self.failures = failures
        self.error = error
        self.attempts = 0

    def send(self, batch: Sequence[Metric]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        super().send(batch)


class HangingBackend(MemoryBackend):
    """Blocks in send until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send(self, batch: Sequence[Metric]) -> None:
        self.release.wait(30)
        super().send(batch)


def test_each_method_keeps_its_meaning() -> None:
    metrics = Metrics(MemoryBackend(), batching=False)
    metrics.gauge("users.notifications", 13, tags=["new_message", "follow_request"])
    metrics.increment("user.profile.views")
    metrics.decrement("hotel.occupation")
    metrics.timing("hotel.availability.request_time", 4)
    metrics.event("user.signup", "New user registered")
    metrics.custom("hotel.response_data", metric="xml", value={"status": "ok"}, id_="2B75D750")
    got = [(m.kind, m.name, m.value, m.tags, m.id) for m in metrics.backend.metrics]  # type: ignore[attr-defined]
    assert got == [
        ("gauge", "users.notifications", 13, ["new_message", "follow_request"], None),
        ("counter", "user.profile.views", 1, {}, None),
        ("counter", "hotel.occupation", -1, {}, None),
        ("timing", "hotel.availability.request_time", 4, {}, None),
        ("event", "user.signup", "New user registered", {}, None),
        ("xml", "hotel.response_data", {"status": "ok"}, {}, "2B75D750"),
    ]


def test_sync_mode_stores_before_the_call_returns_in_the_callers_thread() -> None:
    threads = []

    class Recording(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            threads.append(threading.current_thread())
            super().send(batch)

    metrics = Metrics(Recording(), batching=False)
    metrics.increment("x")
    assert len(metrics.backend.metrics) == 1  # type: ignore[attr-defined]
    assert threads == [threading.current_thread()]


def test_backend_by_name_and_by_url() -> None:
    assert isinstance(Metrics("memory").backend, MemoryBackend)
    assert isinstance(Metrics("memory://").backend, MemoryBackend)


def test_a_non_backend_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="backend must be"):
        Metrics(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0),
        ("max_buffer", -1),
        ("flush_interval", 0),
        ("overflow", "explode"),
        ("exit_timeout", -1),
    ],
)
def test_bad_options_are_refused_with_their_name(option: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=option):
        Metrics(MemoryBackend(), **{option: value})  # type: ignore[arg-type]


# -- timed ---------------------------------------------------------------------------


def test_timed_decorator_default_name_and_seconds() -> None:
    metrics = Metrics(MemoryBackend(), batching=False)

    @metrics.timed()
    def work() -> str:
        time.sleep(0.01)
        return "done"

    assert work() == "done"
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.name == f"{__name__}.work"
    assert isinstance(metric.value, float) and 0.01 <= metric.value < 1


def test_timed_use_ms_reports_whole_milliseconds_and_tags() -> None:
    metrics = Metrics(MemoryBackend(), batching=False)
    with metrics.timed("block", tags={"k": "v"}, use_ms=True):
        time.sleep(0.02)
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert type(metric.value) is int and 20 <= metric.value < 1000
    assert metric.tags == {"k": "v"}


def test_timed_reports_even_when_the_code_raises() -> None:
    metrics = Metrics(MemoryBackend(), batching=False)

    @metrics.timed("failing")
    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        fail()
    assert [m.name for m in metrics.backend.metrics] == ["failing"]  # type: ignore[attr-defined]


class _NoReservedTags(MemoryBackend):
    """A backend with a rule of its own, as InfluxDB's reserved tag names."""

    def check(self, metric: Metric) -> None:
        if "host" in metric.tags:
            raise InvalidMetric("tags['host'] is reserved")


@pytest.mark.parametrize(
    ("tags", "refused"),
    [({"k": None}, "tags['k']"), ({"": "v"}, "tag keys"), ({"host": "h"}, "tags['host']")],
)
@pytest.mark.parametrize("used_as", ["block", "decorator", "default-named decorator"])
def test_timed_refuses_bad_tags_when_made_not_when_the_code_ends(
    tags: dict[str, object], refused: str, used_as: str
) -> None:
    """Checked at the end, a bad tag replaced the function's result or its own exception."""
    metrics = Metrics(_NoReservedTags(), batching=False)
    with pytest.raises(InvalidMetric, match=refused.replace("[", r"\[")):
        if used_as == "block":
            metrics.timed("block", tags=tags)
        elif used_as == "decorator":
            metrics.timed("job", tags=tags)(lambda: None)
        else:
            metrics.timed(tags=tags)(lambda: None)
    assert metrics.backend.metrics == []  # type: ignore[attr-defined]


def test_timed_reports_the_tags_it_was_given_not_what_the_dict_became() -> None:
    metrics = Metrics(MemoryBackend(), batching=False)
    tags = {"route": "/a"}
    timer = metrics.timed("request", tags=tags)
    tags["route"] = "/b"
    with timer:
        pass
    assert [m.tags for m in metrics.backend.metrics] == [{"route": "/a"}]  # type: ignore[attr-defined]


def test_timed_async_function_is_timed_until_it_finishes() -> None:
    metrics = Metrics(MemoryBackend(), batching=False)

    @metrics.timed(use_ms=True)
    async def fetch() -> int:
        await asyncio.sleep(0.03)
        return 7

    assert asyncio.run(fetch()) == 7
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.name == f"{__name__}.fetch" and metric.value >= 30


def test_timed_generator_is_timed_over_its_iteration_and_passes_sends_on() -> None:
    """A generator was timed while it was made (0.0 s), before any of its work."""
    metrics = Metrics(MemoryBackend(), batching=False)

    @metrics.timed("rows")
    def rows() -> Iterator[int]:
        total = 0
        for n in range(3):
            time.sleep(0.01)
            total += (yield n) or 0
        return total

    made = rows()
    assert inspect.isgeneratorfunction(rows) and metrics.backend.metrics == []  # type: ignore[attr-defined]
    assert next(made) == 0 and made.send(5) == 1 and made.send(6) == 2
    with pytest.raises(StopIteration) as finished:
        made.send(7)
    assert finished.value.value == 18
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.name == "rows" and metric.value >= 0.03

    thrown = rows()
    next(thrown)
    with pytest.raises(KeyError):
        thrown.throw(KeyError("passed on"))
    closed = rows()
    next(closed)
    closed.close()
    assert len(metrics.backend.metrics) == 3  # type: ignore[attr-defined]


def test_timed_async_generator_is_timed_over_its_iteration_and_stays_one() -> None:
    """An async generator (a FastAPI dependency that holds a session) was timed while it
    was made, and was no async generator function any more once decorated."""
    metrics = Metrics(MemoryBackend(), batching=False)
    seen: list[object] = []

    @metrics.timed("session", use_ms=True)
    async def session() -> AsyncIterator[str]:
        try:
            await asyncio.sleep(0.02)
            sent = yield "s1"
            seen.append(sent)
            await asyncio.sleep(0.02)
            yield "s2"
        except ValueError as error:
            seen.append(error)
            yield "recovered"

    async def main() -> None:
        assert [item async for item in session()] == ["s1", "s2"]
        talking = session()
        assert await talking.__anext__() == "s1"
        assert await talking.asend("hello") == "s2"
        await talking.aclose()
        thrown = session()
        await thrown.__anext__()
        assert await thrown.athrow(ValueError("into it")) == "recovered"
        await thrown.aclose()
        held = contextlib.asynccontextmanager(session)
        with pytest.raises(KeyError):
            async with held():
                raise KeyError("in the block")  # passed into the generator, and out

    assert inspect.isasyncgenfunction(session)
    asyncio.run(main())
    values = [m.value for m in metrics.backend.metrics]  # type: ignore[attr-defined]
    assert len(values) == 4 and all(value >= 20 for value in values)
    assert seen[:2] == [None, "hello"] and isinstance(seen[2], ValueError)


def test_timed_decorator_is_safe_across_threads() -> None:
    metrics = Metrics(MemoryBackend(), batching=False)

    @metrics.timed("slow", use_ms=True)
    def slow(seconds: float) -> None:
        time.sleep(seconds)

    threads = [threading.Thread(target=slow, args=(s,)) for s in (0.05, 0.2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = sorted(m.value for m in metrics.backend.metrics)  # type: ignore[attr-defined]
    assert 50 <= values[0] < 190 and values[1] >= 200


# -- batching ------------------------------------------------------------------------


def test_batching_flushes_by_size_without_waiting_for_the_interval() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, batch_size=10, flush_interval=60)
    for i in range(10):
        metrics.gauge("g", i)
    deadline = time.monotonic() + 5
    while len(backend.metrics) < 10 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert [m.value for m in backend.metrics] == list(range(10))
    assert backend.batches == 1
    metrics.close()


def test_batching_flushes_by_interval() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, batch_size=1000, flush_interval=0.05)
    metrics.gauge("g", 1)
    deadline = time.monotonic() + 5
    while not backend.metrics and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(backend.metrics) == 1
    metrics.close()


def test_close_delivers_everything_and_is_idempotent() -> None:
    backend = MemoryBackend()
    with Metrics(backend, batch_size=100, flush_interval=60) as metrics:
        for i in range(250):
            metrics.increment("c", tags={"i": i})
    assert len(backend.metrics) == 250 and backend.batches == 3
    assert metrics.close() == 0


def test_interpreter_exit_delivers_what_is_queued(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    script = (
        "from kaneda_core import connect\n"
        f"m = connect('logger://{out}', flush_interval=60)\n"
        "for i in range(500): m.gauge('g', i)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert len(out.read_text().splitlines()) == 500


def test_many_threads_lose_and_duplicate_nothing() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, batch_size=97, flush_interval=0.01)

    def report(thread: int) -> None:
        for i in range(2000):
            metrics.custom("t", "n", thread * 10_000 + i)

    threads = [threading.Thread(target=report, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.close(10) == 0
    values = [m.value for m in backend.metrics]
    assert len(values) == 16_000 and len(set(values)) == 16_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_starts_empty_and_parent_delivers_its_own_once(tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    from kaneda_core import connect

    metrics = connect(f"logger://{out}", flush_interval=60)
    for i in range(100):
        metrics.gauge("parent", i)
    pid = os.fork()
    if pid == 0:  # the child
        try:
            queued_at_fork = metrics.stats().queued
            metrics.gauge("child", 1)
            left = metrics.flush(10)
            os._exit(0 if queued_at_fork == 0 and left == 0 else 3)
        finally:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert metrics.close(10) == 0
    names = [line.split('"name":"')[1].split('"')[0] for line in out.read_text().splitlines()]
    assert names.count("parent") == 100 and names.count("child") == 1


# -- failures ------------------------------------------------------------------------


def test_a_down_backend_never_breaks_the_caller(failures: object) -> None:
    backend = FlakyBackend(failures=10**6, error=ConnectionRefusedError("refused"))
    metrics = Metrics(backend, batching=False)
    metrics.increment("c")
    stats = metrics.stats()
    assert (stats.sent, stats.failed) == (0, 1)
    [(failed, error)] = failures.failures  # type: ignore[attr-defined]
    assert [m.name for m in failed] == ["c"] and isinstance(error, ConnectionRefusedError)


def test_transient_failures_are_retried_then_delivered() -> None:
    backend = FlakyBackend(failures=2, error=ConnectionResetError("reset"))
    metrics = Metrics(backend, retry=FAST_RETRY)
    metrics.gauge("g", 1)
    assert metrics.flush(10) == 0
    stats = metrics.stats()
    assert (stats.sent, stats.failed, stats.retried) == (1, 0, 2)
    assert len(backend.metrics) == 1
    metrics.close()


def test_permanent_failures_are_not_retried(failures: object) -> None:
    backend = FlakyBackend(failures=10**6, error=DeliveryError("400 bad point", retryable=False))
    metrics = Metrics(backend, retry=FAST_RETRY)
    metrics.gauge("g", 1)
    assert metrics.flush(10) == 0
    assert backend.attempts == 1
    assert metrics.stats().failed == 1
    assert len(failures.failures) == 1  # type: ignore[attr-defined]
    metrics.close()


def test_retries_give_up_after_the_policys_attempts(failures: object) -> None:
    backend = FlakyBackend(failures=10**6, error=TimeoutError("timed out"))
    metrics = Metrics(backend, retry=FAST_RETRY)
    metrics.gauge("g", 1)
    assert metrics.flush(10) == 0
    assert backend.attempts == 3
    stats = metrics.stats()
    assert (stats.failed, stats.retried) == (1, 2)
    metrics.close()


def test_a_partial_failure_retries_only_the_failed_metrics() -> None:
    class Partial(MemoryBackend):
        calls: list[int] = []

        def send(self, batch: Sequence[Metric]) -> None:
            self.calls.append(len(batch))
            if len(self.calls) == 1:
                super().send(batch[:2])
                raise DeliveryError("2 refused", retryable=True, metrics=batch[2:])
            super().send(batch)

    backend = Partial()
    metrics = Metrics(backend, retry=FAST_RETRY)
    for i in range(4):
        metrics.gauge("g", i)
    metrics.flush(10)
    assert backend.calls == [4, 2]
    assert sorted(m.value for m in backend.metrics) == [0, 1, 2, 3]
    assert metrics.stats().sent == 4


def test_flush_and_close_return_by_their_deadline_while_the_backend_hangs() -> None:
    backend = HangingBackend()
    metrics = Metrics(backend, batch_size=10)
    for i in range(25):
        metrics.gauge("g", i)
    started = time.monotonic()
    left = metrics.flush(timeout=0.2)
    assert time.monotonic() - started < 1
    assert left > 0
    started = time.monotonic()
    call_times = []
    for i in range(1000):
        t = time.perf_counter()
        metrics.gauge("g", i)
        call_times.append(time.perf_counter() - t)
    assert max(call_times) < 0.05  # calls do not wait for the hanging backend
    left = metrics.close(timeout=0.2)
    assert time.monotonic() - started < 2 and left > 0
    backend.release.set()


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "block"])
def test_a_full_buffer_drops_by_policy_and_says_so(policy: str, failures: object) -> None:
    backend = HangingBackend()
    metrics = Metrics(
        backend,
        batch_size=1,
        max_buffer=5,
        overflow=policy,  # type: ignore[arg-type]
        block_timeout=0.01,
    )
    metrics.gauge("g", -1)  # taken by the worker, which then hangs
    time.sleep(0.1)
    for i in range(10):
        metrics.gauge("g", i)
    backend.release.set()
    metrics.close(10)
    stored = [m.value for m in backend.metrics]
    expected = {
        "drop_oldest": [-1, 5, 6, 7, 8, 9],
        "drop_newest": [-1, 0, 1, 2, 3, 4],
        "block": [-1, 0, 1, 2, 3, 4],
    }[policy]
    assert stored == expected
    assert metrics.stats().dropped == 5
    # Its own drops: hooks are the process's, and the test before gives its queue up to
    # them within close()'s deadline, from a thread that a loaded machine may run late.
    dropped = [
        m.value
        for batch, error in failures.failures  # type: ignore[attr-defined]
        if isinstance(error, BufferFull) and "the buffer was full" in str(error)
        for m in batch
    ]
    assert sorted(dropped) == sorted(set(range(-1, 10)) - set(expected))


def test_with_no_failure_hook_dropped_metrics_are_counted_logged_and_not_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Kept for a failure hook, a dropped metric is memory (and the collector's work, in an
    # outage that fills the buffer) that nothing needs when no plugin hears of losses.
    manager = get_plugin_manager()
    hearing = [
        (impl.plugin, impl.plugin_name) for impl in manager.hook.kaneda_batch_failed.get_hookimpls()
    ]  # the example plugin, installed for the tests
    for _plugin, name in hearing:
        manager.unregister(name=name)
    try:
        _drop_with_no_hook(caplog)
    finally:
        for hook_plugin, name in hearing:
            manager.register(hook_plugin, name=name)


def _drop_with_no_hook(caplog: pytest.LogCaptureFixture) -> None:
    backend = HangingBackend()
    metrics = Metrics(backend, batch_size=1, max_buffer=5, overflow="drop_newest")
    metrics.gauge("g", -1)  # taken by the worker, which then hangs
    time.sleep(0.1)
    for i in range(2000):
        metrics.gauge("x.dropped", i)
    kept = sum(1 for o in gc.get_objects() if type(o) is tuple and o[:1] == ("x.dropped",))
    assert kept == 5  # the queued ones only
    assert metrics.stats().dropped == 1995
    backend.release.set()
    metrics.close(10)
    assert "1995 metrics dropped so far" in caplog.text


# -- hooks ---------------------------------------------------------------------------


def test_default_tags_hook_adds_tags_the_call_overrides(plugin: object) -> None:
    class Defaults:
        @hookimpl
        def kaneda_default_tags(self, backend: Backend) -> dict[str, str]:
            return {"service": "shop", "region": "eu"}

    plugin.register(Defaults())  # type: ignore[attr-defined]
    metrics = Metrics(MemoryBackend(), batching=False)
    metrics.increment("a")
    metrics.increment("b", tags={"region": "us"})
    metrics.increment("c", tags=["list-tags-stay-as-given"])
    assert [m.tags for m in metrics.backend.metrics] == [  # type: ignore[attr-defined]
        {"service": "shop", "region": "eu"},
        {"service": "shop", "region": "us"},
        ["list-tags-stay-as-given"],
    ]


def test_filter_hook_drops_metrics_and_counts_them(plugin: object) -> None:
    class NoDebug:
        @hookimpl
        def kaneda_filter_metric(self, metric: Metric) -> bool:
            return not metric.name.startswith("debug.")

    plugin.register(NoDebug())  # type: ignore[attr-defined]
    metrics = Metrics(MemoryBackend())
    metrics.increment("debug.cache_probe")
    metrics.increment("requests")
    metrics.close()
    assert [m.name for m in metrics.backend.metrics] == ["requests"]  # type: ignore[attr-defined]
    assert metrics.stats().filtered == 1


def test_a_broken_failure_hook_does_not_stop_delivery(plugin: object, caplog: object) -> None:
    class Broken:
        @hookimpl
        def kaneda_batch_failed(self, metrics: object, error: object, backend: object) -> None:
            raise RuntimeError("hook bug")

    plugin.register(Broken())  # type: ignore[attr-defined]
    metrics = Metrics(FlakyBackend(1, DeliveryError("bad", retryable=False)), batching=False)
    metrics.increment("a")
    metrics.increment("b")
    assert [m.name for m in metrics.backend.metrics] == ["b"]  # type: ignore[attr-defined]
    assert "hook bug" in caplog.text  # type: ignore[attr-defined]


def test_rejected_metrics_fail_at_once_while_the_others_are_retried(failures: object) -> None:
    class Mixed(MemoryBackend):
        calls: list[list[int]] = []

        def send(self, batch: Sequence[Metric]) -> None:
            self.calls.append([m.value for m in batch])
            if len(self.calls) == 1:
                super().send(batch[:1])
                raise DeliveryError(
                    "1 refused, 2 throttled", retryable=True, metrics=batch[2:], rejected=batch[1:2]
                )
            super().send(batch)

    backend = Mixed()
    metrics = Metrics(backend, retry=FAST_RETRY)
    for i in range(4):
        metrics.gauge("g", i)
    metrics.flush(10)
    assert backend.calls == [[0, 1, 2, 3], [2, 3]]
    stats = metrics.stats()
    assert (stats.sent, stats.failed, stats.retried) == (3, 1, 2)
    [(lost, _)] = failures.failures  # type: ignore[attr-defined]
    assert [m.value for m in lost] == [1]


# -- timed on callables that are not functions ---------------------------------------


def _scaled(factor: int, value: int) -> int:
    time.sleep(0.01)
    return factor * value


def test_timed_decorates_a_partial_under_its_function_s_name() -> None:
    import functools

    metrics = Metrics(MemoryBackend(), batching=False)
    double = metrics.timed()(functools.partial(_scaled, 2))
    assert double(21) == 42
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.name == f"{__name__}._scaled"
    assert isinstance(metric.value, float) and 0.01 <= metric.value < 1


def test_timed_decorates_a_callable_instance_under_its_class_s_name() -> None:
    class Handler:
        def __call__(self, value: int) -> int:
            return value + 1

    metrics = Metrics(MemoryBackend(), batching=False)
    handle = metrics.timed(use_ms=True)(Handler())
    assert handle(1) == 2
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.name == f"{__name__}.{Handler.__qualname__}"
    assert type(metric.value) is int


def test_timed_decorates_an_async_callable_instance_and_a_partial_of_one() -> None:
    import functools

    class Fetcher:
        async def __call__(self, value: int) -> int:
            await asyncio.sleep(0.03)
            return value

    async def fetch(value: int) -> int:
        await asyncio.sleep(0.03)
        return value

    metrics = Metrics(MemoryBackend(), batching=False)
    assert asyncio.run(metrics.timed(use_ms=True)(Fetcher())(7)) == 7
    assert asyncio.run(metrics.timed(use_ms=True)(functools.partial(fetch, 8))()) == 8
    names = [m.name for m in metrics.backend.metrics]  # type: ignore[attr-defined]
    assert names == [f"{__name__}.{Fetcher.__qualname__}", f"{__name__}.fetch"]
    assert all(m.value >= 30 for m in metrics.backend.metrics)  # type: ignore[attr-defined]


@pytest.mark.parametrize("options", [{}, {"batching": False}, {"aggregate": True}])
def test_a_metrics_pickled_says_to_make_one_in_the_child(options: dict[str, bool]) -> None:
    # As a spawn or forkserver child's argument is: "cannot pickle '_thread.lock' object".
    import copy
    import pickle

    metrics = Metrics(MemoryBackend(), **options)  # type: ignore[arg-type]
    try:
        for attempt in (pickle.dumps, copy.deepcopy):
            with pytest.raises(TypeError) as caught:
                attempt(metrics)
            message = str(caught.value)
            assert "a Metrics cannot be pickled" in message
            assert "Make one in the child" in message and "connect(url)" in message
    finally:
        metrics.close()
