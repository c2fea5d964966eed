"""Fixtures: the backend over mongomock (pymongo's API, in memory) or a real server."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mongomock
import pytest
from kaneda_mongo import backend as backend_module

sys.path.insert(0, str(Path(__file__).parent))

from mongo_helpers import stored_metrics


@pytest.fixture
def fake_mongo(monkeypatch: pytest.MonkeyPatch) -> type:
    """Swap pymongo's MongoClient for mongomock's inside kaneda_mongo (construction and
    the client type check both see mongomock's class), so the backend's own code runs
    unchanged against an in-memory MongoDB."""
    monkeypatch.setattr(backend_module, "MongoClient", mongomock.MongoClient)
    return mongomock.MongoClient


@pytest.fixture
def names() -> tuple[str, str]:
    """A database and a collection of this test's own."""
    return f"kaneda_{uuid.uuid4().hex[:8]}", "metrics"


@pytest.fixture
def read_back() -> Iterator[Any]:
    yield stored_metrics
