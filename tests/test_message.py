"""The queue message format: a batch as one versioned JSON document, read back exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaneda_core import Metric
from kaneda_core.message import (
    IdMaker,
    MessageError,
    batch_document,
    decode_batch,
    encode_batch,
    legacy_metric,
)
from kaneda_core.model import timestamp_from_ns

PAST_NS = 1_600_000_000_123_456_789

text = st.text(min_size=1, max_size=20)
scalars = st.one_of(
    text,
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
values = st.one_of(
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
    st.dictionaries(text, scalars, max_size=4),
)
tags = st.one_of(st.dictionaries(text, scalars, max_size=4), st.lists(text, max_size=4))
ids = st.one_of(st.none(), text, st.integers(-(2**53), 2**53))
times = st.integers(min_value=0, max_value=4_102_444_800 * 10**9 - 1)


@st.composite
def metrics(draw: Any) -> Metric:
    ns = draw(times)
    return Metric(
        draw(text), draw(text), draw(values), draw(tags), timestamp_from_ns(ns), draw(text),
        draw(ids), ns,
    )  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(metrics(), max_size=6))
def test_a_batch_survives_the_trip_exactly(batch: list[Metric]) -> None:
    assert decode_batch(encode_batch(batch)) == batch
    assert decode_batch(batch_document(batch)) == batch  # the document itself, as Celery carries it
    assert decode_batch(encode_batch(batch).encode()) == batch


def test_metrics_without_an_id_get_one_from_the_maker_and_keep_their_own() -> None:
    make = IdMaker()
    batch = [Metric.create("a", "gauge", 1), Metric.create("b", "gauge", 2, id="mine")]
    first, second = decode_batch(encode_batch(batch, make))
    assert first.id == f"{make.token}-c1" and second.id == "mine"
    # A record built with a timestamp: a new id each time (see test_queue_ids).
    assert decode_batch(encode_batch(batch[:1], make))[0].id == f"{make.token}-c2"
    # A metric as this process's calls queue it (no timestamp, this host): its time's.
    stamped = tuple.__new__(Metric, (*batch[0][:4], None, *batch[0][5:]))
    assert decode_batch(encode_batch([stamped], make))[0].id == f"{make.token}-{stamped.time_ns}"
    assert IdMaker().token != make.token


def test_the_document_is_versioned_and_carries_time_and_host() -> None:
    metric = Metric.create("requests", "counter", 1, {"route": "/"}, id="r-1")
    document = json.loads(encode_batch([metric]))
    assert document == {
        "kaneda": 1,
        "metrics": [["requests", "counter", 1, {"route": "/"}, "r-1", metric.time_ns, metric.host]],
    }


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (b"\xff\xfe not json", "message is not JSON"),
        ("[1, 2]", "not a Kaneda batch"),
        ('{"metrics": []}', "not a Kaneda batch"),
        ('{"kaneda": 2, "metrics": []}', "format version 2, newer than this worker reads"),
        ('{"kaneda": "1", "metrics": []}', "bad format version '1'"),
        ('{"kaneda": 1, "metrics": {}}', "'metrics' must be a list"),
        ('{"kaneda": 1, "metrics": [["n", "gauge", 1]]}', r"metrics\[0\] must be a list of 7"),
        ('{"kaneda": 1, "metrics": [["n", "gauge", 1, {}, null, "now", "h"]]}', "time_ns must be"),
        ('{"kaneda": 1, "metrics": [["n", "gauge", 1, {}, null, 1, 7]]}', "host must be a string"),
        (
            '{"kaneda": 1, "metrics": [["n", "gauge", 1, {}, null, 99999999999999999999999, "h"]]}',
            "out of range",
        ),
    ],
)
def test_what_is_not_a_batch_is_refused_saying_why(message: Any, complaint: str) -> None:
    with pytest.raises(MessageError, match=complaint):
        decode_batch(message)


def test_a_kaneda_1_call_is_stamped_when_it_arrives_on_this_host() -> None:
    before = Metric.create("x", "gauge", 1)
    metric = legacy_metric("hits", "counter", 1, None, None)
    assert (metric.name, metric.kind, metric.value, metric.tags, metric.id) == (
        "hits", "counter", 1, {}, None,
    )  # fmt: skip
    assert metric.host == before.host and metric.epoch_ns >= before.epoch_ns


def test_a_kaneda_1_message_takes_its_id_and_time_from_the_broker_when_it_keeps_them() -> None:
    # Delivered twice (a worker killed before it acknowledged), it is the same metric.
    first = legacy_metric("hits", "counter", 1, None, None, origin="job-7", ns=PAST_NS)
    again = legacy_metric("hits", "counter", 1, None, None, origin="job-7", ns=PAST_NS)
    assert first == again and first.id == "job-7-0" and first.epoch_ns == PAST_NS
    assert first.timestamp == timestamp_from_ns(PAST_NS)
    own = legacy_metric("hits", "counter", 1, None, "mine", origin="job-7")
    assert own.id == "mine"  # the call's own id wins
