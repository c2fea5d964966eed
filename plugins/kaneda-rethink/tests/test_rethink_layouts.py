"""The two layouts of kaneda-rethink: chosen by argument or URL, stored as described."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from kaneda_rethink import RethinkBackend
from kaneda_rethink.backend import r

from kaneda_core import ConfigurationError, Metric, create_backend

WHEN = datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=timezone.utc)


def metric(kind: str, value: object, tags: object = None, id_: object = None) -> Metric:
    made = Metric.create("shop.order", kind, value, tags, id_, timestamp=WHEN)  # type: ignore[arg-type]
    return made._replace(host="web-1")


def test_layout_by_argument_and_url() -> None:
    assert RethinkBackend("db").layout == "kaneda2"
    assert RethinkBackend("db", layout="kaneda1").layout == "kaneda1"
    backend = create_backend("rethinkdb://localhost:28015/db?layout=kaneda1")
    assert backend.layout == "kaneda1"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"layout must be one of .* got 'x'"):
        RethinkBackend("db", layout="x")


def test_kaneda1_documents_are_1_0s() -> None:
    backend = RethinkBackend("db", layout="kaneda1")
    assert backend.document(metric("order", {"items": 3}, {"k": "v"}, "o-1")) == {
        "host": "web-1",
        "name": "shop.order",
        "items": 3,
        "tags": {"k": "v"},
        "timestamp": WHEN,
        "id": "o-1",  # and no kind: 1.0 kept it only as the table's name
    }
    # Where 1.0 let the server choose the id (id_=0 was dropped), it is generated.
    assert list(backend.document(metric("gauge", 7, id_=0))) == [
        "host",
        "name",
        "value",
        "timestamp",
        "id",
    ]


def test_kaneda1_tables_are_named_after_the_kind(mock_connection: Any, db_name: str) -> None:
    backend = RethinkBackend(db_name, connection=mock_connection, layout="kaneda1")
    # Two gauges of one series at one instant would be one point (one generated id).
    later = metric("gauge", 3)._replace(name="shop.refund")
    answers = backend.send([metric("gauge", 1), metric("order", {"items": 2}), later])
    assert sorted(r.db(db_name).table_list().run(mock_connection)) == ["gauge", "order"]
    gauges = sorted(d["value"] for d in r.db(db_name).table("gauge").run(mock_connection))
    assert gauges == [1, 3]
    # Each metric's answer is its table's insert result (1.0's answer for one insert).
    assert [answer["inserted"] for answer in answers] == [2, 1, 2]
