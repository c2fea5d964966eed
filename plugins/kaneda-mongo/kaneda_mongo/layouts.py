"""The two stored layouts of kaneda-mongo, side by side: one document per metric.

``kaneda2`` (the default)::

    {"_id": <id_ if given, else generated_id()>, "timestamp": <date>, "metric": <kind>, "name": ...,
     "value": <the value, a custom dict kept whole>, "tags": {...}, "host": ...}

and, in a time-series collection, ``{"timestamp", "meta": {name, metric, host, tags},
"value"}``.

``kaneda1``, exactly what kaneda 1.0 wrote::

    {"host": ..., "name": ..., "value": <the value> | <a custom dict's own keys>,
     "tags": <only when given>, "timestamp": <date>, "metric": <kind>, "_id": <id_ if given>}

where 1.0 let the server choose the ``_id`` (no ``id_``, or ``id_=0``, and no ``_id`` of a
custom dict's own), it is :func:`generated_id`, of the type the server would have made
(kaneda 1.0 stored), but the same on every send of the metric.

A custom dict's keys sit at the top level (where 1.0 let them overwrite ``host`` and
``name``), and ``tags`` is left out when there are none. Both layouts store the metric's
own time (kaneda 1.0 stored the time of the write). A time-series collection has no
unique ``_id``, so there a metric without an id gets none (MongoDB assigns an ObjectId).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import ObjectId

from kaneda_core import Metric
from kaneda_core.identity import metric_digest
from kaneda_core.layouts import KANEDA1, KANEDA2, kaneda1_payload
from kaneda_core.model import record

Layout = Callable[[Metric, bool], dict[str, Any]]


def kaneda2_document(metric: Metric, time_series: bool) -> dict[str, Any]:
    """This version's document for ``metric`` (its time-series form if asked)."""
    if time_series:
        document: dict[str, Any] = {
            "timestamp": metric.timestamp,
            "meta": {
                "name": metric.name,
                "metric": metric.kind,
                "host": metric.host,
                "tags": metric.tags,
            },
            "value": metric.value,
        }
    else:
        document = record(metric)
    if metric.id is not None:
        document["_id"] = metric.id
    elif not time_series:  # a time series has no unique _id: an id would buy nothing
        document["_id"] = generated_id(metric)
    return document


def kaneda1_document(metric: Metric, time_series: bool) -> dict[str, Any]:
    """kaneda 1.0's document for ``metric``, key for key (the same in a time series)."""
    document = kaneda1_payload(metric)
    document["timestamp"] = metric.timestamp
    document["metric"] = metric.kind
    if metric.id:  # 1.0 kept an id only when it was truthy
        document["_id"] = metric.id
    elif "_id" not in document and not time_series:
        # Where 1.0 let the server choose (a custom value's own _id is kept, as in 1.0).
        document["_id"] = generated_id(metric)
    return document


def generated_id(metric: Metric) -> ObjectId:
    """The ``_id`` of a metric reported without an id: the same on every send of it.

    An ObjectId, the type MongoDB would have made (and kaneda 1.0 stored): its first four
    bytes the metric's time in seconds, as in any ObjectId (so ``_id`` sorts by time and
    ``generation_time`` reads it), the other eight from
    :func:`kaneda_core.identity.metric_digest`. A batch sent again after its answer was
    lost then meets its own documents, not copies.
    """
    seconds = (metric.epoch_ns // 1_000_000_000) % 2**32  # ObjectId's own wrap-around
    return ObjectId(seconds.to_bytes(4, "big") + metric_digest(metric)[:8])


LAYOUTS: dict[str, Layout] = {KANEDA2: kaneda2_document, KANEDA1: kaneda1_document}
