"""Fixtures: brokers, InfluxDB, kaneda 1.0 and processes, from the shared test support folder."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests" / "support"))

from fixtures import (
    influx_db,
    influx_server,
    influx_url,
    kaneda1,
    own_redis,
    processes,
    rabbitmq_server,
    redis_server,
)

__all__ = [
    "influx_db",
    "influx_server",
    "influx_url",
    "kaneda1",
    "own_redis",
    "processes",
    "rabbitmq_server",
    "redis_server",
]


@pytest.fixture(autouse=True)
def signal_handlers_kept() -> Iterator[None]:
    """RQ's workers, run in this process, set SIGINT's and SIGTERM's handlers for good:
    put back, so that later tests (a child forked from here) find the default."""
    import signal

    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in kept.items():
        signal.signal(number, handler)
