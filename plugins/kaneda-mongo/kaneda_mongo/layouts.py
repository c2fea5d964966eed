"""The two stored layouts of kaneda-mongo, side by side: one document per metric.

``kaneda2`` (the default)::

    {"_id": <id_ if given>, "timestamp": <date>, "metric": <kind>, "name": ...,
     "value": <the value, a custom dict kept whole>, "tags": {...}, "host": ...}

and, in a time-series collection, ``{"timestamp", "meta": {name, metric, host, tags},
"value"}``.

``kaneda1``, exactly what kaneda 1.0 wrote::

    {"host": ..., "name": ..., "value": <the value> | <a custom dict's own keys>,
     "tags": <only when given>, "timestamp": <date>, "metric": <kind>, "_id": <id_ if given>}

A custom dict's keys sit at the top level (where 1.0 let them overwrite ``host`` and
``name``), and ``tags`` is left out when there are none. Both layouts store the metric's
own time (kaneda 1.0 stored the time of the write).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaneda_core import Metric
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
    return document


def kaneda1_document(metric: Metric, time_series: bool) -> dict[str, Any]:
    """kaneda 1.0's document for ``metric``, key for key (the same in a time series)."""
    document = kaneda1_payload(metric)
    document["timestamp"] = metric.timestamp
    document["metric"] = metric.kind
    if metric.id:  # 1.0 kept an id only when it was truthy
        document["_id"] = metric.id
    return document


LAYOUTS: dict[str, Layout] = {KANEDA2: kaneda2_document, KANEDA1: kaneda1_document}
