"""Hook implementations, each switched on by an environment variable.

- ``KANEDA_EXAMPLE_TAGS=service=shop,region=eu``: default tags on every metric.
- ``KANEDA_EXAMPLE_DROP=debug.``: drop metrics whose name starts with that prefix.
- ``KANEDA_EXAMPLE_DEAD_LETTER=/var/log/kaneda-failed.jsonl``: metrics that could not
  be delivered are appended there as JSON lines, to be replayed later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from kaneda_core import Backend, Metric
from kaneda_core.hookspecs import hookimpl


@hookimpl
def kaneda_default_tags(backend: Backend) -> dict[str, str] | None:
    """Tags from ``KANEDA_EXAMPLE_TAGS`` (``key=value,key=value``)."""
    raw = os.environ.get("KANEDA_EXAMPLE_TAGS", "")
    pairs = (item.partition("=") for item in raw.split(",") if item)
    return {key: value for key, _, value in pairs} or None


@hookimpl
def kaneda_filter_metric(metric: Metric) -> bool | None:
    """Drop metrics whose name starts with ``KANEDA_EXAMPLE_DROP``."""
    prefix = os.environ.get("KANEDA_EXAMPLE_DROP")
    if prefix and metric.name.startswith(prefix):
        return False
    return None


@hookimpl
def kaneda_batch_failed(metrics: Sequence[Metric], error: BaseException, backend: Backend) -> None:
    """Append undeliverable metrics to the ``KANEDA_EXAMPLE_DEAD_LETTER`` file."""
    path = os.environ.get("KANEDA_EXAMPLE_DEAD_LETTER")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as dead_letter:
        for m in metrics:
            record = {
                "timestamp": m.timestamp.isoformat(),
                "metric": m.kind,
                "name": m.name,
                "value": m.value,
                "tags": m.tags,
                "id": m.id,
                "backend": type(backend).__name__,
                "error": str(error),
            }
            dead_letter.write(json.dumps(record) + "\n")
