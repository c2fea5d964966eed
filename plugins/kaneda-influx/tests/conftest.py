"""Fixtures: a throwaway InfluxDB server, a fresh database per test, reading points back."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from influx_server import InfluxServer, stored_metrics

from kaneda_core.testing import filters_set_aside


@pytest.fixture(autouse=True)
def records_as_in_production() -> Iterator[None]:
    """The plugin's send is given the calls' records (``sends_records``), unless a filter
    hook is installed: the example plugin's, in this workspace. Its tests run without it,
    as an application without filters does (tests that register a filter still can)."""
    with filters_set_aside():
        yield


@pytest.fixture(scope="session")
def influx_server() -> Iterator[InfluxServer]:
    """One influxd for the session, on free loopback ports, deleted afterwards."""
    server = InfluxServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def database(influx_server: InfluxServer) -> str:
    """A database name of this test's own (not created: the backend does that)."""
    return f"kaneda_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def read_points(influx_server: InfluxServer) -> Any:
    """``read_points(db)``: every stored point as a Metric, through an InfluxQL query."""
    return lambda db, server=influx_server: stored_metrics(server, db)
