"""The backend contract over mongomock, and over a real MongoDB when one is given."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from kaneda_mongo import MongoBackend
from mongo_helpers import closed_port, real_server_url, stored_metrics

from kaneda_core import Backend, Metric
from kaneda_core.testing import BackendContract


class TestContract(BackendContract):
    """Against mongomock: pymongo's API over an in-memory store, not a MongoDB server."""

    store_survives_fork = False  # an in-memory store: a forked child has its own copy

    timestamp_resolution = timedelta(milliseconds=1)  # BSON dates hold milliseconds

    @pytest.fixture
    def backend(self, fake_mongo: type, names: tuple[str, str]) -> Iterator[Backend]:
        backend = MongoBackend(*names, connection_url="mongodb://localhost:27017/")
        yield backend
        backend.close()

    @pytest.fixture
    def unreachable_backend(self) -> Iterator[Backend]:
        # The real pymongo client, over a real socket, to a port nobody listens on.
        backend = MongoBackend("db", "m", host="127.0.0.1", port=closed_port(), timeout=100)
        yield backend
        backend.close()

    @pytest.fixture
    def backend_at(self) -> Any:
        # The real pymongo client, over a real socket; timeout in milliseconds.
        return lambda host, port: MongoBackend("db", "m", host=host, port=port, timeout=300)

    def stored(self, backend: Backend) -> Sequence[Metric]:
        assert isinstance(backend, MongoBackend)
        return stored_metrics(backend.collection)


@pytest.mark.skipif(
    real_server_url() is None,
    reason="a real MongoDB: docker compose up -d mongo, then set "
    "KANEDA_TEST_MONGO_URL=mongodb://localhost:27017/",
)
class TestContractRealServer(TestContract):
    """The same contract against a real MongoDB (docker compose up -d mongo)."""

    store_survives_fork = True  # a real server

    @pytest.fixture
    def backend(self, names: tuple[str, str]) -> Iterator[Backend]:  # type: ignore[override]
        backend = MongoBackend(*names, connection_url=real_server_url(), timeout=5000)
        yield backend
        backend.client.drop_database(names[0])
        backend.close()
