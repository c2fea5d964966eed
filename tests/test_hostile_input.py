"""Input that breaks encoders, callers that change what they reported, bounds, exit paths."""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaneda_core import DeliveryError, InvalidMetric, Metric, Metrics, RetryPolicy
from kaneda_core.backends import LoggerBackend, MemoryBackend
from kaneda_core.dispatch import item_bytes

FAST = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02)
SURROGATE = "bad\udcff"


@pytest.fixture(params=["memory", "disk"])
def metrics(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    options = {"buffer_path": tmp_path / "b.sqlite"} if request.param == "disk" else {}
    metrics = Metrics(MemoryBackend(), **options)
    yield metrics
    metrics.close()


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.increment(SURROGATE),
        lambda m: m.gauge("g", 1, tags={SURROGATE: "v"}),
        lambda m: m.gauge("g", 1, tags={"k": SURROGATE}),
        lambda m: m.timing("t", 1, tags=[SURROGATE]),
        lambda m: m.event("e", f"deploy {SURROGATE}"),
        lambda m: m.custom("c", "shape", {"size": SURROGATE}),
        lambda m: m.custom("c", "shape", {SURROGATE: 1}),
        lambda m: m.custom("c", "shape", [1, [SURROGATE]]),
        lambda m: m.custom("c", SURROGATE, 1),
        lambda m: m.custom("c", "shape", 1, id_=SURROGATE),
        lambda m: m.gauge("g", 2**1024),
        lambda m: m.timing("t", -(2**1100)),
        lambda m: m.custom("c", "shape", {"big": 2**2000}),
    ],
)
def test_what_no_store_can_encode_is_refused_at_the_call(metrics: Metrics, call: Any) -> None:
    with pytest.raises(InvalidMetric):
        call(metrics)
    metrics.increment("fine")
    metrics.flush(5)
    assert [m.name for m in metrics.backend.metrics] == ["fine"]  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(min_size=1, max_size=20),
    key=st.text(min_size=1, max_size=10),
    value=st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=False)),
)
def test_any_text_is_refused_at_the_call_or_delivered_unchanged(
    tmp_path_factory: pytest.TempPathFactory, name: str, key: str, value: Any
) -> None:
    backend = MemoryBackend()
    path = tmp_path_factory.mktemp("b") / "b.sqlite"
    with Metrics(backend, buffer_path=path) as metrics:
        try:
            metrics.gauge(name, 1.5, tags={key: value})
        except InvalidMetric:
            return
        assert metrics.flush(5) == 0
    [stored] = backend.metrics
    assert (stored.name, stored.tags) == (name, {key: value})


class Picky(MemoryBackend):
    """Fails the whole batch, as an encoder would, when one metric holds 13."""

    def send(self, batch: Sequence[Metric]) -> None:
        if any(m.value == 13 for m in batch):
            raise ValueError("cannot encode 13")
        super().send(batch)


def test_one_poison_metric_fails_alone_and_the_rest_of_its_batch_is_stored(
    failures: Any,
) -> None:
    backend = Picky()
    with Metrics(backend, batch_size=1000, flush_interval=60) as metrics:
        for i in range(1000):
            metrics.gauge("g", i)
        metrics.flush(10)
        stats = metrics.stats()
    assert sorted(m.value for m in backend.metrics) == [i for i in range(1000) if i != 13]
    assert (stats.sent, stats.failed) == (999, 1)
    [(lost, error)] = failures.failures
    assert [m.value for m in lost] == [13] and isinstance(error, ValueError)


def test_a_line_the_logger_could_not_write_is_not_counted_as_sent(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    backend = LoggerBackend(filename=str(folder / "m.jsonl"))
    with Metrics(backend, retry=FAST) as metrics:
        metrics.increment("written")
        metrics.flush(5)
        (folder / "m.jsonl").unlink()
        folder.rmdir()
        backend._drop_file()  # as after a rotation: the next write opens the path again
        metrics.increment("lost")
        metrics.flush(5)
        stats = metrics.stats()
    assert (stats.sent, stats.failed) == (1, 1)


def test_custom_keeps_what_was_reported_not_the_callers_dict() -> None:
    backend = MemoryBackend()
    with Metrics(backend) as metrics:
        value: dict[str, Any] = {"n": 0, "nested": {"list": [0]}}
        for n in (10, 20, 30, 40, 50):
            value["n"] = n
            value["nested"]["list"][0] = n
            metrics.custom("c", "shape", value)
        value["injected\nx"] = 1  # added after the calls: never sent
    assert [m.value["n"] for m in backend.metrics] == [10, 20, 30, 40, 50]
    assert [m.value["nested"]["list"] for m in backend.metrics] == [[10], [20], [30], [40], [50]]
    assert all("injected\nx" not in m.value for m in backend.metrics)


def test_tags_are_copied_at_the_call_too() -> None:
    backend = MemoryBackend()
    with Metrics(backend) as metrics:
        tags = {"k": "a"}
        metrics.increment("x", tags=tags)
        tags["k"] = "b"
    assert backend.metrics[0].tags == {"k": "a"}


# -- bounds ------------------------------------------------------------------------------


class Down(MemoryBackend):
    def send(self, batch: Sequence[Metric]) -> None:
        raise ConnectionRefusedError("down")


def test_the_byte_bound_holds_when_metrics_grow_from_small_to_large() -> None:
    bound = 1 << 20
    metrics = Metrics(
        Down(), max_buffer_bytes=bound, batch_size=10**6, flush_interval=60, retry=FAST
    )
    for i in range(5000):
        metrics.gauge("small", i)
    for _ in range(2000):
        metrics.event("large", "x" * 10_000)
    dispatcher = metrics._dispatcher
    queued = list(dispatcher.queue)  # type: ignore[union-attr]
    assert sum(item_bytes(item) for item in queued) <= bound
    assert sum(len(item[2]) for item in queued if item[0] == "large") <= bound
    # What waits for the failure hook is bounded by the same number of bytes.
    assert dispatcher._dropped_bytes <= bound  # type: ignore[union-attr]
    # Copied in one step: the worker drains it meanwhile.
    dropped = list(dispatcher._dropped)  # type: ignore[union-attr]
    assert sum(item_bytes(item) for item in dropped) <= bound
    assert metrics.stats().dropped > 1000
    metrics.close(0.5)


# -- exit paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("buffered", [False, True])
def test_calls_after_close_are_counted_as_dropped_and_said_once(
    tmp_path: Path, buffered: bool, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"buffer_path": tmp_path / "b.sqlite"} if buffered else {}
    backend = MemoryBackend()
    metrics = Metrics(backend, **options)
    metrics.increment("before")
    metrics.close()
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        for _ in range(5):
            metrics.increment("after")  # no exception, whatever the buffer
            metrics.custom("c", "shape", {"a": 1})
    assert metrics.stats().dropped == 10
    assert [m.name for m in backend.metrics] == ["before"]
    assert caplog.text.count("after close()") == 1


def test_sync_calls_after_close_are_counted_as_dropped() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, batching=False)
    metrics.close()
    metrics.increment("after")
    assert metrics.stats().dropped == 1 and backend.metrics == []


def test_close_returns_by_its_deadline_even_when_the_failure_hook_is_slow(plugin: Any) -> None:
    from kaneda_core.hookspecs import hookimpl

    told: list[int] = []

    class SlowHook:
        @hookimpl
        def kaneda_batch_failed(self, metrics: Sequence[Metric], error: object) -> None:
            time.sleep(2)
            told.append(len(metrics))

    plugin.register(SlowHook())
    metrics = Metrics(Down(), retry=RetryPolicy(attempts=100, initial_delay=5))
    for i in range(100):
        metrics.gauge("g", i)
    time.sleep(0.1)
    started = time.monotonic()
    left = metrics.close(0.5)
    assert time.monotonic() - started < 0.8
    # Failed for good (the hook is being told): not left waiting as well.
    assert left == 0 and metrics.stats().failed == 100
    assert metrics.stats().queued == 0


def test_with_a_disk_buffer_a_refused_metric_is_failed_and_hooked_once(
    tmp_path: Path, failures: Any
) -> None:
    class HalfDown(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            refused = [m for m in batch if m.value == 0]
            others = [m for m in batch if m.value != 0]
            raise DeliveryError("busy", retryable=True, metrics=others, rejected=refused)

    metrics = Metrics(
        HalfDown(), buffer_path=tmp_path / "b.sqlite", flush_interval=0.02, retry=FAST
    )
    for i in range(10):
        metrics.gauge("g", i)
    time.sleep(0.5)  # many rounds of retries
    stats = metrics.stats()
    assert stats.failed == 1 and stats.queued == 9
    assert [[m.value for m in batch] for batch, _ in failures.failures] == [[0]]
    metrics.close(0.2)


# -- timers shared by overlapping blocks ----------------------------------------------------


def test_one_timer_entered_by_overlapping_threads_times_each_entry() -> None:
    backend = MemoryBackend()
    with Metrics(backend) as metrics:
        timer = metrics.timed("shared")
        start = threading.Barrier(2)

        def block(seconds: float) -> None:
            start.wait()
            with timer:
                time.sleep(seconds)

        threads = [threading.Thread(target=block, args=(s,)) for s in (0.4, 0.2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    took = sorted(m.value for m in backend.metrics)
    assert took[0] == pytest.approx(0.2, abs=0.08) and took[1] == pytest.approx(0.4, abs=0.08)


def test_one_timer_entered_by_overlapping_tasks_times_each_entry() -> None:
    backend = MemoryBackend()
    with Metrics(backend) as metrics:
        timer = metrics.timed("shared")

        async def block(seconds: float) -> None:
            async with timer:
                await asyncio.sleep(seconds)

        async def both() -> None:
            await asyncio.gather(block(0.4), block(0.2))

        asyncio.run(both())
    took = sorted(m.value for m in backend.metrics)
    assert took[0] == pytest.approx(0.2, abs=0.08) and took[1] == pytest.approx(0.4, abs=0.08)


def test_a_timer_left_in_another_thread_than_it_was_entered_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import threading

    backend = MemoryBackend()
    metrics = Metrics(backend, batching=False)
    timer = metrics.timed("request")
    entering = threading.Thread(target=timer.__enter__)  # request_started, in one thread
    entering.start()
    entering.join()
    timer.__exit__(None, None, None)  # request_finished, in another: no start known here
    assert backend.metrics == []
    assert "timed('request')" in caplog.text
    with timer:  # the timer still works
        pass
    assert [m.name for m in backend.metrics] == ["request"]


def test_a_timer_entered_in_one_thread_and_left_in_another_keeps_a_bounded_few_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each start stayed in the entering thread's context: memory and the cost of each
    entry grew with every request (a copy of all the starts per entry)."""
    import threading

    from kaneda_core.metrics import MAX_OPEN_STARTS

    backend = MemoryBackend()
    metrics = Metrics(backend, batching=False)
    timer = metrics.timed("request")

    def enter_many() -> None:
        for _ in range(MAX_OPEN_STARTS * 3):
            timer.__enter__()
        assert len(timer._starts.get()) == MAX_OPEN_STARTS
        for _ in range(MAX_OPEN_STARTS):  # the newest starts are the ones kept
            timer.__exit__(None, None, None)
        assert timer._starts.get() == ()

    entering = threading.Thread(target=enter_many)
    entering.start()
    entering.join()
    assert len(backend.metrics) == MAX_OPEN_STARTS
    assert caplog.text.count("without being left there") == 1


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_a_backend_raising_a_base_exception_never_loses_metrics_silently(
    raised: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    class Exiting(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            if not self.metrics:
                self.metrics.append(batch[0])  # once: a library calling sys.exit(), say
                raise raised
            super().send(batch)

    backend = Exiting()
    metrics = Metrics(backend, flush_interval=0.01)
    for _ in range(10):
        metrics.increment("x")
    assert metrics.flush(5) == 0
    metrics.increment("after")
    assert metrics.flush(5) == 0
    stats = metrics.stats()
    assert stats.sent + stats.failed == 11, stats  # each counted, none lost silently
    assert [m.name for m in backend.metrics][-1] == "after"  # the worker carried on
    assert type(raised).__name__ in caplog.text
    metrics.close()


@pytest.mark.parametrize("options", [{}, {"batching": False}, {"aggregate": True}])
def test_close_keeps_its_deadline_when_the_backend_is_slow_to_close_or_fails_to(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    class SlowToClose(MemoryBackend):
        def close(self) -> None:
            time.sleep(3)  # a driver's goodbye to a server that does not answer
            raise ConnectionResetError("gone")

    metrics = Metrics(SlowToClose(), **options)
    metrics.increment("x")
    started = time.monotonic()
    metrics.close(0.5)  # returns, raising nothing
    assert time.monotonic() - started < 1.5
    assert metrics.stats().sent == 1


class _Route(str, enum.Enum):
    """Names and tag values kept as a str enum, a common way to name metrics."""

    REQUESTS = "http.requests"


@pytest.mark.parametrize(
    "options", [{}, {"aggregate": True}, {"batching": False}], ids=["batching", "aggregate", "sync"]
)
def test_a_str_subclass_is_stored_as_the_text_it_holds(options: dict[str, Any]) -> None:
    """str() of a (str, Enum) member is 'Cls.MEMBER': stored so, the tag no longer matched
    the calls that compare equal to it, and the name was stored one way or the other
    depending on the path."""
    text = "http.requests"
    with Metrics(MemoryBackend(), **options) as metrics:
        metrics.gauge(_Route.REQUESTS, 1.5, tags={"route": _Route.REQUESTS, _Route.REQUESTS: "v"})
        metrics.increment(_Route.REQUESTS, tags=[_Route.REQUESTS])
        metrics.event("deploy", _Route.REQUESTS)
        metrics.custom("search", "query", {"route": _Route.REQUESTS, _Route.REQUESTS: 1})
        metrics.flush(5)
        stored = list(metrics.backend.metrics)  # type: ignore[attr-defined]
    assert len(stored) == 4
    for metric in stored:
        assert type(metric.name) is str
        texts = [
            metric.name,
            *metric.tags,
            *(metric.tags.values() if isinstance(metric.tags, dict) else []),
        ]
        if isinstance(metric.value, dict):
            texts += [*metric.value, *metric.value.values()]
        elif isinstance(metric.value, str):
            texts.append(metric.value)
        strings = [t for t in texts if isinstance(t, str)]
        assert all(type(t) is str for t in strings), metric
        assert "_Route.REQUESTS" not in strings and text in strings, metric
