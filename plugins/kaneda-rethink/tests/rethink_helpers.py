"""Helpers shared by the kaneda-rethink tests (on sys.path through conftest.py)."""

from __future__ import annotations

import os
import re
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


#: The keys of a kaneda 1.0 layout document that are not a custom dict's own.
KANEDA1_KEYS = frozenset(("id", "host", "name", "tags", "timestamp"))


def stored_metrics(connection: Any, db: str) -> list[Metric]:
    """Every document of every table of ``db``, read back as Metrics (either layout).

    kaneda 1.0's layout keeps no kind: the table's name stands in for it.
    """
    if db not in r.db_list().run(connection):
        return []
    metrics = []
    for table in r.db(db).table_list().run(connection):
        for document in r.db(db).table(table).run(connection):
            timestamp = document["timestamp"].astimezone(timezone.utc)
            identifier = document["id"] if "id" in document and _given_id(document) else None
            if "value" in document:
                value = document["value"]
            else:  # kaneda 1.0's layout: a custom dict's keys at the top level
                value = {k: v for k, v in document.items() if k not in KANEDA1_KEYS}
            metrics.append(
                Metric(
                    document["name"],
                    document.get("metric", table),
                    value,
                    document.get("tags", {}),  # kaneda 1.0's layout leaves out empty tags
                    timestamp,
                    document["host"],
                    identifier,
                )
            )
    return metrics


def _given_id(document: dict[str, Any]) -> bool:
    # Without an id_ the backend generates one (32 hex digits); RethinkDB generated a
    # UUID for documents stored without any.
    identifier = document["id"]
    if not isinstance(identifier, str):
        return True
    generated = re.fullmatch("[0-9a-f]{32}", identifier) is not None
    return not (generated or (len(identifier) == 36 and identifier.count("-") == 4))
