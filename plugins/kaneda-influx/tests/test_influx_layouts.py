"""The two layouts of kaneda-influx: chosen by argument or URL, written as described."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from influx_server import InfluxServer, stored_metrics
from kaneda_influx import InfluxBackend
from kaneda_influx.layouts import Kaneda1Layout, Kaneda2Layout

from kaneda_core import ConfigurationError, InvalidMetric, Metric, Metrics, connect, create_backend

WHEN = datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=timezone.utc)


def metric(kind: str, value: object, tags: object = None, id_: object = None) -> Metric:
    made = Metric.create("shop.total", kind, value, tags, id_, timestamp=WHEN)  # type: ignore[arg-type]
    return made._replace(host="web-1")


def test_layout_by_argument_and_url() -> None:
    assert InfluxBackend("db").layout.name == "kaneda2"
    assert InfluxBackend("db", layout="kaneda1").layout.name == "kaneda1"
    backend = create_backend("influxdb://127.0.0.1:1/db?layout=kaneda1&timeout=2")
    assert backend.layout.name == "kaneda1"  # type: ignore[attr-defined]


def test_an_unknown_layout_names_the_argument_and_the_choices() -> None:
    with pytest.raises(
        ConfigurationError, match=r"layout must be one of 'kaneda2', 'kaneda1', got 'v1'"
    ):
        InfluxBackend("db", layout="v1")
    with pytest.raises(ConfigurationError, match="got 'kaneda3'"):
        create_backend("influxdb://127.0.0.1:1/db?layout=kaneda3")


def test_kaneda1_lines_are_1_0s() -> None:
    layout = Kaneda1Layout()
    ns = 1795600800250000000
    lines = [
        layout.lines([metric("gauge", 7, {"route": "/cart", "ok": True})], {}),
        layout.lines([metric("timing", 0.25)], {}),
        layout.lines([metric("event", 'say "hi"')], {}),
        layout.lines([metric("order", {"items": 3, "total": 42.5, "paid": False}, id_="o-1")], {}),
    ]
    assert lines == [
        f'gauge,host=web-1,ok=True,route=/cart name="shop.total",value=7i {ns}',
        f'timing,host=web-1 name="shop.total",value=0.25 {ns}',
        f'event,host=web-1 name="shop.total",value="say \\"hi\\"" {ns}',
        f'order,host=web-1 name="shop.total",items=3i,total=42.5,paid=false {ns}',  # no id
    ]


def test_kaneda2_lines_are_unchanged() -> None:
    line = Kaneda2Layout().lines([metric("gauge", 7, {"route": "/cart", "ok": True})], {})
    # An int is written without ".0" (quicker to format): a float to InfluxDB all the same.
    assert (
        line == "gauge,host=web-1,name=shop.total,ok=true,route=/cart value=7 1795600800250000000"
    )
    big = Kaneda2Layout().lines([metric("gauge", 2**53 + 1), metric("gauge", 2.5)], {})
    assert [part.split(" ")[1] for part in big.split("\n")] == [
        "value=9007199254740992.0",  # beyond 2**53, as float() rounds it
        "value=2.5",
    ]


def test_kaneda2_stores_every_number_as_a_float(influx_server: InfluxServer, database: str) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port)
    backend.send(
        [metric("gauge", 7), metric("timing", -3)._replace(time_ns=1), metric("counter", 1)]
    )
    backend.send([metric("gauge", 7.5)._replace(time_ns=2)])  # the same field: no conflict
    fields = influx_server.query("SHOW FIELD KEYS", db=database)["results"][0]["series"]
    assert {s["name"]: dict(s["values"]) for s in fields} == {
        "counter": {"value": "float"},
        "gauge": {"value": "float"},
        "timing": {"value": "float"},
    }
    stored = sorted(m.value for m in stored_metrics(influx_server, database))
    assert stored == [-3.0, 1.0, 7.0, 7.5]


@pytest.mark.parametrize(
    ("value", "tags", "refusal"),
    [
        (1, {"host": "other"}, "tag 'host' is reserved by kaneda 1.0's layout"),
        (1, {"time": "x"}, "tag 'time' is reserved"),
        ({"name": "x"}, None, "value key 'name' is reserved by kaneda 1.0's layout"),
        ({"a": [1]}, None, "cannot hold a list or a nested dict"),
        (2**63, None, "does not fit InfluxDB's 64-bit integers"),
        (1, ["a", "b"], "tags must be a dict, not a list"),
        (1, {"k": ""}, "is empty"),
        ("two\nlines", None, "line break"),
    ],
)
def test_kaneda1_refuses_at_the_call_what_it_cannot_write(
    value: object, tags: object, refusal: str
) -> None:
    with pytest.raises(InvalidMetric, match=refusal):
        Kaneda1Layout().check(metric("custom", value, tags))


def test_kaneda1_stores_an_empty_custom_dict_as_a_point_with_its_name_alone(
    influx_server: InfluxServer, database: str
) -> None:
    """kaneda 1.0 added ``name`` to a custom dict's fields: ``{}`` was a point all the same."""
    ns = 1795600800250000000
    layout = Kaneda1Layout()
    assert layout.lines([metric("beat", {}, {"zone": "a"})], {}) == (
        f'beat,host=web-1,zone=a name="shop.total" {ns}'
    )
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?layout=kaneda1"
    with connect(url) as metrics:
        metrics.custom("c", "heartbeat", {})
        metrics.custom("c", "heartbeat", {}, tags={"zone": "a"})
    stored = sorted(stored_metrics(influx_server, database), key=lambda m: len(m.tags))
    assert [(m.kind, m.name, m.value, m.tags) for m in stored] == [
        ("heartbeat", "c", {}, {}),
        ("heartbeat", "c", {}, {"zone": "a"}),
    ]
    fields = influx_server.query("SHOW FIELD KEYS", db=database)["results"][0]["series"]
    assert {s["name"]: dict(s["values"]) for s in fields} == {"heartbeat": {"name": "string"}}
    with pytest.raises(InvalidMetric, match="without fields"):
        Kaneda2Layout().check(metric("beat", {}))  # this version's layout has no name field


@pytest.mark.parametrize("empty", [[], ()])
def test_kaneda1_takes_empty_list_tags_as_no_tags(
    influx_server: InfluxServer, database: str, empty: object
) -> None:
    """kaneda 1.0 tested ``if tags:``: an empty list was no tags, and the metric stored."""
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?layout=kaneda1"
    with connect(url) as metrics:
        metrics.gauge("g", 1, tags=empty)  # type: ignore[arg-type]
        metrics.increment("i", tags=empty)  # type: ignore[arg-type]
        metrics.custom("c", "order", {"items": 2}, tags=empty)  # type: ignore[arg-type]
        metrics.custom("c", "beat", {}, tags=empty)  # type: ignore[arg-type]
        with pytest.raises(InvalidMetric, match="tags must be a dict, not a list"):
            metrics.gauge("g", 1, tags=["a"])
    assert metrics.stats().sent == 4
    stored = sorted(stored_metrics(influx_server, database), key=lambda m: m.kind)
    assert [(m.kind, m.name, m.value, m.tags) for m in stored] == [
        ("beat", "c", {}, {}),
        ("counter", "i", 1, {}),
        ("gauge", "g", 1, {}),
        ("order", "c", {"items": 2}, {}),
    ]
    record = ("n", "gauge", 1, [], None, "h", None, 1_700_000_000_000_000_000)
    assert Kaneda1Layout().lines([record], {}) == (  # type: ignore[list-item]
        'gauge,host=h name="n",value=1i 1700000000000000000'
    )


def test_kaneda1_allows_a_name_tag_beside_the_name_field(
    influx_server: InfluxServer, database: str
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, layout="kaneda1")
    assert backend.send([Metric.create("n", "gauge", 1, {"name": "tag"})]) == [True]
    answer = influx_server.query('SELECT "name"::field, "name"::tag FROM "gauge"', db=database)
    assert answer["results"][0]["series"][0]["values"][0][1:] == ["n", "tag"]


def test_each_layout_round_trips_through_the_server(
    influx_server: InfluxServer, database: str
) -> None:
    url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?layout=kaneda1"
    with connect(url) as metrics:
        metrics.gauge("g", 7, tags={"route": "/"})
        metrics.custom("c", "order", {"items": 3, "total": 4.5})
    stored = sorted(stored_metrics(influx_server, database), key=lambda m: m.kind)
    assert [(m.kind, m.name, m.value, m.tags) for m in stored] == [
        ("gauge", "g", 7, {"route": "/"}),
        ("order", "c", {"items": 3, "total": 4.5}, {}),
    ]
    fields = influx_server.query("SHOW FIELD KEYS", db=database)["results"][0]["series"]
    assert {s["name"]: dict(s["values"]) for s in fields} == {
        "gauge": {"name": "string", "value": "integer"},
        "order": {"items": "integer", "name": "string", "total": "float"},
    }


def test_send_answers_true_per_metric(influx_server: InfluxServer, database: str) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port)
    assert backend.send([Metric.create("a", "gauge", 1), Metric.create("b", "gauge", 2)]) == [
        True,
        True,
    ]


@pytest.mark.parametrize("layout", [Kaneda2Layout, Kaneda1Layout])
def test_series_remembered_by_name_keep_each_tag_values_own_text(layout: type) -> None:
    # One series per name is found by comparing tag dicts, and "1" != 1 while
    # 1 == 1.0 == True: each metric's line must still be the one written alone.
    shards: list[object] = ["1", 1, True, 1.0, "1", "a", 0, False, 0.0, "1", 1]
    batch = [metric("gauge", 0.5, {"shard": shard, "z": "x"}) for shard in shards]
    written = layout().lines(batch, {}).split("\n")
    assert written == [layout().lines([m], {}) for m in batch]
    checking = layout()
    for m in batch * 2:  # and the check at the call takes each of them, every time
        checking.check(m)


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_each_layouts_check_takes_the_calls_records(layout: str) -> None:
    """The reporting calls hand InfluxBackend's check the plain record they queue
    (``checks_records``): each layout gives it the verdict it gives the Metric."""
    backend = InfluxBackend("db", host="127.0.0.1", port=9, layout=layout)
    assert backend.checks_records
    cases = [
        ("gauge", 7, {"a": "b"}),
        ("gauge", 2**70, {}),
        ("counter", 1, ["a", "b"]),
        ("gauge", 1, {"host": "x"}),
        ("custom", {"f": {"nested": 1}}, {}),
        ("custom", {"name": 1}, {}),
        ("event", "two\nlines", {}),
    ]
    for kind, value, tags in cases:
        record = ("n", kind, value, tags, None, "h", None, 1_700_000_000_000_000_000)
        verdicts = []
        for given in (record, tuple.__new__(Metric, record)):
            try:
                backend.check(given)  # type: ignore[arg-type]
                verdicts.append(None)
            except InvalidMetric as error:
                verdicts.append(str(error))
        assert verdicts[0] == verdicts[1], (layout, record)
    # A subclass with a check of its own is given Metrics: it did not say otherwise.

    class Own(InfluxBackend):
        def check(self, metric: Metric) -> None:
            assert type(metric) is Metric

    own = Own("db", host="127.0.0.1", port=9, layout=layout)
    assert not own.checks_records
    metrics = Metrics(own, batch_size=100, flush_interval=3600)
    metrics.gauge("g", 1, tags={"a": "b"})
    metrics.close(0)


def test_kaneda1_checks_an_int_subclass_as_the_int_it_writes() -> None:
    """kaneda 1.0's layout writes any int (an IntEnum, a numpy-like scalar) as an InfluxDB
    integer: one beyond 64 bits is refused at the call, as a plain int is."""

    class Big(int):
        pass

    metrics = Metrics(InfluxBackend("db", host="127.0.0.1", port=9, layout="kaneda1"))
    with pytest.raises(InvalidMetric, match="64-bit"):
        metrics.gauge("g", Big(2**63))
    with pytest.raises(InvalidMetric, match="64-bit"):
        metrics.custom("c", "shape", {"n": Big(-(2**63) - 1)})
    metrics.gauge("g", Big(2**63 - 1))  # fits
    assert metrics.stats().queued == 1
    metrics.close(0)


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_a_series_checked_with_equal_tag_values_of_another_type_is_checked_again(
    layout: str,
) -> None:
    """2**1000 == float(2**1000), but one is written as 302 digits and the other as 23
    characters: a series checked with the floats says nothing of the ints' key length."""
    big = 2**1000
    as_float = {f"k{i}": float(big) for i in range(250)}
    as_int = {f"k{i}": big for i in range(250)}
    metrics = Metrics(InfluxBackend("db", host="127.0.0.1", port=9, layout=layout))
    metrics.gauge("g", 1.0, tags=as_float)
    metrics.gauge("g", 1.5, tags=as_float)  # remembered: the fast path takes it
    with pytest.raises(InvalidMetric, match="series key"):
        metrics.gauge("g", 2.0, tags=as_int)
    metrics.gauge("h", 1, tags={"code": 200})
    metrics.gauge("h", 1, tags={"code": True})  # equal to 1, a tag of its own: "true"
    metrics.gauge("h", 1, tags={"code": 200})
    assert metrics.stats().queued == 5
    metrics.close(0)


def test_kaneda1_writes_each_float_tag_as_its_own_text(
    influx_server: InfluxServer, database: str
) -> None:
    """0.0 == -0.0 (and they share a type), but kaneda 1.0 wrote str() of each: "0.0" and
    "-0.0". The text stored must not depend on which came first."""
    backend = InfluxBackend(
        database, host="127.0.0.1", port=influx_server.port, timeout=5, layout="kaneda1"
    )
    first, second = (
        Metric.create("z", "gauge", 1, {"t": 0.0}),
        Metric.create("z", "gauge", 2, {"t": -0.0}),
    )
    for made in (first, second, first):
        backend.check(made)
    assert backend.layout.lines([first, second], {}).count("t=-0.0") == 1
    backend.send([second, first])
    stored = {m.value: m.tags for m in stored_metrics(influx_server, database)}
    assert stored == {1: {"t": "0.0"}, 2: {"t": "-0.0"}}
