"""Pytest fixtures for the queue plugins' tests: brokers, InfluxDB, kaneda 1.0, processes.

A plugin's ``conftest.py`` puts this folder on ``sys.path`` and imports the fixtures it
needs. Session fixtures start one server per test session (per plugin folder).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import RabbitMQServer, RedisServer
from influx import InfluxServer
from kaneda1 import check_is_kaneda1, kaneda1_site
from processes import Processes


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session, on a free loopback port."""
    server = RedisServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and start (outage tests); it keeps its data."""
    server = RedisServer(persistent=True)
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """One RabbitMQ node for the session (booting one takes seconds)."""
    server = RabbitMQServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def influx_server() -> Iterator[InfluxServer]:
    """One influxd for the session, on free loopback ports."""
    server = InfluxServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def influx_db(influx_server: InfluxServer) -> str:
    """A database name of this test's own (the backend creates it)."""
    return f"kaneda_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def influx_url(influx_server: InfluxServer, influx_db: str) -> str:
    """The URL of this test's database."""
    return f"influxdb://127.0.0.1:{influx_server.port}/{influx_db}?timeout=10"


@pytest.fixture(scope="session")
def kaneda1() -> Path:
    """The folder holding genuine kaneda 1.0 from PyPI (see kaneda1.py)."""
    site = kaneda1_site()
    check_is_kaneda1(site)
    return site


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start processes for this test; any still running at its end are killed."""
    started = Processes(tmp_path)
    yield started
    started.stop_all()
