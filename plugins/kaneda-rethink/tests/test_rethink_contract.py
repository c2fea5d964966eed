"""The backend contract on rethinkdb-mock, and on a real RethinkDB when one is given."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from kaneda_rethink import RethinkBackend
from rethink_helpers import closed_port, real_server_url, stored_metrics

from kaneda_core import Backend, Metric, create_backend
from kaneda_core.testing import BackendContract


class TestContract(BackendContract):
    """Against rethinkdb-mock: the driver's queries run in memory, not on a server."""

    store_survives_fork = False  # an in-memory store: a forked child has its own copy

    @pytest.fixture
    def backend(self, mock_connection: Any, db_name: str) -> Iterator[Backend]:
        backend = RethinkBackend(db_name, connection=mock_connection)
        yield backend
        backend.close()

    @pytest.fixture
    def unreachable_backend(self) -> Iterator[Backend]:
        # The real driver, over a real socket, to a port nobody listens on.
        backend = RethinkBackend("kaneda", host="127.0.0.1", port=closed_port())
        yield backend
        backend.close()

    @pytest.fixture
    def backend_at(self) -> Any:
        # The real driver, over a real socket.
        return lambda host, port: RethinkBackend("kaneda", host=host, port=port, timeout=0.3)

    def stored(self, backend: Backend) -> Sequence[Metric]:
        assert isinstance(backend, RethinkBackend)
        return stored_metrics(backend._connect(), backend.db)


@pytest.mark.skipif(
    real_server_url() is None,
    reason="a real RethinkDB: docker compose up -d rethinkdb, then set "
    "KANEDA_TEST_RETHINKDB_URL=rethinkdb://localhost:28015/",
)
class TestContractRealServer(TestContract):
    """The same contract against a real RethinkDB (docker compose up -d rethinkdb)."""

    store_survives_fork = True  # a real server

    @pytest.fixture
    def backend(self, db_name: str) -> Iterator[Backend]:  # type: ignore[override]
        url = f"{str(real_server_url()).rstrip('/')}/{db_name}?timeout=5"
        backend = create_backend(url)
        yield backend
        from kaneda_rethink.backend import r

        assert isinstance(backend, RethinkBackend)
        r.db_drop(db_name).run(backend._connect())
        backend.close()
