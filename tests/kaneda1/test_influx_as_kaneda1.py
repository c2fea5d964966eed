"""The ``kaneda`` face writes into a real InfluxDB exactly what genuine kaneda 1.0 writes.

The same calls go through kaneda 1.0 (from PyPI, in a subprocess, with today's
``influxdb`` client, which it runs on unchanged) into one database and through this
project's ``kaneda`` package into another; measurements, tag keys, field keys, field
types and every point (but its time) must be equal.
"""

from __future__ import annotations

import json
import socket
import string
import time
import uuid
from typing import Any

import pytest
from genuine import run_kaneda1
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from influx_server import InfluxServer
from influx_snapshot import snapshot

import kaneda
from kaneda.backends import InfluxBackend
from kaneda_core import InvalidMetric

Call = tuple[str, list[Any], dict[str, Any]]

CALLS: list[Call] = [
    ("gauge", ["users.online", 123], {}),
    ("gauge", ["load", 7], {"tags": {"region": "eu-west", "core": 2, "hot": True}}),
    ("increment", ["page.views"], {}),
    ("decrement", ["credit.usage"], {"tags": {"plan": "pro"}}),
    ("timing", ["query.response.time", 260], {}),
    ("event", ["server.status", "Too much requests"], {"tags": {"level": "warn"}}),
    (
        "custom",
        ["availability.request"],
        {
            "metric": "xml_response",
            "value": {
                "status": "ok",
                "xml": '<xml><test attr="test"></test></xml>',
                "count": 3,
                "ratio": 0.5,
                "cached": False,
            },
            "tags": {"shard": "a"},
            "id_": "2B75D750",
        },
    ),
    ("custom", ["flags.dark_mode"], {"metric": "flag", "value": True}),
    ("custom", ["note"], {"metric": "note", "value": 'a, b = "c" \\ d'}),
    ("gauge", ['a name, with = "specials" and ünïcode', 1], {"tags": {"k ey": "v,al=ue"}}),
    ("custom", ["back\\slash"], {"metric": "k\\ind", "value": {"f\\d": 1}, "tags": {"t": "a\\b"}}),
]


def kaneda1_writes(server: InfluxServer, database: str, calls: list[Call]) -> list[str]:
    """Make ``calls`` through genuine kaneda 1.0 into ``database``; what each returned."""
    return run_kaneda1(  # type: ignore[no-any-return]
        f"""
        import json
        from kaneda import Metrics
        from kaneda.backends import InfluxBackend

        backend = InfluxBackend({database!r}, host="127.0.0.1", port={server.port}, timeout=10)
        metrics = Metrics(backend=backend)
        answers = []
        for method, args, kwargs in json.loads({json.dumps(calls)!r}):
            answers.append(repr(getattr(metrics, method)(*args, **kwargs)))
        print(json.dumps(answers))
        """
    )


def face_writes(server: InfluxServer, database: str, calls: list[Call]) -> list[Any]:
    """Make ``calls`` through this project's ``kaneda`` package; what each returned."""
    backend = InfluxBackend(database, host="127.0.0.1", port=server.port, timeout=10)
    metrics = kaneda.Metrics(backend=backend)
    answers = [getattr(metrics, method)(*args, **kwargs) for method, args, kwargs in calls]
    assert metrics.stats().failed == 0
    metrics.close()
    return answers


def fresh() -> str:
    return f"k1_{uuid.uuid4().hex[:10]}"


def test_the_face_stores_what_kaneda_1_0_stores(influx_server: InfluxServer) -> None:
    theirs, ours = fresh(), fresh()
    kaneda1_answers = kaneda1_writes(influx_server, theirs, CALLS)
    answers = face_writes(influx_server, ours, CALLS)
    expected = snapshot(influx_server, theirs)
    assert expected["fields"]["gauge"] == {"name": "string", "value": "integer"}  # as 1.0 did
    assert expected["fields"]["xml_response"]["count"] == "integer"
    # 1.0's client doubled a backslash in names, keys and tags; InfluxDB kept both.
    assert expected["fields"]["k\\\\ind"] == {"f\\\\d": "integer", "name": "string"}
    assert snapshot(influx_server, ours) == expected
    # 1.0 returned write_points' True from gauge (and None from the other calls).
    assert kaneda1_answers[0] == "True" and answers[0] is True
    assert all(answer is True for answer in answers)


def test_writing_after_kaneda_1_0_into_its_database_loses_nothing(
    influx_server: InfluxServer,
) -> None:
    database = fresh()
    kaneda1_writes(influx_server, database, CALLS)
    before = snapshot(influx_server, database)
    face_writes(influx_server, database, CALLS)
    after = snapshot(influx_server, database)
    assert after["fields"] == before["fields"] and after["tags"] == before["tags"]
    assert sorted(after["points"], key=repr) == sorted(before["points"] * 2, key=repr)


def test_a_bool_gauge_or_timing_is_stored_as_kaneda_1_0_stored_it(
    influx_server: InfluxServer,
) -> None:
    # kaneda 1.0 passed any value through: a bool became a boolean field.
    calls: list[Call] = [
        ("gauge", ["maintenance.on", True], {"tags": {"site": "eu"}}),
        ("timing", ["cache.hit", False], {}),
    ]
    theirs, ours = fresh(), fresh()
    kaneda1_writes(influx_server, theirs, calls)
    assert face_writes(influx_server, ours, calls) == [True, True]
    expected = snapshot(influx_server, theirs)
    assert expected["fields"]["gauge"] == {"name": "string", "value": "boolean"}
    assert snapshot(influx_server, ours) == expected


# -- any calls: hypothesis ------------------------------------------------------------

# Line breaks are left out: refused at the call now (1.0 stored them as "\\n"), as are
# backslashes InfluxDB could read as an escape (the calls the face refuses are skipped).
TEXT = st.text(string.ascii_letters + string.digits + " ,=._-/:'\"\\é☃", min_size=1, max_size=12)
TAG_VALUES = st.one_of(TEXT, st.integers(-1000, 1000), st.booleans())
TAGS = st.dictionaries(TEXT.filter(lambda k: k not in ("host", "time")), TAG_VALUES, max_size=3)
STRINGS = st.text(string.printable.replace("\n", "").replace("\r", ""), max_size=20)
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    STRINGS,
)
FIELD_KEYS = TEXT.filter(lambda k: k not in ("name", "time"))


@st.composite
def calls(draw: Any) -> list[Call]:
    """A few calls whose fields never change type (conflicts are tested on their own)."""
    made: list[Call] = []
    for index in range(draw(st.integers(1, 8))):
        name, tags = draw(TEXT), draw(TAGS)
        kind = draw(st.sampled_from(["gauge", "timing", "increment", "event", "custom"]))
        if kind == "gauge":
            made.append(("gauge", [name, draw(st.integers(-(2**63), 2**63 - 1))], {"tags": tags}))
        elif kind == "timing":
            made.append(("timing", [name, draw(st.floats(0, 1e6))], {"tags": tags}))
        elif kind == "increment":
            made.append(("increment", [name], {"tags": tags}))
        elif kind == "event":
            made.append(("event", [name, draw(STRINGS)], {"tags": tags}))
        else:
            value = draw(
                st.one_of(SCALARS, st.dictionaries(FIELD_KEYS, SCALARS, min_size=1, max_size=3))
            )
            # A kind of its own per call: its fields' types are this call's.
            made.append(
                (
                    "custom",
                    [name],
                    {"metric": f"k{index}{draw(TEXT)}", "value": value, "tags": tags},
                )
            )
    return made


@settings(
    max_examples=int(__import__("os").environ.get("K1_EXAMPLES", "6")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(made=calls())
def test_any_calls_are_stored_as_kaneda_1_0_stores_them(
    influx_server: InfluxServer, made: list[Call]
) -> None:
    made = [call for call in made if accepted(call)]
    assume(made)
    theirs, ours = fresh(), fresh()
    kaneda1_writes(influx_server, theirs, made)
    face_writes(influx_server, ours, made)
    assert snapshot(influx_server, ours) == snapshot(influx_server, theirs)


def accepted(call: Call) -> bool:
    """Whether the face takes ``call`` (it refuses what InfluxDB could misread)."""

    class CheckOnly(InfluxBackend):  # type: ignore[misc, valid-type]
        def send(self, batch: Any) -> None:
            return None

    method, args, kwargs = call
    try:
        getattr(kaneda.Metrics(backend=CheckOnly("unused", port=1)), method)(*args, **kwargs)
    except InvalidMetric:
        return False
    return True


def test_what_kaneda_1_0_could_not_store_is_refused_at_the_call(
    influx_server: InfluxServer,
) -> None:
    backend = InfluxBackend(fresh(), host="127.0.0.1", port=influx_server.port)
    metrics = kaneda.Metrics(backend=backend)
    with pytest.raises(InvalidMetric, match="tags must be a dict"):
        metrics.timing("t", 230, tags=["login", "edit_profile"])  # 1.0 logged a TypeError
    with pytest.raises(InvalidMetric, match="nested dict"):
        metrics.custom("zone.search", metric="query_time", value={"times": {"start": 120}})
    with pytest.raises(InvalidMetric, match=r"reserved by kaneda 1\.0's layout"):
        metrics.gauge("g", 1, tags={"host": "other"})  # 1.0 overwrote it silently
    with pytest.raises(InvalidMetric, match="does not fit InfluxDB's 64-bit integers"):
        metrics.gauge("g", 2**64)  # 1.0's write failed


# -- the database exists once the backend is constructed, as in 1.0 -------------------------


def test_the_face_creates_its_database_when_constructed(influx_server: InfluxServer) -> None:
    database = fresh()
    InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=300)
    answer = influx_server.query("SHOW DATABASES")
    assert [database] in answer["results"][0]["series"][0]["values"]


def test_the_plugin_itself_still_waits_for_the_first_delivery(
    influx_server: InfluxServer,
) -> None:
    from kaneda_influx import InfluxBackend as PluginBackend

    database = fresh()
    PluginBackend(database, host="127.0.0.1", port=influx_server.port)
    answer = influx_server.query("SHOW DATABASES")
    assert [database] not in answer["results"][0]["series"][0]["values"]


def silent_server() -> tuple[socket.socket, int]:
    """A port that accepts connections and never answers: a hung server."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


@pytest.mark.parametrize("timeout", [300, None])
def test_construction_waits_at_most_a_second_for_a_hung_server(timeout: float | None) -> None:
    listener, port = silent_server()
    try:
        started = time.monotonic()
        backend = InfluxBackend("db", host="127.0.0.1", port=port, timeout=timeout)
        assert time.monotonic() - started < 1.0 + 0.5
    finally:
        listener.close()
    assert not backend._database_ready  # the first delivery creates it, later


def test_construction_with_no_server_is_quick_and_quiet() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    backend = InfluxBackend("db", host="127.0.0.1", port=port)
    assert time.monotonic() - started < 0.5
    assert not backend._database_ready


def test_after_a_failed_attempt_the_first_delivery_creates_the_database(
    influx_server: InfluxServer,
) -> None:
    database = fresh()
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port)
    influx_server.query(f'DROP DATABASE "{database}"')
    backend._database_ready = False  # as if the server had been down at construction
    assert kaneda.Metrics(backend=backend).gauge("g", 1) is True
    answer = influx_server.query('SELECT "value" FROM "gauge"', db=database)
    assert answer["results"][0]["series"][0]["values"][0][1] == 1


@pytest.mark.parametrize("layout", ["kaneda1", "kaneda2"])
def test_in_a_database_kaneda_1_0_wrote_lossless_numbers_are_stored_the_rest_refused(
    influx_server: InfluxServer, layout: str, failures: Any
) -> None:
    database = fresh()
    kaneda1_writes(
        influx_server, database, [("gauge", ["load", 7], {}), ("timing", ["t", 0.5], {})]
    )
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, layout=layout)
    metrics = kaneda.Metrics(backend=backend)
    assert metrics.gauge("load", 8.0) is True  # 1.0's integer field: stored as 8
    assert metrics.gauge("load", 9) is True
    assert metrics.timing("t", 2) is True  # 1.0's float field: stored as 2.0
    assert metrics.gauge("load", 7.5) is None  # an integer field cannot hold it
    fields = snapshot(influx_server, database)["fields"]
    assert fields["gauge"]["value"] == "integer" and fields["timing"]["value"] == "float"
    answer = influx_server.query('SELECT "value" FROM "gauge"', db=database)
    assert sorted(row[1] for row in answer["results"][0]["series"][0]["values"]) == [7, 8, 9]
    [(lost, error)] = failures.failures
    assert [m.value for m in lost] == [7.5]
    assert 'field "value" of measurement "gauge" is stored as integer' in str(error)
