"""Hostile names round-trip exactly through a real InfluxDB, or are refused; none inject."""

from __future__ import annotations

import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influx_server import InfluxServer, stored_metrics
from kaneda_influx import InfluxBackend

from kaneda_core import InvalidMetric, Metric

HOSTILE = st.text(
    alphabet=st.sampled_from(list(" ,=\"'\\\n\r\t#{}é日本🙂abc_.-:/")), min_size=1, max_size=12
)


@pytest.fixture(scope="module")
def hostile_backend(influx_server: InfluxServer) -> InfluxBackend:
    return InfluxBackend(
        f"hostile_{uuid.uuid4().hex[:8]}", host="127.0.0.1", port=influx_server.port, timeout=10
    )


@settings(
    max_examples=int(os.environ.get("KANEDA_HOSTILE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=HOSTILE, name=HOSTILE, tag_key=HOSTILE, tag_value=HOSTILE, field_key=HOSTILE, text=HOSTILE
)
def test_hostile_names_round_trip_or_are_refused(
    hostile_backend: InfluxBackend,
    influx_server: InfluxServer,
    kind: str,
    name: str,
    tag_key: str,
    tag_value: str,
    field_key: str,
    text: str,
) -> None:
    marker = uuid.uuid4().hex
    tags = {tag_key: tag_value, "marker": marker}
    value = {field_key: text, "n": 1.5} if field_key not in ("n",) else {"n": 1.5}
    try:
        metric = Metric.create(name, kind, value, tags)
        hostile_backend.check(metric)
    except InvalidMetric as refused:
        # Refusals are for what InfluxDB cannot hold, and say so.
        assert any(
            word in str(refused)
            for word in ("line break", "backslash", "reserved", "empty", "comment", "control")
        )
        return
    hostile_backend.send([metric])
    mine = [
        m
        for m in stored_metrics(influx_server, hostile_backend.database)
        if m.tags.get("marker") == marker
    ]  # type: ignore[union-attr]
    assert len(mine) == 1, "exactly one point per metric: nothing injected"
    [stored] = mine
    assert (stored.kind, stored.name) == (kind, name)
    assert stored.tags == tags
    assert stored.value == value
    assert stored.timestamp == metric.timestamp


def test_a_crafted_name_cannot_inject_a_point_tag_or_field(
    hostile_backend: InfluxBackend, influx_server: InfluxServer
) -> None:
    marker = uuid.uuid4().hex
    crafted = [
        Metric.create("x value=666 1\ngauge,name=evil", "gauge", 1, {"marker": marker}),
        Metric.create("evil,injected=yes", "gauge", 2, {"marker": marker}),
        Metric.create("n", "gauge value=666,extra=1", 3, {"marker": marker}),
        Metric.create("n", "gauge", 4, {"marker": marker, "k": 'v" value=666'}),
        Metric.create("n", "event", 'text" value=666,x="', {"marker": marker}),
    ]
    sendable = []
    for metric in crafted:
        try:
            hostile_backend.check(metric)
        except InvalidMetric:
            continue
        sendable.append(metric)
    assert len(sendable) == 4  # only the one with a line break is refused
    hostile_backend.send(sendable)
    mine = [
        m
        for m in stored_metrics(influx_server, hostile_backend.database)
        if m.tags.get("marker") == marker
    ]  # type: ignore[union-attr]
    assert sorted((m.kind, m.name, repr(m.value)) for m in mine) == sorted(
        (m.kind, m.name, repr(float(m.value) if isinstance(m.value, int) else m.value))
        for m in sendable
    )
    assert all(set(m.tags) <= {"marker", "k"} for m in mine)  # type: ignore[arg-type]
