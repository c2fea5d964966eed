"""Failure: server down, wrong credentials, no permission. Clear, retried or not, no secrets."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from influx_server import ADMIN, InfluxServer, free_port, stored_metrics
from kaneda_influx import InfluxBackend

from kaneda_core import DeliveryError, Metric, Metrics, RetryPolicy, connect
from kaneda_core.hookspecs import hookimpl
from kaneda_core.plugins import get_plugin_manager

SECRET = "pa55-w0rd-never-shown"
FAST = RetryPolicy(attempts=2, initial_delay=0.01, max_delay=0.02)


@pytest.fixture(scope="module")
def auth_server() -> Iterator[InfluxServer]:
    """An InfluxDB with authentication on, an admin, and a user who may only read/write."""
    server = InfluxServer(auth_enabled=True)
    server.start()
    server.query(f"CREATE USER writer WITH PASSWORD '{SECRET}'")
    server.query("CREATE DATABASE existing")
    server.query('GRANT WRITE ON "existing" TO writer')
    yield server
    server.destroy()


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


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_server_down_is_retryable_and_never_breaks_the_caller(
    caplog: pytest.LogCaptureFixture, failures: Failures
) -> None:
    port = free_port()
    url = f"influxdb://writer:{SECRET}@127.0.0.1:{port}/metrics"
    metrics = connect(url, retry=FAST)
    metrics.gauge("g", 1)
    assert metrics.flush(10) == 0
    stats = metrics.stats()
    assert (stats.sent, stats.failed, stats.retried) == (0, 1, 1)
    [(lost, error)] = failures.seen
    assert [m.name for m in lost] == ["g"]
    assert isinstance(error, DeliveryError) and error.retryable
    assert "unreachable" in str(error) and str(port) in str(error)
    assert_no_secret(str(error), caplog.text, repr(metrics.backend))
    metrics.close()


def test_wrong_credentials_are_not_retried_and_say_so(
    auth_server: InfluxServer, caplog: pytest.LogCaptureFixture, failures: Failures
) -> None:
    wrong = SECRET[::-1]
    backend = InfluxBackend(
        "existing",
        host="127.0.0.1",
        port=auth_server.port,
        username="writer",
        password=wrong,
        timeout=5,
    )
    metrics = Metrics(backend, retry=FAST)
    metrics.gauge("g", 1)
    metrics.flush(10)
    [(_, error)] = failures.seen
    assert isinstance(error, DeliveryError) and not error.retryable
    assert "refused the credentials of user 'writer'" in str(error)
    assert metrics.stats().retried == 0
    assert wrong not in caplog.text and wrong not in str(error) and wrong not in repr(backend)
    metrics.close()


def test_a_user_who_may_not_create_the_database_writes_to_an_existing_one(
    auth_server: InfluxServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"influxdb://writer:{SECRET}@127.0.0.1:{auth_server.port}/existing?timeout=5"
    with caplog.at_level(logging.WARNING), connect(url) as metrics:
        metrics.gauge("g", 3)
    assert "may not create database 'existing'" in caplog.text
    stored = stored_metrics(auth_server, "existing")
    assert [m.value for m in stored] == [3.0]
    assert_no_secret(caplog.text)


def test_no_permission_for_a_missing_database_is_a_clear_error(
    auth_server: InfluxServer, caplog: pytest.LogCaptureFixture, failures: Failures
) -> None:
    database = f"missing_{uuid.uuid4().hex[:6]}"
    url = f"influxdb://writer:{SECRET}@127.0.0.1:{auth_server.port}/{database}?timeout=5"
    metrics = connect(url, retry=FAST)
    metrics.gauge("g", 1)
    metrics.flush(10)
    [(_, error)] = failures.seen
    assert "not allowed to write" in str(error) or "does not exist" in str(error)
    assert_no_secret(caplog.text, str(error))
    metrics.close()


def test_an_admin_creates_the_database(auth_server: InfluxServer) -> None:
    database = f"created_{uuid.uuid4().hex[:6]}"
    user, password = ADMIN
    url = f"influxdb://{user}:{password}@127.0.0.1:{auth_server.port}/{database}?timeout=5"
    with connect(url) as metrics:
        metrics.increment("c")
    assert [m.value for m in stored_metrics(auth_server, database)] == [1.0]


def test_a_refused_point_is_a_permanent_failure(influx_server: InfluxServer, database: str) -> None:
    backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=5)
    backend.send([Metric.create("g", "shape", {"size": 1.0})])
    with pytest.raises(DeliveryError) as caught:  # same field, now a string: type conflict
        backend.send([Metric.create("g", "shape", {"size": "big"})])
    assert not caught.value.retryable and "400" in str(caught.value)


def test_credentials_escaped_in_a_url_are_unescaped(
    auth_server: InfluxServer, caplog: pytest.LogCaptureFixture
) -> None:
    password = "p@ss:w/rd%?#"
    auth_server.query(f"CREATE USER odd WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
    database = f"escaped_{uuid.uuid4().hex[:6]}"
    escaped = quote(password, safe="")
    url = f"influxdb://odd:{escaped}@127.0.0.1:{auth_server.port}/{database}?timeout=5"
    with connect(url) as metrics:
        metrics.gauge("g", 4)
        assert escaped not in repr(metrics.backend) and password not in repr(metrics.backend)
        assert metrics.backend.redact(f"{escaped} {password}") == "*** ***"
    assert [m.value for m in stored_metrics(auth_server, database)] == [4.0]
    assert escaped not in caplog.text and password not in caplog.text


def test_secrets_stay_out_of_the_repr() -> None:
    backend = InfluxBackend("db", connection_url=f"influxdb://writer:{SECRET}@h:8086/db")
    assert SECRET not in repr(backend) and "writer" in repr(backend)
    assert backend.redact(f"oops {SECRET}") == "oops ***"
