"""The two stored layouts of kaneda-rethink, side by side: one document per metric.

Both put a metric in the table named after its kind (``gauge``, ``counter``, ``timing``,
``event`` or a custom metric's name) unless the backend has a ``table_name``.

``kaneda2`` (the default)::

    {"id": <id_ if given>, "timestamp": <time>, "metric": <kind>, "name": ...,
     "value": <the value, a custom dict kept whole>, "tags": {...}, "host": ...}

``kaneda1``, exactly what kaneda 1.0 wrote::

    {"host": ..., "name": ..., "value": <the value> | <a custom dict's own keys>,
     "tags": <only when given>, "timestamp": <time>, "id": <id_ if given>}

kaneda 1.0 kept no kind in the document: with a ``table_name``, the kind is not stored.
Both store the metric's own time (kaneda 1.0 stored the server's ``r.now()``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaneda_core import Metric
from kaneda_core.layouts import KANEDA1, KANEDA2, kaneda1_payload
from kaneda_core.model import record

Layout = Callable[[Metric], dict[str, Any]]


def kaneda2_document(metric: Metric) -> dict[str, Any]:
    """This version's document for ``metric``."""
    document = record(metric)  # its aware timestamp becomes a RethinkDB time
    if metric.id is not None:
        document["id"] = metric.id
    return document


def kaneda1_document(metric: Metric) -> dict[str, Any]:
    """kaneda 1.0's document for ``metric``, key for key."""
    document = kaneda1_payload(metric)
    document["timestamp"] = metric.timestamp
    if metric.id:  # 1.0 kept an id only when it was truthy
        document["id"] = metric.id
    return document


LAYOUTS: dict[str, Layout] = {KANEDA2: kaneda2_document, KANEDA1: kaneda1_document}
