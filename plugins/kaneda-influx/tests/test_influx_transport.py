"""TLS, request size limits and partial writes, against real InfluxDB servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from influx_server import InfluxServer, stored_metrics
from kaneda_influx import InfluxBackend

from kaneda_core import DeliveryError, Metric, Metrics, RetryPolicy, connect

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

FAST = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[InfluxServer]:
    """An InfluxDB serving HTTPS with a self-signed certificate."""
    server = InfluxServer(tls=True)
    server.start()
    yield server
    server.destroy()


def test_https_url_against_a_tls_server(tls_server: InfluxServer, database: str) -> None:
    url = f"https+influxdb://127.0.0.1:{tls_server.port}/{database}?verify_ssl=false&timeout=5"
    with connect(url) as metrics:
        metrics.gauge("secure", 1.5, tags={"via": "tls"})
    [metric] = stored_metrics(tls_server, database)
    assert (metric.name, metric.value, metric.tags) == ("secure", 1.5, {"via": "tls"})


def test_connection_url_parameter_against_a_tls_server(
    tls_server: InfluxServer, database: str
) -> None:
    backend = InfluxBackend(
        database,
        connection_url=f"influxdb+https://127.0.0.1:{tls_server.port}/{database}",
        timeout=5,
        verify_ssl=False,
    )
    backend.send([Metric.create("c", "counter", 1)])
    assert [m.value for m in stored_metrics(tls_server, database)] == [1.0]


def test_an_unverifiable_certificate_is_not_retried_and_says_what_to_do(
    tls_server: InfluxServer, database: str
) -> None:
    backend = InfluxBackend(
        database, connection_url=f"https+influxdb://127.0.0.1:{tls_server.port}/x", timeout=5
    )
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("c", "counter", 1)])
    assert not caught.value.retryable
    assert "certificate did not verify" in str(caught.value)
    assert "verify_ssl=False" in str(caught.value)


def test_plain_http_to_a_tls_server_says_to_use_https(tls_server: InfluxServer) -> None:
    backend = InfluxBackend("db", host="127.0.0.1", port=tls_server.port, timeout=5)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("c", "counter", 1)])
    assert not caught.value.retryable and "use an https+influxdb:// URL" in str(caught.value)


def test_a_batch_over_the_servers_body_limit_is_written_in_parts(database: str) -> None:
    server = InfluxServer(max_body_size=4000)
    server.start()
    try:
        backend = InfluxBackend(database, host="127.0.0.1", port=server.port, timeout=5)
        writes: list[int] = []
        original = backend._transport.send

        def counting(
            endpoint: str, params: dict[str, str], body: bytes = b"", **options: Any
        ) -> Any:
            if endpoint == "write":
                writes.append(len(body))
            return original(endpoint, params, body, **options)

        backend._transport.send = counting  # type: ignore[method-assign]
        batch = [Metric.create(f"n{i}", "gauge", i, {"shard": str(i)}) for i in range(300)]
        backend.send(batch)
        stored = stored_metrics(server, database)
        assert sorted(m.value for m in stored) == [float(i) for i in range(300)]
        accepted = [size for size in writes if size <= 4000]
        assert writes[0] > 4000 and len(accepted) > 1
        # The accepted parts are the whole body cut at line ends: nothing sent twice.
        assert sum(accepted) + len(accepted) - 1 == writes[0]
        # A single point over the limit cannot be split: it alone is refused.
        huge = Metric.create("huge", "event", "x" * 5000)
        small = [Metric.create(f"s{i}", "gauge", i) for i in range(3)]
        with pytest.raises(DeliveryError) as caught:
            backend.send([*small, huge])
        assert caught.value.metrics == [huge] and not caught.value.retryable
        assert "max-body-size" in str(caught.value)
        assert {m.name for m in stored_metrics(server, database)} >= {"s0", "s1", "s2"}
    finally:
        server.destroy()


def test_a_partial_write_names_the_dropped_metrics(
    influx_server: InfluxServer, database: str
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=5)
    backend.send([Metric.create("g", "shape", {"size": 1.0})])
    conflicting = Metric.create("bad", "shape", {"size": "big"})
    also_bad = Metric.create("bad2", "shape", {"size": True, "colour": "red"})
    good = [
        Metric.create("ok", "shape", {"size": 2.5}),
        Metric.create("ok", "gauge", 3),
        Metric.create("ok", "event", "fine"),
    ]
    with pytest.raises(DeliveryError) as caught:
        backend.send([good[0], conflicting, good[1], also_bad, good[2]])
    error = caught.value
    assert not error.retryable
    assert error.metrics == [conflicting, also_bad]
    assert "dropped 2 metrics" in str(error) and "field type conflict" in str(error)
    names = sorted((m.kind, m.name) for m in stored_metrics(influx_server, database))
    assert names == [("event", "ok"), ("gauge", "ok"), ("shape", "g"), ("shape", "ok")]


def test_a_partial_write_counts_only_the_dropped_metrics_as_failed(
    influx_server: InfluxServer, database: str
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=5)
    metrics = Metrics(backend, retry=FAST)
    metrics.custom("a", "flag", True)
    assert metrics.flush(10) == 0
    for i in range(10):
        metrics.custom("a", "flag", i if i == 4 else i % 2 == 0)  # one number among bools
    assert metrics.flush(10) == 0
    stats = metrics.stats()
    metrics.close()
    assert (stats.sent, stats.failed) == (10, 1)
    assert len(stored_metrics(influx_server, database)) == 10


def forbid_queries(backend: InfluxBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write-only user, say: SHOW FIELD KEYS fails."""
    original = backend._transport.query

    def forbidden(q: str, database: str | None = None, **options: Any) -> Any:
        if q.startswith("SHOW"):
            raise RuntimeError("no READ permission")
        return original(q, database, **options)

    monkeypatch.setattr(backend._transport, "query", forbidden)


def test_without_read_permission_the_error_alone_names_a_single_conflict(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=5)
    backend.send([Metric.create("g", "shape", {"size": 1.0})])
    forbid_queries(backend, monkeypatch)
    bad = Metric.create("x", "shape", {"size": "big"})
    with pytest.raises(DeliveryError) as caught:
        backend.send([bad, Metric.create("y", "gauge", 1)])
    assert caught.value.metrics == [bad] and not caught.value.retryable
    assert 'field "size" of measurement "shape" is stored as float' in str(caught.value)


def test_a_partial_write_the_backend_cannot_explain_is_halved_until_the_bad_points_are_found(
    influx_server: InfluxServer, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=5)
    backend.send([Metric.create("g", "shape", {"size": 1.0}), Metric.create("g", "form", {"w": 2})])
    forbid_queries(backend, monkeypatch)
    # Two fields conflict; InfluxDB's error names only the first, and without READ the
    # backend cannot tell which points the second one cost.
    batch = [
        Metric.create("x", "shape", {"size": "big"}),
        Metric.create("z", "form", {"w": "text"}),
        Metric.create("y", "gauge", 1),
    ]
    with pytest.raises(DeliveryError) as caught:
        backend.send(batch)
    assert caught.value.metrics is None and not caught.value.retryable and caught.value.isolate
    assert "stored part of the batch" in str(caught.value)
    # Through Metrics the batch is halved: the good points are counted sent, the bad failed.
    metrics = Metrics(backend, batch_size=100, flush_interval=60)
    metrics.gauge("y2", 2)
    metrics.custom("x2", "shape", {"size": "bigger"})
    metrics.custom("z2", "form", {"w": "longer"})
    metrics.gauge("y3", 3)
    metrics.flush(10)
    stats = metrics.stats()
    assert (stats.sent, stats.failed) == (2, 2), stats
    stored = {m.name for m in stored_metrics(influx_server, database)}
    assert {"y2", "y3"} <= stored and not {"x2", "z2"} & stored
    metrics.close()


def test_missing_influxd_fails_with_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"/nonexistent-{uuid.uuid4().hex}")
    with pytest.raises(RuntimeError, match="apt-get install influxdb"):
        InfluxServer()
