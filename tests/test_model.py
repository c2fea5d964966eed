"""The metric record and its validation, through every Metrics method."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaneda_core import InvalidMetric, Metric, Metrics
from kaneda_core.backends import MemoryBackend
from kaneda_core.model import host_name


def sync_metrics() -> Metrics:
    return Metrics(MemoryBackend(), batching=False)


@pytest.mark.parametrize(
    ("call", "field", "shown"),
    [
        (lambda m: m.gauge("", 1), "name", "''"),
        (lambda m: m.gauge(None, 1), "name", "None"),
        (lambda m: m.gauge(b"x", 1), "name", "b'x'"),
        (lambda m: m.gauge("g", float("nan")), "value", "nan"),
        (lambda m: m.gauge("g", float("inf")), "value", "inf"),
        (lambda m: m.timing("t", "12"), "value", "'12'"),
        (lambda m: m.gauge("g", True), "value", "True"),
        (lambda m: m.event("e", 12), "text", "12"),
        (lambda m: m.increment("c", tags="a=b"), "tags", "'a=b'"),
        (lambda m: m.increment("c", tags={"a": [1]}), "tags['a']", "[1]"),
        (lambda m: m.increment("c", tags={"a": float("nan")}), "tags['a']", "nan"),
        (lambda m: m.increment("c", tags={1: "a"}), "tag keys", "1"),
        (lambda m: m.increment("c", tags=["ok", 3]), "list", "3"),
        (lambda m: m.custom("c", "", 1), "metric", "''"),
        (lambda m: m.custom("c", "k", object), "value", "<class 'object'>"),
        (lambda m: m.custom("c", "k", {"a": {"b": float("inf")}}), "value['a']['b']", "inf"),
        (lambda m: m.custom("c", "k", 1, id_=1.5), "id_", "1.5"),
    ],
)
def test_bad_input_names_the_field_and_the_value(call: Any, field: str, shown: str) -> None:
    metrics = sync_metrics()
    with pytest.raises(InvalidMetric) as caught:
        call(metrics)
    assert field in str(caught.value) and shown in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert metrics.backend.metrics == []  # type: ignore[attr-defined]


def test_a_metric_is_immutable_and_owns_its_tags() -> None:
    tags = {"route": "/"}
    metrics = sync_metrics()
    metrics.increment("requests", tags=tags)
    tags["route"] = "/changed"
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.tags == {"route": "/"}
    with pytest.raises(AttributeError):
        metric.name = "other"  # type: ignore[misc]


def test_timestamp_is_taken_at_the_call_in_utc() -> None:
    metrics = Metrics(MemoryBackend(), flush_interval=60)
    before = datetime.now(timezone.utc)
    metrics.gauge("g", 1)
    after = datetime.now(timezone.utc)
    metrics.flush(5)
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.timestamp.tzinfo is timezone.utc
    assert before.replace(microsecond=0) <= metric.timestamp <= after
    metrics.close()


def test_host_is_resolved_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    host_name()
    monkeypatch.setattr(socket, "gethostname", lambda: pytest.fail("asked again"))
    metrics = sync_metrics()
    metrics.gauge("g", 1)
    assert metrics.backend.metrics[0].host == host_name()  # type: ignore[attr-defined]


def test_create_refuses_a_naive_timestamp() -> None:
    with pytest.raises(InvalidMetric, match="timezone-aware"):
        Metric.create("g", "gauge", 1, timestamp=datetime(2024, 1, 1))


# -- property: every method records exactly what it was given, or says why not -------

scalars = st.one_of(
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.binary(max_size=3),
)
names = st.one_of(st.text(max_size=12), st.none(), st.integers())
tags = st.one_of(
    st.none(),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), scalars, max_size=4),
    st.lists(st.one_of(st.text(max_size=6), st.integers()), max_size=4),
    st.text(max_size=4),
)
values = st.one_of(
    scalars,
    st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    st.lists(scalars, max_size=3),
)


def _valid_tag_value(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int, bool))


def _valid_tags(given: Any) -> bool:
    if given is None:
        return True
    if isinstance(given, dict):
        return all(isinstance(k, str) and k and _valid_tag_value(v) for k, v in given.items())
    if isinstance(given, list):
        return all(isinstance(t, str) and t for t in given)
    return False


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_like(value: Any) -> bool:
    if isinstance(value, (str, bool)):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and k and _json_like(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_like(v) for v in value)
    return False


METHODS = ["gauge", "increment", "decrement", "timing", "event", "custom"]


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    name=names,
    value=values,
    tags=tags,
    kind=st.one_of(st.text(max_size=6), st.none()),
    batching=st.booleans(),
)
def test_every_call_records_what_it_was_given_or_raises_invalid_metric(
    method: str, name: Any, value: Any, tags: Any, kind: Any, batching: bool
) -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend, batching=batching, flush_interval=60)
    expected_kind, expected_value = {
        "gauge": ("gauge", value),
        "increment": ("counter", 1),
        "decrement": ("counter", -1),
        "timing": ("timing", value),
        "event": ("event", value),
        "custom": (kind, value),
    }[method]
    valid = isinstance(name, str) and bool(name) and _valid_tags(tags)
    if method in ("gauge", "timing"):
        valid = valid and _number(value)
    elif method == "event":
        valid = valid and isinstance(value, str)
    elif method == "custom":
        valid = valid and isinstance(kind, str) and bool(kind) and _json_like(value)
    args: tuple[Any, ...] = {
        "gauge": (name, value),
        "increment": (name,),
        "decrement": (name,),
        "timing": (name, value),
        "event": (name, value),
        "custom": (name, kind, value),
    }[method]
    try:
        getattr(metrics, method)(*args, tags=tags)
    except InvalidMetric:
        assert not valid, "a valid call was refused"
        raised = True
    else:
        assert valid, "an invalid call was accepted"
        raised = False
    assert metrics.flush(10) == 0
    metrics.close()
    if raised:
        assert backend.metrics == []
        return
    [metric] = backend.metrics
    assert (metric.name, metric.kind, metric.value) == (name, expected_kind, expected_value)
    assert type(metric.value) is type(expected_value)
    expected_tags = {} if tags is None else tags
    assert metric.tags == expected_tags and metric.tags is not tags
    assert metric.host == host_name()


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9 - 1))
def test_timestamps_keep_the_exact_microsecond(ns: int) -> None:
    from datetime import timedelta

    from kaneda_core.model import epoch_us, timestamp_from_ns

    EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

    stamp = timestamp_from_ns(ns)
    assert stamp == EPOCH + timedelta(microseconds=ns // 1000)
    assert epoch_us(stamp) == ns // 1000
