"""Field type conflicts, against a real InfluxDB: nothing storable without loss is lost.

InfluxDB fixes a field's type per shard. Whatever the layout, a number whose field
already holds the other number type is written in the stored type when nothing is
lost; what cannot be (7.5 into an integer field, text or a bool into a number field)
is refused, counted and passed to the failure hook, with a message naming the
measurement, the field and both types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from influx_server import InfluxServer
from kaneda_influx import InfluxBackend, field_types

from kaneda_core import DeliveryError, Metric, Metrics
from kaneda_core.hookspecs import hookimpl
from kaneda_core.plugins import get_plugin_manager


class Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[list[Metric], BaseException]] = []

    @hookimpl
    def kaneda_batch_failed(self, metrics: Any, error: BaseException, backend: Any) -> None:
        self.seen.append((list(metrics), error))


@pytest.fixture
def failures() -> Iterator[Failures]:
    recorder = Failures()
    get_plugin_manager().register(recorder)
    yield recorder
    get_plugin_manager().unregister(recorder)


def backend_for(server: InfluxServer, database: str, layout: str) -> InfluxBackend:
    return InfluxBackend(database, host="127.0.0.1", port=server.port, timeout=10, layout=layout)


def prepare(server: InfluxServer, database: str, *lines: str) -> None:
    """Write raw line protocol now, as another writer (or kaneda 1.0) did before.

    Now: a field's type is per shard, and the metrics of the test go to the current one.
    """
    import urllib.request

    server.query(f'CREATE DATABASE "{database}"')
    body = "\n".join(lines).encode()
    url = f"{server.url}/write?db={database}"
    urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")).close()


def field_type(server: InfluxServer, database: str, measurement: str, field: str) -> str:
    answer = server.query(f'SHOW FIELD KEYS FROM "{measurement}"', db=database)
    [series] = answer["results"][0]["series"]
    return dict(series["values"])[field]  # type: ignore[no-any-return]


def values(
    server: InfluxServer, database: str, measurement: str, field: str = "value"
) -> list[Any]:
    answer = server.query(f'SELECT "{field}" FROM "{measurement}"', db=database)
    [series] = answer["results"][0]["series"]
    return [row[1] for row in series["values"]]


# -- a number in the stored type, when nothing is lost ------------------------------------


@pytest.mark.parametrize("layout", ["kaneda1", "kaneda2"])
def test_an_integer_field_takes_whole_floats_and_refuses_fractions(
    influx_server: InfluxServer, database: str, layout: str, failures: Failures
) -> None:
    prepare(influx_server, database, 'gauge,host=old name="g",value=7i')
    metrics = Metrics(backend_for(influx_server, database, layout), batching=False)
    metrics.gauge("g", 8.0)  # kaneda2 writes every number as a float: 8 too
    metrics.gauge("g", 9)
    metrics.gauge("g", 7.5)
    stats = metrics.stats()
    assert (stats.sent, stats.failed) == (2, 1)
    assert field_type(influx_server, database, "gauge", "value") == "integer"
    assert sorted(values(influx_server, database, "gauge")) == [7, 8, 9]
    [(lost, error)] = failures.seen
    assert [m.value for m in lost] == [7.5]
    assert 'field "value" of measurement "gauge" is stored as integer' in str(error)
    assert "the value 7.5 is a float" in str(error)


def test_a_float_field_takes_integers_in_kaneda_1_0s_layout(
    influx_server: InfluxServer, database: str
) -> None:
    prepare(influx_server, database, 'gauge,host=old name="g",value=7.5')
    metrics = Metrics(backend_for(influx_server, database, "kaneda1"), batching=False)
    metrics.gauge("g", 8)  # kaneda 1.0's layout writes an int as an integer: 8i
    metrics.custom("c", "gauge", {"value": 2**53})  # a float holds it exactly
    assert metrics.stats().failed == 0
    assert field_type(influx_server, database, "gauge", "value") == "float"
    assert sorted(values(influx_server, database, "gauge")) == [7.5, 8, 2**53]


def test_an_integer_a_float_cannot_hold_exactly_is_refused(
    influx_server: InfluxServer, database: str, failures: Failures
) -> None:
    prepare(influx_server, database, 'gauge,host=old name="g",value=7.5')
    metrics = Metrics(backend_for(influx_server, database, "kaneda1"), batching=False)
    metrics.gauge("g", 2**53 + 1)
    [(lost, error)] = failures.seen
    assert [m.value for m in lost] == [2**53 + 1] and "is an integer" in str(error)


@pytest.mark.parametrize("layout", ["kaneda1", "kaneda2"])
def test_text_and_bools_never_turn_into_numbers(
    influx_server: InfluxServer, database: str, layout: str, failures: Failures
) -> None:
    prepare(influx_server, database, "shape,host=old,name=s size=1.5")
    metrics = Metrics(backend_for(influx_server, database, layout), batching=False)
    metrics.custom("s", "shape", {"size": "big"})
    metrics.custom("s", "shape", {"size": True})
    metrics.custom("s", "shape", {"size": 2})
    assert (metrics.stats().sent, metrics.stats().failed) == (1, 2)
    messages = [str(error) for _, error in failures.seen]
    assert "stored as float, the value 'big' is a string" in messages[0]
    assert "stored as float, the value True is a boolean" in messages[1]


# -- learning the types: once, and again when they change -----------------------------------


def test_learned_types_are_cached_and_relearned_on_a_conflict(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(influx_server, database, 'gauge,host=old name="g",value=7i')
    backend = backend_for(influx_server, database, "kaneda2")
    writes: list[bytes] = []
    queries: list[str] = []
    send, query = backend._transport.send, backend._transport.query
    monkeypatch.setattr(
        backend._transport,
        "send",
        lambda endpoint, params, body=b"", **kw: (
            (endpoint == "write" and writes.append(body)) or send(endpoint, params, body, **kw)
        ),
    )
    monkeypatch.setattr(
        backend._transport,
        "query",
        lambda q, *a, **kw: (q.startswith("SHOW") and queries.append(q)) or query(q, *a, **kw),
    )
    backend.send([Metric.create("g", "gauge", 1)])
    assert len(writes) == 2 and len(queries) == 1  # refused, learned, written again
    assert writes[-1].split(b" ")[1] == b"value=1i"
    writes.clear(), queries.clear()
    backend.send([Metric.create("g", "gauge", 2)])
    assert len(writes) == 1 and not queries  # the cache: right the first time
    # The field changes type (a new shard does that; here the measurement is dropped).
    influx_server.query('DROP MEASUREMENT "gauge"', db=database)
    backend.send([Metric.create("g", "gauge", 2.5)])  # 2.5 cannot be 2i: written as a float
    backend.send([Metric.create("g", "gauge", 3)])  # 3i conflicts now: relearned, 3.0
    assert field_type(influx_server, database, "gauge", "value") == "float"
    assert sorted(values(influx_server, database, "gauge")) == [2.5, 3]


def test_conflicts_on_several_fields_in_one_batch_are_all_resolved(
    influx_server: InfluxServer, database: str
) -> None:
    prepare(
        influx_server,
        database,
        'gauge,host=old name="g",value=1i',
        'timing,host=old name="t",value=1.5',
        'order,host=old name="o",items=1i,total=1.5',
    )
    backend = backend_for(influx_server, database, "kaneda1")
    backend.send(
        [
            Metric.create("g", "gauge", 4.0),
            Metric.create("t", "timing", 4),
            Metric.create("o", "order", {"items": 3.0, "total": 42}),
            Metric.create("g", "gauge", 5),
        ]
    )
    assert sorted(values(influx_server, database, "gauge")) == [1, 4, 5]
    assert sorted(values(influx_server, database, "timing")) == [1.5, 4]
    assert sorted(values(influx_server, database, "order", "total")) == [1.5, 42]
    assert field_type(influx_server, database, "order", "items") == "integer"


@pytest.mark.parametrize("readable", [True, False])
def test_in_one_batch_a_new_field_takes_the_type_of_its_first_value(
    influx_server: InfluxServer, database: str, readable: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # InfluxDB refuses the whole batch then ("field type conflict", nothing stored) but
    # creates the field: the batch is written again, in the field's type where lossless.
    backend = backend_for(influx_server, database, "kaneda1")
    if not readable:  # a write-only user: SHOW FIELD KEYS fails, the errors are enough
        query = backend._transport.query
        monkeypatch.setattr(
            backend._transport,
            "query",
            lambda q, *a, **kw: query(q, *a, **kw) if q.startswith("CREATE") else 1 / 0,
        )
    other = Metric.create("ok", "event", "stored too")
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 7), other, Metric.create("g", "gauge", 7.5)])
    assert [m.value for m in caught.value.metrics or []] == [7.5]
    assert not caught.value.retryable
    assert values(influx_server, database, "gauge") == [7]
    assert values(influx_server, database, "event") == ["stored too"]
    backend.send([Metric.create("g", "shape", 7.5), Metric.create("g", "shape", 7)])
    assert sorted(values(influx_server, database, "shape")) == [7, 7.5]
    assert field_type(influx_server, database, "shape", "value") == "float"


# -- conversions, whatever the numbers --------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(NUMBERS, st.sampled_from([field_types.INTEGER, field_types.FLOAT, field_types.UNSIGNED]))
def test_a_conversion_happens_only_when_it_loses_nothing(value: Any, target: str) -> None:
    if not field_types.converts(value, target):
        return
    text = field_types.encode(value, target)
    if target == field_types.FLOAT:
        assert float(text) == value
    else:
        assert re.fullmatch(r"-?\d+[iu]", text) and int(text[:-1]) == value
        low, high = (-(2**63), 2**63 - 1) if target == field_types.INTEGER else (0, 2**64 - 1)
        assert low <= int(text[:-1]) <= high


@given(NUMBERS)
def test_whole_numbers_in_range_do_convert(value: Any) -> None:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**62:
        assert field_types.converts(value, field_types.INTEGER)
    if isinstance(value, int) and abs(value) <= 2**53:
        assert field_types.converts(value, field_types.FLOAT)
    if isinstance(value, float) and not math.isclose(value, round(value)):
        assert not field_types.converts(value, field_types.INTEGER)


def test_the_conflict_in_an_influxdb_error_is_read() -> None:
    message = (
        'partial write: field type conflict: input field "va lue" on measurement "gau,ge" '
        "is type float, already exists as type integer dropped=3"
    )
    conflict = field_types.parse_conflict(message)
    assert conflict == field_types.Conflict("gau,ge", "va lue", "float", "integer")
    assert field_types.dropped_count(message) == 3
    assert field_types.parse_conflict("partial write: points beyond retention policy") is None


# -- a conflict with other drops in the same batch ------------------------------------------


@pytest.mark.parametrize("layout", ["kaneda1", "kaneda2"])
def test_points_dropped_beside_a_conflict_are_not_counted_sent(
    influx_server: InfluxServer, database: str, layout: str, failures: Failures
) -> None:
    # InfluxDB answers a batch with a shard's field type conflict and its dropped=N,
    # leaving out the points it dropped as beyond the retention policy: the points the
    # conflict does not explain must not be taken as stored.
    from datetime import datetime, timedelta, timezone

    influx_server.query(f'CREATE DATABASE "{database}" WITH DURATION 1h')
    prepare(influx_server, database, "order,host=old,name=o total=1.5")
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    metrics = Metrics(backend_for(influx_server, database, layout), flush_interval=3600)
    batch = [
        Metric.create("o", "order", {"total": "a lot"}),  # the conflict
        *(Metric.create("late", "gauge", float(i), timestamp=old) for i in range(3)),
        *(Metric.create("now", "gauge", float(i)) for i in range(2)),
    ]
    metrics.forward(batch)
    metrics.close(30)
    stats = metrics.stats()
    stored = len(values(influx_server, database, "gauge"))
    assert stored == 2
    assert (stats.sent, stats.failed) == (2, 4), stats
    lost = sorted(m.name for seen, _ in failures.seen for m in seen)
    assert lost == ["late", "late", "late", "o"]


def test_a_part_the_server_dropped_whole_is_refused_in_one_request(
    influx_server: InfluxServer, database: str, failures: Failures
) -> None:
    # dropped=N for all N points of the request: none was stored, none need be sought
    # one by one (a host clock hours behind sent two requests a point).
    from datetime import datetime, timedelta, timezone

    influx_server.query(f'CREATE DATABASE "{database}" WITH DURATION 1h')
    backend = backend_for(influx_server, database, "kaneda2")
    requests = []
    send = backend._transport.send
    backend._transport.send = lambda *a, **kw: requests.append(1) or send(*a, **kw)  # type: ignore[method-assign]
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    metrics = Metrics(backend, batch_size=500, flush_interval=3600)
    metrics.forward([Metric.create("late", "gauge", float(i), timestamp=old) for i in range(500)])
    metrics.close(30)
    assert metrics.stats().failed == 500 and metrics.stats().sent == 0
    assert len(requests) <= 2, len(requests)  # the create of the database, the write
    [(lost, error)] = failures.seen
    assert len(lost) == 500 and "beyond retention policy" in str(error)
