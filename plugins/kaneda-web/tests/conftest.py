"""Fixtures: a Metrics on the memory backend, and (for the server runs) a real InfluxDB."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kaneda_core import Metrics

# The throwaway InfluxDB of the kaneda-influx tests, reused as it is.
INFLUX_TESTS = Path(__file__).resolve().parents[2] / "kaneda-influx" / "tests"


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    """Delivers in the caller's thread to the memory backend: reported means stored."""
    metrics = Metrics("memory", batching=False)
    yield metrics
    metrics.close()


@pytest.fixture(scope="session")
def influx_server() -> Iterator[Any]:
    """One influxd for this folder's server runs, on free loopback ports, deleted after."""
    sys.path.insert(0, str(INFLUX_TESTS))
    from influx_server import InfluxServer

    server = InfluxServer()
    server.start()
    yield server
    server.destroy()
