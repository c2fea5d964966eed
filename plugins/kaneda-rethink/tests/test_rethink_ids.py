"""Ids: a batch sent again after a lost answer is stored once, in both layouts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kaneda_rethink import RethinkBackend
from kaneda_rethink.backend import r
from kaneda_rethink.layouts import generated_id

from kaneda_core import Metric


def batch_without_ids() -> list[Metric]:
    return [
        Metric.create("cpu", "gauge", 0.5, {"core": "0"}),
        Metric.create("cpu", "gauge", 0.5, {"core": "1"}),
        Metric.create("orders", "order", {"items": 3}),
    ]


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_a_batch_sent_again_after_a_lost_answer_is_stored_once(
    mock_connection: Any, db_name: str, layout: str
) -> None:
    backend = RethinkBackend(db_name, "metrics", connection=mock_connection, layout=layout)
    batch = batch_without_ids()
    backend.send(batch)
    backend.send(batch)
    stored = r.db(db_name).table("metrics").run(mock_connection)
    assert sorted(d["id"] for d in stored) == sorted(generated_id(m) for m in batch)


def test_the_id_is_generated_only_without_one(mock_connection: Any) -> None:
    metric = Metric.create("cpu", "gauge", 1)
    assert RethinkBackend("db").document(metric)["id"] == generated_id(metric)
    assert RethinkBackend("db").document(metric._replace(id="x"))["id"] == "x"
    # A UUID, the form of the ids RethinkDB makes.
    assert str(uuid.UUID(generated_id(metric))) == generated_id(metric)
    assert generated_id(metric) != generated_id(metric._replace(name="cpu2"))
    old = RethinkBackend("db", layout="kaneda1")
    assert old.document(metric._replace(id=0))["id"] == generated_id(metric)  # 1.0: server's
    own = Metric.create("orders", "order", {"id": "o-1", "total": 3})
    assert old.document(own)["id"] == "o-1"  # the value's own id, as 1.0 stored it


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_the_answer_lists_the_ids_kaneda_generated_as_rethinkdb_would(
    mock_connection: Any, db_name: str, layout: str
) -> None:
    backend = RethinkBackend(db_name, "metrics", connection=mock_connection, layout=layout)
    given = Metric.create("cpu", "gauge", 0.7, {"core": "2"}, id="mine")
    batch = [*batch_without_ids(), given]
    answers = backend.send(batch)
    expected = [generated_id(m) for m in batch[:3]]
    assert [answer["generated_keys"] for answer in answers] == [expected] * 4
    assert answers[0]["inserted"] == 4
