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


# -- what InfluxDB cannot store is refused at the call -------------------------------------


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_oversized_metrics_are_refused_at_the_call(
    influx_server: InfluxServer, database: str, layout: str
) -> None:
    from kaneda_core import Metrics

    backend = InfluxBackend(
        database, host="127.0.0.1", port=influx_server.port, timeout=10, layout=layout
    )
    with Metrics(backend) as metrics:
        with pytest.raises(InvalidMetric, match="max key length"):
            metrics.gauge("g", 1, tags={"big": "x" * 70_000})  # a series key over 64 KiB
        if layout == "kaneda2":  # the name is a tag there (a field in kaneda 1.0's layout)
            with pytest.raises(InvalidMetric, match="max key length"):
                metrics.gauge("n" * 1_000_000, 1)
        with pytest.raises(InvalidMetric, match="at most"):
            metrics.event("deploy", "x" * 30_000_000)
        metrics.gauge("fine", 1)
        assert metrics.flush(10) == 0
        assert metrics.stats().sent == 1 and metrics.stats().failed == 0


def test_large_metrics_in_one_batch_do_not_take_the_small_ones_down(
    influx_server: InfluxServer, database: str
) -> None:
    from kaneda_core import Metrics

    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=10)
    with Metrics(backend, batch_size=10_000, flush_interval=60) as metrics:
        for i in range(4):
            metrics.event("dump", f"{i}" + "y" * 3_000_000)  # 12 MB in all
        for i in range(100):
            metrics.gauge("small", i)
        assert metrics.flush(60) == 0
        assert metrics.stats().sent == 104
    stored = stored_metrics(influx_server, database)
    assert sorted(m.value for m in stored if m.name == "small") == [float(i) for i in range(100)]
    assert len([m for m in stored if m.name == "dump"]) == 4


def test_a_metric_accepted_at_the_call_is_stored_within_the_default_timeout(
    influx_server: InfluxServer, database: str
) -> None:
    """The timeout (0.3 s by default) is meant for a server that does not answer, not for
    a request whose size makes it longer: such a metric was accepted at the call, then
    timed out at every retry, and took the small metrics of its batch down with it."""
    from kaneda_core import connect

    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}"  # the default timeout
    with connect(url, batch_size=10_000, flush_interval=60) as metrics:
        for i in range(1000):
            metrics.gauge("small", i)
        metrics.event("dump", "y" * 14_000_000)
        metrics.custom("wide", "report", {f"f{i}": float(i) for i in range(150_000)})
        for i in range(1000, 2000):
            metrics.gauge("small", i)
        assert metrics.flush(120) == 0
        assert (metrics.stats().sent, metrics.stats().failed) == (2002, 0)

    def count(field: str, measurement: str) -> int:
        answer = influx_server.query(f'SELECT count("{field}") FROM "{measurement}"', database)
        return int(answer["results"][0]["series"][0]["values"][0][1])

    assert count("value", "gauge") == 2000
    assert count("text", "event") == 1 and count("f149999", "report") == 1


def test_a_key_added_to_a_reported_dict_afterwards_injects_nothing(
    influx_server: InfluxServer, database: str
) -> None:
    from kaneda_core import Metrics

    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=10)
    with Metrics(backend, flush_interval=60) as metrics:
        value = {"q": 1}
        metrics.custom("search", "query", value)
        value['injected="q'] = "x\ninjected,host=evil value=1"  # refused if given directly
        metrics.flush(10)
    measurements = influx_server.query("SHOW MEASUREMENTS", db=database)
    names = [row[0] for row in measurements["results"][0]["series"][0]["values"]]
    assert names == ["query"]
    [stored] = stored_metrics(influx_server, database)
    assert stored.value == {"q": 1.0}


@pytest.mark.parametrize("tags", [0, 2, 8, 32])
def test_the_series_caches_charge_is_what_it_holds(tags: int) -> None:
    """Many small series: the bytes charged to the bound are at least those the cache
    holds (they were 2 to 5 times fewer: a "16 MiB" cache held up to 80)."""
    # tracemalloc counts every thread's memory: another test's thread still running in
    # this process moves a measurement. A charge that is wrong is wrong in all three.
    seen = [_charged_and_held(tags) for _ in range(3)]
    assert any(charged * 0.5 <= held <= charged * 1.1 for charged, held in seen), seen


def _charged_and_held(tags: int) -> tuple[int, int]:
    """What the series cache charged for 1,500 series, and what clearing it freed."""
    import gc
    import tracemalloc

    backend = InfluxBackend("db", host="127.0.0.1", port=1)
    cache = backend.layout.cache
    common = {f"t{k}": f"v{k}" for k in range(tags - 1)}
    metrics = [
        Metric.create(
            "req" if tags else f"req{i}", "counter", 1, {**common, "user": f"u{i}"} if tags else {}
        )
        for i in range(1_500)
    ]
    tracemalloc.start()
    try:
        for metric in metrics:
            backend.check(metric)
        backend.layout.lines(metrics, {})
        del metrics
        gc.collect()
        charged = cache.bytes
        before = tracemalloc.get_traced_memory()[0]
        cache.clear()
        gc.collect()
        held = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return charged, held


def test_series_caches_are_bounded_in_bytes_and_freed_on_close() -> None:
    import tracemalloc

    from kaneda_influx.series_cache import MAX_BYTES

    backend = InfluxBackend("db", host="127.0.0.1", port=1)
    tracemalloc.start()
    try:
        for i in range(2_000):  # 2,000 series with 50 kB tags: 100 MB of tag text
            metric = Metric.create("g", "gauge", 1.0, {"big": f"{i}" + "z" * 50_000})
            backend.check(metric)
            backend.layout.lines([metric], {})
        held = tracemalloc.get_traced_memory()[0]
        assert backend.layout.cache.bytes <= MAX_BYTES
        assert held < 3 * MAX_BYTES
        backend.close()
        assert backend.layout.cache.bytes == 0
        assert tracemalloc.get_traced_memory()[0] < 1024 * 1024
    finally:
        tracemalloc.stop()
