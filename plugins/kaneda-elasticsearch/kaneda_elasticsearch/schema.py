"""The documents kaneda-elasticsearch writes, and the index template that maps them.

Every field has one type whatever the metric, so no two metrics can conflict:

- ``@timestamp`` (date_nanos): the metric's own time;
- ``name``, ``metric`` (the kind), ``host``, ``app_name``: keywords;
- ``tags``: an object whose every key is a keyword (dict tags); ``labels``: keywords
  (tags given as a list);
- ``value`` (double): a number; ``text`` (text, with a ``text.keyword``): an event's
  text or a custom string; ``flag`` (boolean): a custom bool; ``fields`` (flattened): a
  custom dict, whatever its shape (a list is kept as ``fields.items``);
- ``value_type`` (keyword): which of those holds the value: ``number``, ``text``,
  ``bool``, ``dict`` or ``list``.
"""

from __future__ import annotations

from typing import Any

from kaneda_core import Metric
from kaneda_core.identity import metric_digest


def index_template(index_name: str) -> dict[str, Any]:
    """The composable index template for ``index_name-*``."""
    return {
        "index_patterns": [f"{index_name}-*"],
        "priority": 200,
        "template": {
            "mappings": {
                "dynamic_templates": [
                    {"tags_as_keywords": {"path_match": "tags.*", "mapping": {"type": "keyword"}}}
                ],
                "properties": {
                    "@timestamp": {"type": "date_nanos"},
                    "name": {"type": "keyword"},
                    "metric": {"type": "keyword"},
                    "host": {"type": "keyword"},
                    "app_name": {"type": "keyword"},
                    "tags": {"type": "object", "dynamic": True},
                    "labels": {"type": "keyword"},
                    "value": {"type": "double"},
                    "text": {
                        "type": "text",
                        "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}},
                    },
                    "flag": {"type": "boolean"},
                    "fields": {"type": "flattened"},
                    "value_type": {"type": "keyword"},
                },
            }
        },
        "_meta": {"description": "Kaneda metrics (kaneda-elasticsearch)"},
    }


def document(metric: Metric, app_name: str) -> dict[str, Any]:
    """The document stored for ``metric``."""
    doc: dict[str, Any] = {
        "@timestamp": metric.timestamp.isoformat().replace("+00:00", "Z"),
        "name": metric.name,
        "metric": metric.kind,
        "host": metric.host,
        "app_name": app_name,
    }
    tags = metric.tags
    if isinstance(tags, dict):
        if tags:
            doc["tags"] = {key: _keyword(value) for key, value in tags.items()}
    else:
        doc["labels"] = list(tags)
    value = metric.value
    if isinstance(value, bool):
        doc["flag"], doc["value_type"] = value, "bool"
    elif isinstance(value, (int, float)):
        doc["value"], doc["value_type"] = value, "number"
    elif isinstance(value, str):
        doc["text"], doc["value_type"] = value, "text"
    elif isinstance(value, dict):
        doc["fields"], doc["value_type"] = value, "dict"
    else:
        doc["fields"], doc["value_type"] = {"items": list(value)}, "list"
    return doc


def value_of(source: dict[str, Any]) -> Any:
    """A metric's value back from its stored document."""
    kind = source.get("value_type")
    if kind == "bool":
        return source["flag"]
    if kind == "text":
        return source["text"]
    if kind == "dict":
        return source["fields"]
    if kind == "list":
        return source["fields"]["items"]
    return source.get("value")


def _keyword(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def index_for(index_name: str, metric: Metric) -> str:
    """``index_name-YYYY.MM.DD`` from the metric's own UTC day."""
    return f"{index_name}-{metric.timestamp:%Y.%m.%d}"


def document_id(metric: Metric) -> str:
    """The ``_id`` of a metric that has no ``id``: 32 hex digits, the same every time it is sent.

    :func:`kaneda_core.identity.metric_digest`, in hex. A retried or redelivered batch
    then overwrites its own documents instead of adding copies.
    """
    return metric_digest(metric).hex()
