"""Helpers shared by the kaneda-rethink tests (on sys.path through conftest.py)."""

from __future__ import annotations

import os
import socket
from datetime import timezone
from typing import Any

from kaneda_rethink.backend import r

from kaneda_core import Metric


def real_server_url() -> str | None:
    """The real RethinkDB the opt-in suite runs against, from KANEDA_TEST_RETHINKDB_URL."""
    return os.environ.get("KANEDA_TEST_RETHINKDB_URL")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stored_metrics(connection: Any, db: str) -> list[Metric]:
    """Every document of every table of ``db``, read back as Metrics."""
    if db not in r.db_list().run(connection):
        return []
    metrics = []
    for table in r.db(db).table_list().run(connection):
        for document in r.db(db).table(table).run(connection):
            timestamp = document["timestamp"].astimezone(timezone.utc)
            identifier = document["id"] if "id" in document and _given_id(document) else None
            metrics.append(
                Metric(
                    document["name"],
                    document["metric"],
                    document["value"],
                    document["tags"],
                    timestamp,
                    document["host"],
                    identifier,
                )
            )
    return metrics


def _given_id(document: dict[str, Any]) -> bool:
    # RethinkDB generates a UUID primary key for documents stored without an id.
    identifier = document["id"]
    return not (
        isinstance(identifier, str) and len(identifier) == 36 and identifier.count("-") == 4
    )
