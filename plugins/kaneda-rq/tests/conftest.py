"""Fixtures: brokers, InfluxDB, kaneda 1.0 and processes, from the shared test support folder."""

from __future__ import annotations

import sys
from pathlib import Path

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
