"""Helpers shared by the kaneda-elasticsearch tests (on sys.path through conftest.py)."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from typing import Any

from kaneda_elasticsearch.schema import value_of

from kaneda_core import Metric


def real_server_url() -> str | None:
    """The real Elasticsearch the opt-in suite runs against (KANEDA_TEST_ELASTICSEARCH_URL)."""
    return os.environ.get("KANEDA_TEST_ELASTICSEARCH_URL")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def to_metric(doc_id: str | None, source: dict[str, Any]) -> Metric:
    """A stored document back as a Metric."""
    tags: Any = source.get("tags", {}) if "labels" not in source else source["labels"]
    timestamp = datetime.fromisoformat(source["@timestamp"].replace("Z", "+00:00"))
    return Metric(
        source["name"],
        source["metric"],
        value_of(source),
        tags,
        timestamp,
        source["host"],
        doc_id,
    )
