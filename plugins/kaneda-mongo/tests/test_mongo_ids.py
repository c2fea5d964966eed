"""Ids: a batch sent again after a lost answer is stored once, in both layouts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pytest
from bson import ObjectId
from kaneda_mongo import MongoBackend
from kaneda_mongo.layouts import generated_id
from pymongo.errors import BulkWriteError

from kaneda_core import DeliveryError, Metric

WHEN = datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=timezone.utc)


def batch_without_ids() -> list[Metric]:
    return [
        Metric.create("cpu", "gauge", 0.5, {"core": "0"}),
        Metric.create("cpu", "gauge", 0.5, {"core": "1"}),
        Metric.create("orders", "order", {"items": 3}),
        Metric.create("deploy", "event", "2.4.1"),
    ]


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_a_batch_sent_again_after_a_lost_answer_is_stored_once(
    fake_mongo: type, names: tuple[str, str], layout: str
) -> None:
    backend = MongoBackend(*names, layout=layout)
    batch = batch_without_ids()
    first = backend.send(batch)
    again = backend.send(batch)  # the answer was lost: the dispatcher sends it again
    assert backend.collection.count_documents({}) == len(batch)
    assert [a.inserted_id for a in first] == [a.inserted_id for a in again]
    assert [a.inserted_id for a in first] == [generated_id(m) for m in batch]


def test_the_generated_id_is_the_time_and_a_hash_of_host_time_kind_name_and_tags() -> None:
    base = Metric.create("cpu", "gauge", 0.5, {"a": "1", "b": "2"}, timestamp=WHEN)
    same = base._replace(value=0.9, tags={"b": "2", "a": "1"})  # a later value of the point
    assert generated_id(base) == generated_id(same)
    # An ObjectId like the server's, its time the metric's: _id still sorts by time.
    assert isinstance(generated_id(base), ObjectId)
    assert generated_id(base).generation_time == WHEN.replace(microsecond=0)
    others = [
        base._replace(host="web-2"),
        base._replace(time_ns=base.epoch_ns + 1),
        base._replace(kind="counter"),
        base._replace(name="cpu2"),
        base._replace(tags={"a": "1"}),
        base._replace(tags={"a": "1", "b": "2", "c": "3"}),
        # Parts that would run together if joined without a separator.
        base._replace(name="cpu", kind="gaugec", host=base.host),
        base._replace(tags=["a:1", "b:2"]),
    ]
    ids = {generated_id(m) for m in others}
    assert generated_id(base) not in ids and len(ids) == len(others)
    assert generated_id(base._replace(name="ab", kind="c")) != generated_id(
        base._replace(name="a", kind="bc")
    )


def test_a_given_id_is_kept_and_time_series_get_none(fake_mongo: type) -> None:
    given = Metric.create("c", "order", {"n": 1}, id="o-1")
    assert MongoBackend("db", "m").document(given)["_id"] == "o-1"
    # A time-series collection has no unique _id: an id there would de-duplicate nothing.
    plain = Metric.create("cpu", "gauge", 1)
    assert "_id" not in MongoBackend("db", "m", time_series=True).document(plain)


def test_kaneda1_keeps_1_0s_ids_and_generates_only_where_1_0_let_the_server(
    fake_mongo: type,
) -> None:
    backend = MongoBackend("db", "m", layout="kaneda1")
    zero = Metric.create("g", "gauge", 7, id=0)  # 1.0 dropped id_=0: the server chose
    assert backend.document(zero)["_id"] == generated_id(zero)
    assert list(backend.document(zero)) == ["host", "name", "value", "timestamp", "metric", "_id"]
    own = Metric.create("orders", "order", {"_id": "o-1", "total": 3})
    assert backend.document(own)["_id"] == "o-1"  # the value's own _id, as 1.0 stored it


def test_kaneda1_a_custom_value_with_its_own_id_sent_twice_is_stored_not_failed(
    fake_mongo: type, names: tuple[str, str]
) -> None:
    backend = MongoBackend(*names, layout="kaneda1")
    report = Metric.create("orders", "order", {"_id": "o-1", "total": 3})
    backend.send([report])
    answers = backend.send([Metric.create("orders", "order", {"_id": "o-1", "total": 3})])
    assert [a.inserted_id for a in answers] == ["o-1"]
    assert backend.collection.count_documents({}) == 1


def test_a_duplicate_on_another_unique_index_still_fails(
    fake_mongo: type, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MongoBackend(*names)
    batch = batch_without_ids()[:2]

    def failing(documents: Sequence[Any], ordered: bool = True) -> Any:
        raise BulkWriteError(
            {
                "writeErrors": [
                    {
                        "index": 0,
                        "code": 11000,
                        "errmsg": "E11000 duplicate key error index: _id_ dup key",
                        "keyPattern": {"_id": 1},
                    },
                    {
                        "index": 1,
                        "code": 11000,
                        "errmsg": "E11000 duplicate key error index: name_1 dup key",
                        "keyPattern": {"name": 1},
                    },
                ],
                "nInserted": 0,
            }
        )

    monkeypatch.setattr(backend.collection, "insert_many", failing)
    with pytest.raises(DeliveryError) as caught:
        backend.send(batch)
    assert caught.value.metrics == [batch[1]] and "name_1" in str(caught.value)
