"""Aggregated points on the real InfluxDB: one point per series per interval, every count kept."""

from __future__ import annotations

import time

import pytest
from influx_server import InfluxServer

from kaneda_core import connect


def query(server: InfluxServer, database: str, q: str) -> list[list[object]]:
    result = server.query(q, db=database)["results"][0]
    return [row for series in result.get("series", []) for row in series["values"]]


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_many_calls_reach_influxdb_as_one_point_per_series_per_interval(
    influx_server: InfluxServer, database: str, layout: str
) -> None:
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5&layout={layout}"
    calls = 300_000
    started = time.monotonic()
    with connect(url, aggregate=True, flush_interval=0.25) as metrics:
        for i in range(calls):
            metrics.increment("requests", tags={"route": f"/{i % 3}"})
            if i % 100 == 0:
                metrics.timing("took", i % 1000, tags={"route": f"/{i % 3}"})
        assert metrics.flush(30) == 0
        stats = metrics.stats()
    seconds = time.monotonic() - started
    assert stats.folded == calls + calls // 100 and stats.failed == 0
    group = 'GROUP BY "route"'
    sums = query(influx_server, database, f'SELECT sum("value") FROM "counter" {group}')
    assert sum(row[1] for row in sums) == calls  # type: ignore[misc]
    points = query(influx_server, database, f'SELECT count("value") FROM "counter" {group}')
    per_series = [row[1] for row in points]
    assert len(per_series) == 3
    intervals = seconds / 0.25
    assert all(1 <= n <= intervals + 2 for n in per_series), (per_series, intervals)  # type: ignore[operator]
    took = query(influx_server, database, 'SELECT sum("count") FROM "timing"')
    assert took[0][1] == calls // 100


def test_an_integer_beyond_64_bits_on_a_known_series_is_refused_at_the_call(
    influx_server: InfluxServer, database: str
) -> None:
    """kaneda 1.0's layout writes integers as InfluxDB integers (64 bits). A series' first
    call is checked by the backend; a later call on it with a larger integer was queued,
    and its interval's point refused at delivery with the valid calls folded into it."""
    from kaneda_core import InvalidMetric

    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5&layout=kaneda1"
    with connect(url, aggregate=True, flush_interval=60) as metrics:
        metrics.gauge("level", 1)
        with pytest.raises(InvalidMetric, match="64-bit"):
            metrics.gauge("level", 2**63)
        metrics.gauge("level", 2**63 - 1)
        metrics.timing("took", 2**62)
        metrics.timing("took", 2**62)  # the sum is past 64 bits: stored as a float
        assert metrics.flush(10) == 0
        stats = metrics.stats()
    assert stats.failed == 0 and stats.sent == 2
    assert query(influx_server, database, 'SELECT "value" FROM "gauge"')[0][1] == 2**63 - 1
    [[total]] = [row[1:] for row in query(influx_server, database, 'SELECT "sum" FROM "timing"')]
    assert float(total) == float(2**63)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_series_of_one_tag_set_are_all_stored_whatever_the_layout_keys_points_by(
    influx_server: InfluxServer, database: str, layout: str
) -> None:
    # kaneda1 keeps the name as a field: five counters of one tag set emitted at one
    # time would be one point in "counter", the last name's.
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5&layout={layout}"
    names = [f"jobs.{n}" for n in ("queued", "started", "done", "failed", "retried")]
    with connect(url, aggregate=True, flush_interval=60) as metrics:
        for calls, name in enumerate(names, start=1):
            for _ in range(calls):
                metrics.increment(name, tags={"queue": "mail"})
        assert metrics.flush(10) == 0
        stats = metrics.stats()
    assert stats.folded == 15 and stats.sent == 5 and stats.failed == 0
    rows = query(influx_server, database, 'SELECT "name", "value" FROM "counter"')
    assert {row[1]: row[2] for row in rows} == {
        name: calls for calls, name in enumerate(names, start=1)
    }


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_a_float_timing_after_an_interval_of_integers_keeps_its_intervals_point(
    influx_server: InfluxServer, database: str, layout: str
) -> None:
    """kaneda1 types each field by its first write: a summary's sum, min and max written
    as integers by an interval of integer timings refused the next interval's whole point
    for one float timing in it (100 of 200 calls stored). They are floats always."""
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5&layout={layout}"
    with connect(url, aggregate=True, flush_interval=60) as metrics:
        for i in range(100):
            metrics.timing("lat", 10 + i, tags={"s": "a"})
        assert metrics.flush(10) == 0
        for i in range(99):
            metrics.timing("lat", 10 + i, tags={"s": "a"})
        metrics.timing("lat", 12.5, tags={"s": "a"})
        assert metrics.flush(10) == 0
        stats = metrics.stats()
    assert stats.failed == 0 and stats.sent == 2
    [[calls]] = [
        row[1:] for row in query(influx_server, database, 'SELECT sum("count") FROM "timing"')
    ]
    assert calls == 200
    types = dict(query(influx_server, database, 'SHOW FIELD KEYS FROM "timing"'))  # type: ignore[arg-type]
    counted = "integer" if layout == "kaneda1" else "float"  # kaneda2: every number a float
    assert types == {
        "count": counted, "sum": "float", "min": "float", "max": "float",
        "p50": "float", "p90": "float", "p99": "float",
        **({"name": "string"} if layout == "kaneda1" else {}),
    }  # fmt: skip
