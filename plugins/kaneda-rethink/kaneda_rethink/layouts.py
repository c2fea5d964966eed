"""The two stored layouts of kaneda-rethink, side by side: one document per metric.

Both put a metric in the table named after its kind (``gauge``, ``counter``, ``timing``,
``event`` or a custom metric's name) unless the backend has a ``table_name``.

``kaneda2`` (the default)::

    {"id": <id_ if given, else generated_id()>, "timestamp": <time>, "metric": <kind>, "name": ...,
     "value": <the value, a custom dict kept whole>, "tags": {...}, "host": ...}

``kaneda1``, exactly what kaneda 1.0 wrote::

    {"host": ..., "name": ..., "value": <the value> | <a custom dict's own keys>,
     "tags": <only when given>, "timestamp": <time>, "id": <id_ if given>}

where 1.0 let the server choose the ``id`` (no ``id_``, or ``id_=0``, and no ``id`` of a
custom dict's own), it is :func:`generated_id`, of the type the server would have made
(kaneda 1.0 stored), but the same on every send of the metric.

kaneda 1.0 kept no kind in the document: with a ``table_name``, the kind is not stored.
Both store the metric's own time (kaneda 1.0 stored the server's ``r.now()``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from kaneda_core import Metric
from kaneda_core.identity import metric_digest
from kaneda_core.layouts import KANEDA1, KANEDA2, kaneda1_payload
from kaneda_core.model import record

Layout = Callable[[Metric], dict[str, Any]]


def kaneda2_document(metric: Metric) -> dict[str, Any]:
    """This version's document for ``metric``."""
    document = record(metric)  # its aware timestamp becomes a RethinkDB time
    document["id"] = generated_id(metric) if metric.id is None else metric.id
    return document


def kaneda1_document(metric: Metric) -> dict[str, Any]:
    """kaneda 1.0's document for ``metric``, key for key."""
    document = kaneda1_payload(metric)
    document["timestamp"] = metric.timestamp
    if metric.id:  # 1.0 kept an id only when it was truthy
        document["id"] = metric.id
    elif "id" not in document:
        # Where 1.0 let the server choose (a custom value's own id is kept, as in 1.0).
        document["id"] = generated_id(metric)
    return document


def generated_id(metric: Metric) -> str:
    """The ``id`` of a metric reported without an id: the same on every send of it.

    :func:`kaneda_core.identity.metric_digest` written as a UUID, the form of the ids
    RethinkDB makes (and kaneda 1.0 stored). A batch sent again after its answer was lost
    then meets its own documents, not copies.
    """
    return str(uuid.UUID(bytes=metric_digest(metric)))


LAYOUTS: dict[str, Layout] = {KANEDA2: kaneda2_document, KANEDA1: kaneda1_document}
