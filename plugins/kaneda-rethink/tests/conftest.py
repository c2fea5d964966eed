"""Fixtures: the backend on a rethinkdb-mock connection, or on a real server."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from rethinkdb_mock import MockThink

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def mock_connection() -> Any:
    """A connection to rethinkdb-mock: the driver's queries evaluated in memory, not a
    RethinkDB server."""
    return MockThink({"dbs": {}}).get_conn()


@pytest.fixture
def db_name() -> str:
    """A database name of this test's own."""
    return f"kaneda_{uuid.uuid4().hex[:8]}"
