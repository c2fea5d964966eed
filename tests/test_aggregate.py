"""Client-side aggregation: one point per series per interval, nothing lost, bad input refused."""

from __future__ import annotations

import enum
import math
import os
import signal
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaneda_core import ConfigurationError, InvalidMetric, Metrics, connect
from kaneda_core.backends import MemoryBackend


def points(backend: MemoryBackend) -> dict[tuple[str, str], Any]:
    return {(m.kind, m.name): m for m in backend.metrics}


def test_counters_sum_gauges_keep_the_last_timings_summarise() -> None:
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        for _ in range(1000):
            metrics.increment("hits", tags={"route": "/"})
        metrics.decrement("hits", tags={"route": "/"})
        for value in range(100):
            metrics.gauge("depth", value)
        for ms in range(1, 101):
            metrics.timing("took", ms)
        metrics.flush(5)
        stats = metrics.stats()
    stored = points(backend)
    assert len(backend.metrics) == 3
    assert stored["counter", "hits"].value == 999 and stored["counter", "hits"].tags == {
        "route": "/"
    }
    assert stored["gauge", "depth"].value == 99
    took = stored["timing", "took"].value
    assert took == {
        "count": 100, "sum": 5050, "min": 1, "max": 100, "p50": 50, "p90": 90, "p99": 99,
    }  # fmt: skip
    assert stats.folded == 1201 and stats.sent == 3


def test_events_and_custom_metrics_are_never_folded() -> None:
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        for i in range(3):
            metrics.event("deploy", f"v{i}")
            metrics.custom("search", "query", {"took": i})
        metrics.flush(5)
    assert [m.value for m in backend.metrics if m.kind == "event"] == ["v0", "v1", "v2"]
    assert len([m for m in backend.metrics if m.kind == "query"]) == 3


def test_one_point_per_series_per_interval() -> None:
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=0.2) as metrics:
        deadline = time.monotonic() + 1.1
        calls = 0
        while time.monotonic() < deadline:
            metrics.increment("tick", tags={"shard": str(calls % 3)})
            calls += 1
        metrics.flush(5)
    assert sum(m.value for m in backend.metrics) == calls
    per_shard: dict[str, list[int]] = {}
    for metric in backend.metrics:
        per_shard.setdefault(metric.tags["shard"], []).append(metric.time_ns)  # type: ignore[call-overload]
    assert sorted(per_shard) == ["0", "1", "2"]
    for times in per_shard.values():
        assert 4 <= len(times) <= 8  # one point per 0.2 s interval, over about a second
        assert len(set(times)) == len(times)


def test_tags_in_another_order_are_one_series_and_default_tags_apply(plugin: Any) -> None:
    from kaneda_core.hookspecs import hookimpl

    class Region:
        @hookimpl
        def kaneda_default_tags(self, backend: object) -> dict[str, str]:
            return {"region": "eu"}

    plugin.register(Region())
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.increment("hits", tags={"a": "1", "b": "2"})
        metrics.increment("hits", tags={"b": "2", "a": "1"})
        metrics.increment("hits")
        metrics.flush(5)
    by_tags = {tuple(sorted(m.tags.items())): m.value for m in backend.metrics}  # type: ignore[union-attr]
    assert by_tags == {
        (("a", "1"), ("b", "2"), ("region", "eu")): 2,
        (("region", "eu"),): 1,
    }


@pytest.mark.parametrize("folds", [1, 2])
def test_a_gauge_given_its_tags_in_another_order_keeps_the_last_calls_value(folds: int) -> None:
    """One series given in two tag orders is two keys until emitted: the point carries the
    value of the last call, whichever key it came by (the merge went by the keys' order)."""
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        aggregator = metrics._dispatcher.aggregator  # type: ignore[union-attr]
        metrics.gauge("level", 1, tags={"a": "1", "b": "2"})
        metrics.gauge("level", 2, tags={"b": "2", "a": "1"})
        if folds == 2:
            aggregator.fold()  # the worker folded between the calls
        metrics.gauge("level", 3, tags={"a": "1", "b": "2"})
        metrics.gauge("other", 5, tags={"b": "2", "a": "1"})
        metrics.gauge("other", 6, tags={"a": "1", "b": "2"})
        metrics.gauge("other", 4, tags={"b": "2", "a": "1"})
        assert metrics.flush(5) == 0
    assert sorted((m.name, m.value) for m in backend.metrics) == [("level", 3), ("other", 4)]


def test_sums_beyond_64_bits_are_stored_as_floats() -> None:
    """Each call's value fits a store's integers; the sum of two may not (MongoDB's and
    InfluxDB's integers are 64 bits): such a sum is stored as the nearest float."""
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.timing("took", 2**62)
        metrics.timing("took", 2**62)
        metrics.gauge("level", 2**62)
        metrics.flush(5)
    by_name = {m.name: m.value for m in backend.metrics}
    assert by_name["took"]["sum"] == float(2**63) and type(by_name["took"]["sum"]) is float
    assert by_name["took"]["max"] == 2**62 and by_name["level"] == 2**62


@pytest.mark.parametrize(
    ("value", "name"), [(2**1023 - 1, "whole"), (1.5e308, "float")], ids=["int", "float"]
)
def test_a_sum_past_a_floats_range_fails_alone_and_aggregation_goes_on(
    value: Any, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two timings of 1.5e308 sum to infinity, two of 2**1023 - 1 past any float: the
    first made every later emit fail (all aggregated points lost, silently, stats all
    zero), the second was stored as inf, a value a call refuses."""
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.timing(name, value)
        metrics.timing(name, value)
        metrics.gauge("ok", 1)
        assert metrics.flush(5) == 0
        metrics.increment("later")
        assert metrics.flush(5) == 0
        stats = metrics.stats()
    assert sorted(m.name for m in backend.metrics) == ["later", "ok"]
    assert stats.failed == 1 and stats.sent == 2
    assert f"the aggregated value of {name!r} is beyond what a store holds" in caplog.text


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.increment("bad\udcff"),
        lambda m: m.increment("", tags={"k": "v"}),
        lambda m: m.increment("hits", tags={"k": ["unhashable"]}),
        lambda m: m.increment("hits", tags={"": "v"}),
        lambda m: m.gauge("level", float("nan")),
        lambda m: m.timing("took", "fast"),
        lambda m: m.gauge("level", 2**1100),
    ],
)
def test_bad_input_is_refused_at_the_call_even_on_a_known_series(call: Any) -> None:
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.gauge("level", 1)  # a known series: the fast path still checks values
        with pytest.raises(InvalidMetric):
            call(metrics)
        metrics.flush(5)
    assert [(m.name, m.value) for m in backend.metrics] == [("level", 1)]


@settings(max_examples=40, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(["increment", "decrement", "gauge", "timing"]),
            st.sampled_from(["a", "b"]),
            st.dictionaries(st.sampled_from(["x", "y"]), st.sampled_from(["1", "2"]), max_size=2),
            st.integers(-1000, 1000),
        ),
        max_size=60,
    )
)
def test_folded_points_equal_what_the_calls_add_up_to(
    calls: list[tuple[str, str, Any, int]],
) -> None:
    backend = MemoryBackend()
    expected: dict[tuple[str, str, tuple[Any, ...]], Any] = {}
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        for method, name, tags, value in calls:
            series = tuple(sorted(tags.items()))
            if method == "increment":
                metrics.increment(name, tags=tags)
                key = ("counter", name, series)
                expected[key] = expected.get(key, 0) + 1
            elif method == "decrement":
                metrics.decrement(name, tags=tags)
                key = ("counter", name, series)
                expected[key] = expected.get(key, 0) - 1
            elif method == "gauge":
                metrics.gauge(name, value, tags=tags)
                expected[("gauge", name, series)] = value
            else:
                metrics.timing(name, value, tags=tags)
                key = ("timing", name, series)
                count, total = expected.get(key, (0, 0))
                expected[key] = (count + 1, total + value)
        metrics.flush(5)
    got: dict[tuple[str, str, tuple[Any, ...]], Any] = {}
    for m in backend.metrics:
        key = (m.kind, m.name, tuple(sorted(m.tags.items())))  # type: ignore[union-attr]
        got[key] = (m.value["count"], m.value["sum"]) if m.kind == "timing" else m.value
    assert got == expected


def test_threads_lose_nothing() -> None:
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=0.05) as metrics:

        def work() -> None:
            for _ in range(20_000):
                metrics.increment("hits", tags={"t": "x"})

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics.flush(5)
        assert metrics.stats().folded == 80_000
    assert sum(m.value for m in backend.metrics) == 80_000


def test_a_signal_handler_may_report_while_its_thread_folds_or_reports() -> None:
    backend = MemoryBackend()
    handled = []
    with Metrics(backend, aggregate=True, flush_interval=0.01) as metrics:

        def on_alarm(signum: int, frame: object) -> None:
            handled.append(1)
            metrics.increment("from_handler")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
        try:
            calls = 0
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                metrics.increment("from_main", tags={"k": "v"})
                calls += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, previous)
        metrics.flush(5)
    totals: dict[str, int] = {}
    for m in backend.metrics:
        totals[m.name] = totals.get(m.name, 0) + m.value
    assert totals == {"from_main": calls, "from_handler": len(handled)}


def test_a_forked_child_folds_its_own_calls_and_the_parent_keeps_its_own() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, aggregate=True, flush_interval=60)
    for _ in range(10):
        metrics.increment("parent")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            metrics.increment("child")
            metrics.flush(5)
            mine = [(m.name, m.value) for m in backend.metrics]
            code = 0 if mine == [("child", 1)] else 3
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    metrics.flush(5)
    assert [(m.name, m.value) for m in backend.metrics] == [("parent", 10)]
    metrics.close()


def test_close_emits_what_was_folded_and_later_calls_are_dropped() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, aggregate=True, flush_interval=60)
    metrics.increment("hits")
    metrics.increment("hits")
    metrics.close()
    metrics.increment("hits")
    assert [(m.name, m.value) for m in backend.metrics] == [("hits", 2)]
    assert metrics.stats().dropped == 1


def test_aggregation_is_an_option_of_urls_and_needs_batching() -> None:
    with connect("memory://?aggregate=true&percentiles=50,95", flush_interval=60) as metrics:
        for value in (1, 2, 3, 4):
            metrics.timing("took", value)
        metrics.flush(5)
        [point] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert point.value["count"] == 4 and set(point.value) >= {"p50", "p95"}
    with pytest.raises(ConfigurationError, match="batching"):
        Metrics(MemoryBackend(), aggregate=True, batching=False)
    with pytest.raises(ConfigurationError, match="percentiles"):
        Metrics(MemoryBackend(), aggregate=True, percentiles=(0, 200))


def test_a_keyword_wins_over_the_urls_option_in_metrics_as_in_connect() -> None:
    url = "memory://?aggregate=true&percentiles=50,95"
    for make in (Metrics, connect):
        with make("memory://?aggregate=true", aggregate=False, flush_interval=60) as metrics:
            metrics.increment("hits")
            metrics.increment("hits")
            metrics.flush(5)
            assert [m.value for m in metrics.backend.metrics] == [1, 1]  # type: ignore[attr-defined]
        with make(url, percentiles=(), flush_interval=60) as metrics:
            metrics.timing("took", 1)
            metrics.flush(5)
            [point] = metrics.backend.metrics  # type: ignore[attr-defined]
            assert set(point.value) == {"count", "sum", "min", "max"}
    with Metrics("memory://?aggregate=true", flush_interval=60) as metrics:
        metrics.increment("hits")
        metrics.increment("hits")
        metrics.flush(5)
        assert [m.value for m in metrics.backend.metrics] == [2]  # type: ignore[attr-defined]


def test_tags_of_any_dict_type_fold_with_a_plain_dicts() -> None:
    from collections import OrderedDict, defaultdict

    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.increment("hits", tags=OrderedDict(route="/"))
        metrics.increment("hits", tags=defaultdict(str, route="/"))
        metrics.increment("hits", tags={"route": "/"})
        metrics.gauge("depth", 3, tags=OrderedDict(q="a"))
        metrics.timing("took", 0.5, tags=OrderedDict(q="a"))
        assert metrics.flush(5) == 0
    stored = points(backend)
    assert stored["counter", "hits"].value == 3
    assert stored["counter", "hits"].tags == {"route": "/"}
    assert type(stored["counter", "hits"].tags) is dict
    assert stored["gauge", "depth"].value == 3 and stored["timing", "took"].value["count"] == 1


def test_series_memory_is_bounded_in_bytes_and_freed_on_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gc
    import tracemalloc

    from kaneda_core import aggregate

    monkeypatch.setattr(aggregate, "MAX_SERIES_BYTES", 2_000_000)
    backend = MemoryBackend()
    tracemalloc.start()
    try:
        metrics = Metrics(backend, aggregate=True, flush_interval=60)
        aggregator = metrics._dispatcher.aggregator  # type: ignore[union-attr]
        largest = 0
        for i in range(3000):  # 3000 series with 10 KB tags: 30 MB of series keys
            metrics.increment("hits", tags={"user": f"{i:05d}" + "x" * 10_000})
            largest = max(largest, aggregator.series_bytes)
            time.sleep(0.0001)  # the worker gets its turn, as in an application
        assert largest < 8_000_000, largest  # emitted early, not held for the interval
        assert metrics.close(10) == 0
        assert metrics.stats().sent == 3000  # nothing lost by emitting early
        assert sorted(m.tags["user"][:5] for m in backend.metrics) == [
            f"{i:05d}" for i in range(3000)
        ]
        backend.metrics.clear()  # what was delivered is the store's, not Kaneda's
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert retained < 2_000_000, retained  # the 30 MB of series keys were let go


def test_a_series_forgotten_while_a_call_queued_it_is_still_emitted_with_its_tags() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, aggregate=True, flush_interval=60)
    aggregator = metrics._dispatcher.aggregator  # type: ignore[union-attr]
    metrics.increment("hits", tags={"route": "/", "code": 200})
    metrics.gauge("depth", 3, tags=["a", "b"])
    metrics.timing("took", 0.5)
    aggregator.forget_series()  # the memory emptied as another thread's call queued
    left = metrics.flush(5)
    metrics.close(5)
    assert left == 0  # the worker did not fail at every round on the forgotten series
    stored = points(backend)
    assert stored["counter", "hits"].tags == {"route": "/", "code": 200}
    assert stored["gauge", "depth"].tags == ["a", "b"] and stored["timing", "took"].tags == {}


def test_a_call_that_races_close_is_counted_as_dropped() -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, aggregate=True, flush_interval=60)
    aggregator = metrics._dispatcher.aggregator  # type: ignore[union-attr]
    emit = aggregator.emit

    def last_emit_then_a_late_call(stamp_ns: int) -> Any:
        points = emit(stamp_ns)
        if metrics._dispatcher._closed:  # type: ignore[union-attr]
            aggregator.counts.append(("late",))  # another thread's call, just too late
        return points

    aggregator.emit = last_emit_then_a_late_call  # type: ignore[method-assign]
    metrics.increment("hits")
    assert metrics.close(5) == 0
    stats = metrics.stats()
    # The first late call is folded by close()'s extra round; the next comes after it.
    assert (stats.sent, stats.dropped) == (2, 1)


@pytest.mark.parametrize(
    "bad",
    ["v", {None: "v"}, b"v"],
    ids=["a bare string", "a None tag key", "bytes"],
)
def test_tags_refused_without_aggregation_are_refused_whatever_series_was_seen(bad: Any) -> None:
    # A series' key is the name and the tags' items: a bare string "v", a dict {None: "v"}
    # and the list ["v"] must not share one, so that the first cannot pass for the last.
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.increment("n", tags=["v"])
        with pytest.raises(InvalidMetric):
            metrics.increment("n", tags=bad)
        metrics.flush(5)
    assert [(m.value, m.tags) for m in backend.metrics] == [(1, ["v"])]


def test_tag_values_equal_in_python_but_stored_apart_are_series_apart() -> None:
    # 1 == 1.0 == True, but a store keeps them as three tag values (see the default path).
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        for value in (1, True, 1.0, 1, "1"):
            metrics.increment("n", tags={"ok": value})
            metrics.gauge("g", 5, tags={"ok": value})
        metrics.flush(5)
    counters = sorted(
        (repr(m.tags["ok"]), m.value)  # type: ignore[call-overload]
        for m in backend.metrics
        if m.kind == "counter"
    )
    assert counters == [("'1'", 1), ("1", 2), ("1.0", 1), ("True", 1)]
    gauges = {(type(m.tags["ok"]), m.tags["ok"]) for m in backend.metrics if m.kind == "gauge"}  # type: ignore[call-overload]
    assert gauges == {(int, 1), (bool, True), (float, 1.0), (str, "1")}


class _TagRaisingOnCompare(str):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    __hash__ = str.__hash__


def test_a_tag_whose_comparison_raises_stays_out_of_later_calls() -> None:
    # A str subclass is taken as the plain string it holds (as without aggregation); its
    # own __eq__ must not run at later calls, nor in the worker.
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.increment("n", tags={"k": _TagRaisingOnCompare("v")})
        metrics.increment("n", tags={"k": "v"})
        metrics.increment("n", tags={"k": _TagRaisingOnCompare("v")})
        with pytest.raises(InvalidMetric, match="tags\\['k'\\]"):
            metrics.increment("n", tags={"k": b"v"})
        assert metrics.flush(5) == 0
        stats = metrics.stats()
    assert [(m.value, m.tags) for m in backend.metrics] == [(3, {"k": "v"})]
    assert type(backend.metrics[0].tags["k"]) is str  # type: ignore[call-overload]
    assert stats.folded == 3 and stats.failed == 0


def test_a_known_series_of_typed_tags_still_refuses_bad_values_at_the_call() -> None:
    # Tags holding numbers are validated once per series (a typed key of the call's own),
    # as strings are: a later call's value is checked all the same.
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        for _ in range(3):
            metrics.gauge("level", 1, tags={"code": 200, "cached": True})
        with pytest.raises(InvalidMetric):
            metrics.gauge("level", float("nan"), tags={"code": 200, "cached": True})
        with pytest.raises(InvalidMetric):
            metrics.timing("took", "fast", tags={"code": 200})
        metrics.increment("hits", tags={"code": 200})
        metrics.increment("hits", tags={"code": 200.0})
        metrics.flush(5)
    stored = sorted((m.kind, m.value, repr(m.tags)) for m in backend.metrics)
    assert stored == [
        ("counter", 1, "{'code': 200.0}"),
        ("counter", 1, "{'code': 200}"),
        ("gauge", 1, "{'code': 200, 'cached': True}"),
    ]


def test_negative_zero_and_zero_tags_are_two_series_as_without_aggregation() -> None:
    for aggregate in (False, True):
        backend = MemoryBackend()
        with Metrics(backend, aggregate=aggregate, flush_interval=60) as metrics:
            for _ in range(2):  # the second calls find the series known
                metrics.increment("hits", tags={"x": -0.0})
                metrics.increment("hits", tags={"x": 0.0})
                metrics.gauge("depth", 1, tags={"x": 0.0, "y": 1})
                metrics.gauge("depth", 2, tags={"x": -0.0, "y": 1})
            metrics.flush(5)
        signs = sorted(
            (m.kind, math.copysign(1, m.tags["x"]), m.value)  # type: ignore[call-overload]
            for m in backend.metrics
        )
        if aggregate:
            assert signs == [
                ("counter", -1.0, 2), ("counter", 1.0, 2), ("gauge", -1.0, 2), ("gauge", 1.0, 1),
            ]  # fmt: skip
        else:
            assert len(signs) == 8 and {sign for _, sign, _ in signs} == {-1.0, 1.0}


class _Level(enum.IntEnum):
    HIGH = 3


class _Float(float):
    """A float of the caller's own (numpy's float64 is one)."""

    def __add__(self, other: Any) -> _Float:
        return _Float(float(self) + float(other) if abs(float(self)) < 1e308 else math.inf)

    __radd__ = __add__


def test_values_of_the_callers_types_are_folded_as_plain_numbers() -> None:
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.gauge("level", _Level.HIGH)
        metrics.gauge("ratio", _Float(2.5))
        metrics.increment("hits")
        metrics.timing("took", _Float(1.5e308))
        metrics.timing("took", _Float(1.5e308))  # a sum a float subclass takes to inf
        metrics.timing("fast", _Float(0.5))
        metrics.gauge("big", 2**64)  # one call's value: stays the integer it was
        metrics.flush(5)
        stats = metrics.stats()
    stored = points(backend)
    assert stored["gauge", "level"].value == 3 and type(stored["gauge", "level"].value) is int
    assert type(stored["gauge", "ratio"].value) is float
    assert all(type(v) is float for v in stored["timing", "fast"].value.values() if v != 1)
    assert stored["gauge", "big"].value == 2**64 and type(stored["gauge", "big"].value) is int
    # The summary whose sum is past a float's range is set aside, counted failed.
    assert ("timing", "took") not in stored and stats.failed == 1


def test_gauges_are_stamped_in_the_order_of_their_last_calls() -> None:
    # {"code": "200"} and {"code": 200} are two series here and one in a store that keeps
    # tags as text (InfluxDB): there, the later point's value is the gauge's last.
    backend = MemoryBackend()
    with Metrics(backend, aggregate=True, flush_interval=60) as metrics:
        metrics.gauge("queue", 5, tags={"code": "200"})
        metrics.gauge("queue", 7, tags={"code": 200})
        metrics.gauge("queue", 9, tags={"code": "200"})
        metrics.gauge("other", 1)
        metrics.flush(5)
    ordered = sorted(backend.metrics, key=lambda m: m.epoch_ns)
    assert [(m.name, m.value) for m in ordered] == [("queue", 7), ("queue", 9), ("other", 1)]
