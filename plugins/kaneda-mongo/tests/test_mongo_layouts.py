"""The two layouts of kaneda-mongo: chosen by argument or URL, stored as described."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from kaneda_mongo import MongoBackend

from kaneda_core import ConfigurationError, Metric, create_backend

WHEN = datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=timezone.utc)


def metric(kind: str, value: object, tags: object = None, id_: object = None) -> Metric:
    made = Metric.create("shop.order", kind, value, tags, id_, timestamp=WHEN)  # type: ignore[arg-type]
    return made._replace(host="web-1")


def test_layout_by_argument_and_url(fake_mongo: type) -> None:
    assert MongoBackend("db", "m").layout == "kaneda2"
    assert MongoBackend("db", "m", layout="kaneda1").layout == "kaneda1"
    backend = create_backend("mongodb://localhost:27017/db?collection_name=m&layout=kaneda1")
    assert backend.layout == "kaneda1"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"layout must be one of .* got 'mongo1'"):
        MongoBackend("db", "m", layout="mongo1")


def test_kaneda1_documents_are_1_0s(fake_mongo: type) -> None:
    backend = MongoBackend("db", "m", layout="kaneda1")
    assert backend.document(metric("order", {"items": 3, "name": "mine"}, ["vip"], "o-1")) == {
        "host": "web-1",
        "name": "mine",  # 1.0 let a dict's own keys overwrite host and name
        "items": 3,
        "tags": ["vip"],
        "timestamp": WHEN,
        "metric": "order",
        "_id": "o-1",
    }
    plain = backend.document(metric("gauge", 7, id_=0))
    # No tags, no id 0: where 1.0 let the server choose the _id, it is generated.
    assert list(plain) == ["host", "name", "value", "timestamp", "metric", "_id"]


def test_kaneda2_documents_are_unchanged(fake_mongo: type) -> None:
    document = MongoBackend("db", "m").document(metric("gauge", 7, {"k": "v"}, 0))
    assert document == {
        "timestamp": WHEN,
        "metric": "gauge",
        "name": "shop.order",
        "value": 7,
        "tags": {"k": "v"},
        "host": "web-1",
        "_id": 0,
    }


def test_send_answers_an_insert_result_per_metric(fake_mongo: type) -> None:
    backend = MongoBackend("db", "m", layout="kaneda1")
    later = metric("gauge", 3)._replace(name="shop.refund")  # not the point of gauge 2
    answers = backend.send([metric("gauge", 1, id_="a"), metric("gauge", 2), later])
    stored = [document["_id"] for document in backend.collection.find()]
    assert [answer.inserted_id for answer in answers] == stored
    assert answers[0].inserted_id == "a" and all(answer.acknowledged for answer in answers)
