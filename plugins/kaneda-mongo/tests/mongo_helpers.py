"""Helpers shared by the kaneda-mongo tests (on sys.path through conftest.py)."""

from __future__ import annotations

import os
import re
import socket
from datetime import timezone
from typing import Any

from kaneda_core import Metric


def real_server_url() -> str | None:
    """The real MongoDB the opt-in suite runs against, from KANEDA_TEST_MONGO_URL."""
    return os.environ.get("KANEDA_TEST_MONGO_URL")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: The keys of a kaneda 1.0 layout document that are not a custom dict's own.
KANEDA1_KEYS = frozenset(("_id", "host", "name", "tags", "timestamp", "metric"))


def stored_metrics(collection: Any) -> list[Metric]:
    """Every document of ``collection`` read back as a Metric (either layout)."""
    metrics = []
    for document in collection.find():
        meta = document.get("meta")
        source = meta if meta is not None else document
        timestamp = document["timestamp"]
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=timezone.utc)
        identifier = document["_id"] if _given_id(document["_id"]) else None
        if "value" in document:
            value = document["value"]
        else:  # kaneda 1.0's layout: a custom dict's keys at the top level
            value = {k: v for k, v in document.items() if k not in KANEDA1_KEYS}
        metrics.append(
            Metric(
                source["name"],
                source["metric"],
                value,
                source.get("tags", {}),  # kaneda 1.0's layout leaves out empty tags
                timestamp,
                source["host"],
                identifier,
            )
        )
    return metrics


def _given_id(identifier: Any) -> bool:
    """Not an ObjectId MongoDB assigned, nor an id generated from the metric (32 hex)."""
    if isinstance(identifier, str):
        return re.fullmatch("[0-9a-f]{32}", identifier) is None
    return isinstance(identifier, int)
