"""The two stored layouts of kaneda-elasticsearch, side by side.

Both write one document per metric into the daily index ``index_name-YYYY.MM.DD`` (the
metric's own UTC day), with the metric's ``id_`` as ``_id`` when it has one.

``kaneda2`` (the default, :mod:`kaneda_elasticsearch.schema`): one type per field
whatever the metric (``value`` a double, ``text``, ``flag``, ``fields`` flattened, ...).

``kaneda1``, the documents kaneda 1.0 wrote::

    {"host": ..., "name": ..., "value": <the value> | <a custom dict's own keys>,
     "tags": <only when given>, "app_name": ..., "@timestamp": "2026-11-25T10:00:00.250000",
     "metric": <kind>}

kaneda 1.0 kept the kind as the document's ``_type``, which Elasticsearch 7 removed; this
layout keeps it in the ``metric`` field instead (the only key 1.0 did not write), where a
query filters on it (``metric:gauge`` for 1.0's ``_type:gauge``). ``@timestamp`` is
written as 1.0's client wrote it: ISO 8601 without a zone, in UTC. The index template of
this layout maps only ``@timestamp`` (a date), ``metric`` (a keyword) and ``value`` (a
double with ``ignore_malformed``, as an event's text shares the field with numbers);
every other field is left to Elasticsearch's dynamic mapping, as 1.0's were.
"""

from __future__ import annotations

from typing import Any

from kaneda_core import Metric
from kaneda_core.layouts import KANEDA1, KANEDA2, kaneda1_payload

from . import schema


class Layout:
    """The documents of one layout and the index template that maps them."""

    name = ""

    def document(self, metric: Metric, app_name: str) -> dict[str, Any]:
        """The document stored for ``metric``."""
        raise NotImplementedError

    def index_template(self, index_name: str) -> dict[str, Any]:
        """The composable index template for ``index_name-*``."""
        raise NotImplementedError


class Kaneda2Layout(Layout):
    """This version's layout: one type per field."""

    name = KANEDA2

    def document(self, metric: Metric, app_name: str) -> dict[str, Any]:
        return schema.document(metric, app_name)

    def index_template(self, index_name: str) -> dict[str, Any]:
        return schema.index_template(index_name)


class Kaneda1Layout(Layout):
    """kaneda 1.0's documents, with the kind in ``metric``."""

    name = KANEDA1

    def document(self, metric: Metric, app_name: str) -> dict[str, Any]:
        document = kaneda1_payload(metric)
        document["app_name"] = app_name
        # As 1.0's client serialized datetime.utcnow(): no zone, microseconds unless 0.
        document["@timestamp"] = metric.timestamp.replace(tzinfo=None).isoformat()
        document["metric"] = metric.kind
        return document

    def index_template(self, index_name: str) -> dict[str, Any]:
        return {
            "index_patterns": [f"{index_name}-*"],
            "priority": 200,
            "template": {
                "mappings": {
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "metric": {"type": "keyword"},
                        "value": {"type": "double", "ignore_malformed": True},
                    }
                }
            },
            "_meta": {"description": "Kaneda metrics, kaneda 1.0's layout (kaneda-elasticsearch)"},
        }


LAYOUTS: dict[str, type[Layout]] = {KANEDA2: Kaneda2Layout, KANEDA1: Kaneda1Layout}
