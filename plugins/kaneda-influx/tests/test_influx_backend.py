"""kaneda-influx against a real InfluxDB: construction, schema, restrictions, batches."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from influx_server import InfluxServer, stored_metrics
from influxdb import InfluxDBClient
from kaneda_influx import InfluxBackend

from kaneda_core import (
    InvalidMetric,
    Metric,
    Metrics,
    RetryPolicy,
    connect,
    create_backend,
    load_backend,
)
from kaneda_core.errors import ImproperlyConfigured


def fresh(server: InfluxServer, database: str, **kwargs: Any) -> InfluxBackend:
    return InfluxBackend(database, host="127.0.0.1", port=server.port, timeout=10, **kwargs)


def report(backend: InfluxBackend, *calls: Any) -> Metrics:
    metrics = Metrics(backend)
    for call in calls:
        call(metrics)
    assert metrics.flush(10) == 0
    return metrics


# -- construction -----------------------------------------------------------------------


def test_registered_under_both_names() -> None:
    assert load_backend("influxdb") is InfluxBackend
    assert load_backend("influx") is InfluxBackend


def test_client_of_the_wrong_class_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="not an instance of InfluxDBClient"):
        InfluxBackend("db", client=object())  # type: ignore[arg-type]


def test_a_client_is_used_as_given(influx_server: InfluxServer, database: str) -> None:
    client = InfluxDBClient(host="127.0.0.1", port=influx_server.port)
    report(InfluxBackend(database, client=client), lambda m: m.gauge("g", 1))
    assert [m.value for m in stored_metrics(influx_server, database)] == [1.0]


@pytest.mark.parametrize("scheme", ["influxdb", "https+influxdb", "influxdb+https"])
def test_connection_url_forms(scheme: str) -> None:
    backend = InfluxBackend("db", connection_url=f"{scheme}://u:pw@example.org:8087/db")
    assert (backend.client._host, backend.client._port) == ("example.org", 8087)
    assert backend.client._scheme == ("https" if "https" in scheme else "http")
    assert backend.client._verify_ssl is True


def test_connect_by_url(influx_server: InfluxServer, database: str) -> None:
    with connect(f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5") as metrics:
        metrics.increment("requests", tags={"route": "/"})
    [metric] = stored_metrics(influx_server, database)
    assert (metric.kind, metric.name, metric.tags) == ("counter", "requests", {"route": "/"})
    assert metrics.backend.client._timeout == 5  # type: ignore[attr-defined]


def test_url_without_a_database_is_refused() -> None:
    with pytest.raises(Exception, match="names no database"):
        create_backend("influxdb://u:s3cr3t@localhost:8086/")


def test_kaneda_url(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANEDA_URL", f"influxdb://127.0.0.1:{influx_server.port}/{database}")
    with Metrics() as metrics:
        metrics.gauge("g", 2)
    assert [m.value for m in stored_metrics(influx_server, database)] == [2.0]


def test_settings_module_with_influx_names(
    influx_server: InfluxServer, database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "influx_settings.py").write_text(
        "BACKEND = 'kaneda.backends.InfluxBackend'\n"
        f"INFLUX_DATABASE = {database!r}\nINFLUX_HOST = '127.0.0.1'\n"
        f"INFLUX_PORT = {influx_server.port}\nINFLUX_TIMEOUT = 5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("KANEDA_URL", raising=False)
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "influx_settings")
    import kaneda

    metrics = kaneda.Metrics()
    metrics.event("deploy", "v2")
    sys.modules.pop("influx_settings", None)
    assert [m.value for m in stored_metrics(influx_server, database)] == ["v2"]


def test_the_seed_import_path_is_this_class_writing_kaneda_1_0s_layout() -> None:
    import inspect

    from kaneda.backends import InfluxBackend as Seed

    assert issubclass(Seed, InfluxBackend) and Seed.settings_namespace == "INFLUX"
    assert inspect.signature(Seed).parameters["layout"].default == "kaneda1"
    assert inspect.signature(InfluxBackend).parameters["layout"].default == "kaneda2"


def test_constructing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def no_connection(*args: Any) -> None:
        raise AssertionError("construction opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connection)
    monkeypatch.setattr(socket, "getaddrinfo", no_connection)
    backends = [
        InfluxBackend("db", host="192.0.2.1", port=9, timeout=30),  # TEST-NET: no route
        InfluxBackend("db", connection_url="https+influxdb://u:pw@192.0.2.1:9/db"),
        create_backend("influxdb://u:pw@192.0.2.1:9/db?timeout=30"),
    ]
    assert all(not b._database_ready for b in backends)  # type: ignore[attr-defined]
    # The guard works: sending does try to connect.
    with pytest.raises(Exception, match="construction opened a connection"):
        backends[0].client.request("ping", expected_response_code=204)


# -- database ---------------------------------------------------------------------------


def test_database_is_created_once_per_backend(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = fresh(influx_server, database)
    created: list[str] = []
    original = backend._transport.query

    def query(q: str, database: str | None = None, **options: Any) -> Any:
        if q.startswith("CREATE DATABASE"):
            created.append(q.split('"')[1])
        return original(q, database, **options)

    monkeypatch.setattr(backend._transport, "query", query)
    metrics = Metrics(backend, batch_size=10)
    for i in range(50):
        metrics.gauge("g", i)
        if i % 10 == 0:
            metrics.flush(10)
    metrics.close()
    assert created == [database]
    assert len(stored_metrics(influx_server, database)) == 50


def test_a_database_dropped_meanwhile_is_created_again_on_the_retry(
    influx_server: InfluxServer, database: str
) -> None:
    backend = fresh(influx_server, database)
    metrics = Metrics(backend, retry=RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02))
    metrics.gauge("g", 1)
    assert metrics.flush(10) == 0
    influx_server.query(f'DROP DATABASE "{database}"')
    metrics.gauge("g", 2)
    assert metrics.flush(10) == 0
    stats = metrics.stats()
    metrics.close()
    assert (stats.sent, stats.retried, stats.failed) == (2, 1, 0)
    assert [m.value for m in stored_metrics(influx_server, database)] == [2.0]


# -- schema -----------------------------------------------------------------------------


def test_a_gauge_and_an_event_under_one_name_are_both_stored(
    influx_server: InfluxServer, database: str
) -> None:
    backend = fresh(influx_server, database)
    report(
        backend,
        lambda m: m.gauge("checkout", 7),
        lambda m: m.gauge("checkout", 7.5),
        lambda m: m.event("checkout", "slow checkout"),
        lambda m: m.custom("checkout", "cart", {"items": 3, "coupon": "X", "paid": True}),
    )
    got = sorted((m.kind, repr(m.value)) for m in stored_metrics(influx_server, database))
    assert got == [
        ("cart", repr({"coupon": "X", "items": 3.0, "paid": True})),
        ("event", "'slow checkout'"),
        ("gauge", "7.0"),
        ("gauge", "7.5"),
    ]


def test_group_by_name_and_host_and_filter_by_tag(
    influx_server: InfluxServer, database: str
) -> None:
    backend = fresh(influx_server, database)

    def calls(metrics: Metrics) -> None:
        for route, n in (("/", 3), ("/cart", 2)):
            for _ in range(n):
                metrics.increment("requests", tags={"route": route})
        metrics.increment("logins")

    report(backend, calls)
    answer = influx_server.query(
        """SELECT sum(value) FROM counter WHERE route = '/cart' GROUP BY "name", host""",
        db=database,
    )
    [series] = answer["results"][0]["series"]
    assert series["tags"]["name"] == "requests" and series["values"][0][1] == 2
    answer = influx_server.query('SELECT count(value) FROM counter GROUP BY "name"', db=database)
    counts = {s["tags"]["name"]: s["values"][0][1] for s in answer["results"][0]["series"]}
    assert counts == {"requests": 5, "logins": 1}


def test_equal_tag_values_of_different_types_keep_their_own_text(
    influx_server: InfluxServer, database: str
) -> None:
    backend = fresh(influx_server, database)
    # True == 1 == 1.0 in Python, yet they are three different tag values.
    for value, shard in enumerate([True, 1, 1.0, "1", False, 0, 0.0, -0.0]):
        backend.send([Metric.create("g", "gauge", value, {"shard": shard})])
    stored = {m.value: m.tags["shard"] for m in stored_metrics(influx_server, database)}  # type: ignore[call-overload]
    assert stored == {
        0.0: "true",
        1.0: "1",
        2.0: "1.0",
        3.0: "1",
        4.0: "false",
        5.0: "0",
        6.0: "0.0",
        7.0: "0.0",
    }


def test_timestamps_keep_microseconds(influx_server: InfluxServer, database: str) -> None:
    when = datetime(2025, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)
    backend = fresh(influx_server, database)
    backend.send([Metric.create("g", "gauge", 1, timestamp=when)])
    [metric] = stored_metrics(influx_server, database)
    assert metric.timestamp == when


def test_a_resent_batch_is_stored_once(influx_server: InfluxServer, database: str) -> None:
    backend = fresh(influx_server, database)
    batch = [Metric.create("g", "gauge", i, {"k": "v"}) for i in range(100)]
    backend.send(batch)
    backend.send(batch)  # what a retry or a disk-buffer redelivery does
    assert len(stored_metrics(influx_server, database)) == 100


def test_one_request_per_batch(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = fresh(influx_server, database)
    writes: list[dict[str, str]] = []
    original = backend._transport.send

    def counting(endpoint: str, params: dict[str, str], body: bytes = b"", **options: Any) -> Any:
        if endpoint == "write":
            writes.append(params)
        return original(endpoint, params, body, **options)

    monkeypatch.setattr(backend._transport, "send", counting)
    metrics = Metrics(backend, batch_size=2000, flush_interval=60)
    for i in range(6000):
        metrics.gauge("g", i)
    metrics.close()
    assert len(writes) == 3
    assert all(w["precision"] == "n" for w in writes)
    assert len(stored_metrics(influx_server, database)) == 6000


# -- the seed's restrictions, at the call ---------------------------------------------


@pytest.mark.parametrize(
    ("call", "advice"),
    [
        (
            lambda m: m.timing("user.profile_load_time", 230, tags=["login", "edit_profile"]),
            "tags={'from': 'login', 'to': 'edit_profile'}",
        ),
        (
            lambda m: m.custom("zone.search", metric="query_time", value={"times": [120, 230]}),
            "value={'start_time': 120, 'end_time': 230}",
        ),
        (
            lambda m: m.custom("zone.search", metric="query_time", value={"times": {"start": 120}}),
            "value={'start_time': 120, 'end_time': 230}",
        ),
        (
            lambda m: m.custom("zone.search", metric="query_time", value=[120, 230]),
            "dict of scalars",
        ),
        (lambda m: m.custom("zone.search", metric="query_time", value={}), "at least one"),
        (lambda m: m.increment("x", tags={"host": "other"}), "reserved"),
        (lambda m: m.increment("x", tags={"user": ""}), "leave the tag out"),
        (lambda m: m.increment("line\nbreak"), "line break"),
        (lambda m: m.event("e", "two\nlines"), "line break"),
        (lambda m: m.increment("x", tags={"k": "ends\\"}), "backslash"),
    ],
)
def test_what_influxdb_cannot_store_is_refused_at_the_call_with_advice(
    call: Any, advice: str, influx_server: InfluxServer, database: str
) -> None:
    metrics = Metrics(fresh(influx_server, database))
    with pytest.raises(InvalidMetric) as caught:
        call(metrics)
    assert advice in str(caught.value)
    assert metrics.flush(5) == 0 and metrics.stats().sent == 0


def test_the_series_cache_stays_exact_when_full() -> None:
    from kaneda_influx import line_protocol
    from kaneda_influx.series_cache import SeriesCache

    cache = SeriesCache(max_bytes=600)  # room for about three series
    shards: list[Any] = ["1", 1, True, 1.0, "a", 0, False, "1", True, 1]
    batch = [Metric.create("g", "gauge", 0.5, {"shard": s, "z": "x"}) for s in shards * 3]
    written = line_protocol.lines(batch, cache).split("\n")
    assert [w.split(" ")[0] for w in written] == [line_protocol.series(m) for m in batch]
    assert cache.bytes <= 600 and len(cache.prefixes) <= 4


def test_the_destination_names_the_database_and_no_secret() -> None:
    backend = InfluxBackend.from_url("influxdb://user:s3cret@example.com:8086/appA")
    assert backend.destination() == "influxdb database appA"
    assert "s3cret" not in backend.destination()
