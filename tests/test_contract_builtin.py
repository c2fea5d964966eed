"""The backend contract, run on the built-in backends."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from kaneda_core import Backend, Metric
from kaneda_core.backends import LoggerBackend, MemoryBackend
from kaneda_core.testing import BackendContract


class TestMemoryContract(BackendContract):
    store_survives_fork = False  # an in-memory store: a forked child has its own copy

    supports_ids = False  # it keeps everything it receives, duplicates included

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield MemoryBackend()

    def stored(self, backend: Backend) -> Sequence[Metric]:
        assert isinstance(backend, MemoryBackend)
        return list(backend.metrics)


class TestLoggerContract(BackendContract):
    supports_ids = False

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        backend = LoggerBackend(filename=str(tmp_path / "metrics.jsonl"))
        yield backend
        backend.close()

    @pytest.fixture
    def unreachable_backend(self) -> Iterator[Backend]:
        # The logger's "server" is its file; its transient failure is a full disk, which
        # /dev/full is. (A folder that does not exist is no outage: see test_logger.py.)
        backend = LoggerBackend(filename="/dev/full")
        yield backend
        backend.close()

    def stored(self, backend: Backend) -> Sequence[Metric]:
        assert isinstance(backend, LoggerBackend)
        path = Path(backend.filename)
        if not path.exists():
            return []
        return [from_json_line(line) for line in path.read_text("utf-8").splitlines()]


def from_json_line(line: str) -> Metric:
    """A metric back from one of the logger backend's JSON lines."""
    record = json.loads(line)
    timestamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    return Metric(
        record["name"],
        record["metric"],
        record["value"],
        record["tags"],
        timestamp,
        record["host"],
        record.get("id"),
    )
