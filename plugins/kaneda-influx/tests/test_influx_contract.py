"""The backend contract, against a real InfluxDB server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from influx_server import InfluxServer, free_port, stored_metrics
from kaneda_influx import InfluxBackend

from kaneda_core import Backend, Metric
from kaneda_core.testing import BackendContract


class TestContract(BackendContract):
    supports_list_tags = False  # the seed's restriction: refused at the call
    numbers_are_floats = True
    # Points are keyed by measurement, tags and time: a re-sent batch overwrites itself
    # (tested in test_influx_backend.py), but two calls with one id_ are two points.
    supports_ids = False
    timestamp_resolution = timedelta(microseconds=1)

    @pytest.fixture
    def backend(self, influx_server: InfluxServer, database: str) -> Iterator[Backend]:
        backend = InfluxBackend(database, host="127.0.0.1", port=influx_server.port, timeout=10)
        yield backend
        backend.close()

    @pytest.fixture
    def unreachable_backend(self) -> Iterator[Backend]:
        backend = InfluxBackend("kaneda", host="127.0.0.1", port=free_port())
        yield backend
        backend.close()

    @pytest.fixture
    def backend_at(self) -> Any:
        return lambda host, port: InfluxBackend("kaneda", host=host, port=port, timeout=0.3)

    @pytest.fixture(autouse=True)
    def _server(self, influx_server: InfluxServer) -> None:
        self.server = influx_server

    def stored(self, backend: Backend) -> Sequence[Metric]:
        assert isinstance(backend, InfluxBackend)
        return stored_metrics(self.server, backend.database)
