"""Fixtures of the comparisons with genuine kaneda 1.0: its sources, and the servers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PLUGINS = HERE.parents[1] / "plugins"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(PLUGINS / "kaneda-influx" / "tests"))
sys.path.insert(0, str(PLUGINS / "kaneda-elasticsearch" / "tests"))

from genuine import kaneda1_source  # noqa: E402
from influx_server import InfluxServer  # noqa: E402


@pytest.fixture(scope="session")
def kaneda1() -> Path:
    """kaneda 1.0's unpacked sources (downloaded from PyPI once)."""
    return kaneda1_source()


@pytest.fixture(scope="session")
def influx_server() -> Iterator[InfluxServer]:
    """A throwaway influxd on free loopback ports, deleted afterwards."""
    server = InfluxServer()
    server.start()
    yield server
    server.destroy()
