"""kaneda-mongo: construction, documents, batches, time series, failures."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from kaneda_mongo import MongoBackend
from mongo_helpers import closed_port, stored_metrics
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure

from kaneda_core import DeliveryError, InvalidMetric, Metric, Metrics, connect, load_backend
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured

SECRET = "m0ngo-s3cret"


def test_registered_under_both_names() -> None:
    assert load_backend("mongodb") is MongoBackend and load_backend("mongo") is MongoBackend


def test_the_seed_import_path_is_this_class_writing_kaneda_1_0s_layout() -> None:
    import inspect

    from kaneda.backends import MongoBackend as Seed

    assert issubclass(Seed, MongoBackend) and Seed.settings_namespace == "MONGO"
    assert inspect.signature(Seed).parameters["layout"].default == "kaneda1"
    assert inspect.signature(MongoBackend).parameters["layout"].default == "kaneda2"


def test_a_real_pymongo_client_is_accepted_and_anything_else_refused() -> None:
    client: MongoClient[Any] = MongoClient("mongodb://127.0.0.1:1/", connect=False)
    assert MongoBackend("db", "m", client=client).client is client
    with pytest.raises(ImproperlyConfigured, match="not an instance of MongoClient client"):
        MongoBackend("db", "m", client=object())  # type: ignore[arg-type]


def test_constructing_with_no_server_neither_hangs_nor_raises() -> None:
    started = time.monotonic()
    backend = MongoBackend("db", "m", host="127.0.0.1", port=closed_port(), timeout=30_000)
    assert time.monotonic() - started < 1
    backend.close()


@pytest.mark.parametrize(
    ("url", "db", "collection", "timeout"),
    [
        ("mongodb://127.0.0.1:27017/app?collection_name=metrics", "app", "metrics", 300),
        (
            "mongodb://u:pw@127.0.0.1:27017/app?collection_name=m&timeout=900&authSource=admin",
            "app",
            "m",
            900,
        ),
    ],
)
def test_connect_by_url(url: str, db: str, collection: str, timeout: int) -> None:
    metrics = connect(url)
    backend = metrics.backend
    assert isinstance(backend, MongoBackend)
    assert (backend.db_name, backend.collection_name) == (db, collection)
    assert backend.client.options.server_selection_timeout == timeout / 1000
    metrics.close()


def test_srv_urls_go_to_pymongo_as_srv(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Recording:
        def __init__(self, url: str, **kwargs: Any) -> None:
            seen.append(url)

        def __getitem__(self, name: str) -> Any:
            return {"m": None}

    from kaneda_mongo import backend as module

    monkeypatch.setattr(module, "MongoClient", Recording)
    MongoBackend.from_url(
        "mongodb+srv://u:pw@cluster.example.net/app?collection_name=m&retryWrites=true"
    )
    assert seen == ["mongodb+srv://u:pw@cluster.example.net/app?retryWrites=true"]


@pytest.mark.parametrize(
    ("query", "advice"),
    [
        ("collection_name=c&timout=5", "Did you mean 'timeout'?"),
        ("collection_name=c&replicaSett=rs0", "Did you mean 'replicaset'?"),
        ("collection_name=c&colour=red", "colour"),
    ],
)
def test_an_unknown_url_option_is_refused_with_the_nearest(query: str, advice: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MongoBackend.from_url(f"mongodb://u:{SECRET}@127.0.0.1:1/app?{query}")
    message = str(caught.value)
    assert "Unknown option" in message and advice in message, message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("query", "option", "values"),
    [
        ("collection_name=a&collection_name=b", "collection_name", "'a' and 'b'"),
        ("collection_name=c&replicaSet=r1&replicaset=r2", "replicaset", "'r1' and 'r2'"),
        ("collection_name=c&timeout=5&timeout=9", "timeout", "'5' and '9'"),
    ],
)
def test_an_option_given_twice_is_refused_naming_both_values(
    query: str, option: str, values: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MongoBackend.from_url(f"mongodb://127.0.0.1:1/app?{query}")
    message = str(caught.value)
    assert f"{option} twice" in message and values in message, message


def test_a_secret_option_given_twice_shows_neither_value() -> None:
    url = (
        "mongodb://127.0.0.1:1/app?collection_name=c&tlsCertificateKeyFilePassword=qz7a"
        "&tlsCertificateKeyFilePassword=xk9b"
    )
    with pytest.raises(ConfigurationError, match="twice") as caught:
        MongoBackend.from_url(url)
    assert "qz7a" not in str(caught.value) and "xk9b" not in str(caught.value)


def test_read_preference_tags_may_be_given_more_than_once() -> None:
    url = (
        "mongodb://127.0.0.1:1/app?collection_name=c&readPreference=nearest"
        "&readPreferenceTags=dc:ny&readPreferenceTags="
    )
    backend = MongoBackend.from_url(url)
    assert backend.client.read_preference.tag_sets == [{"dc": "ny"}, {}]
    backend.close()


def test_url_without_a_collection_is_refused() -> None:
    with pytest.raises(Exception, match="names no collection_name") as caught:
        connect(f"mongodb://u:{SECRET}@127.0.0.1/app")
    assert SECRET not in str(caught.value)


def test_kaneda_url_and_settings_module(
    fake_mongo: type, names: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, collection = names
    monkeypatch.setenv("KANEDA_URL", f"mongodb://localhost:27017/{db}?collection_name={collection}")
    with Metrics() as metrics:
        metrics.gauge("from_url", 1)
    from_url = [m.name for m in stored_metrics(metrics.backend.collection)]  # type: ignore[attr-defined]
    assert from_url == ["from_url"]
    monkeypatch.delenv("KANEDA_URL")
    (tmp_path / "mongo_settings.py").write_text(
        "BACKEND = 'kaneda.backends.MongoBackend'\n"
        f"MONGO_DB_NAME = {db!r}\nMONGO_COLLECTION_NAME = {collection!r}\n"
        "MONGO_CONNECTION_URL = 'mongodb://localhost:27017/'\nMONGO_TIMEOUT = 500\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "mongo_settings")
    import kaneda

    legacy = kaneda.Metrics()
    legacy.gauge("from_settings", 2)
    sys.modules.pop("mongo_settings", None)
    names_stored = sorted(m.name for m in stored_metrics(legacy.backend.collection))  # type: ignore[attr-defined]
    assert names_stored == ["from_settings"]


# -- documents and batches --------------------------------------------------------------


def test_document_shape(fake_mongo: type, names: tuple[str, str]) -> None:
    backend = MongoBackend(*names, connection_url="mongodb://localhost:27017/")
    when = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)
    metric = Metric.create("orders", "order", {"total": 9.5}, {"shop": "eu"}, "o-1", timestamp=when)
    backend.send([metric])
    document = backend.collection.find_one({"_id": "o-1"})
    assert document is not None
    assert {k: v for k, v in document.items() if k != "timestamp"} == {
        "_id": "o-1",
        "metric": "order",
        "name": "orders",
        "value": {"total": 9.5},
        "tags": {"shop": "eu"},
        "host": metric.host,
    }
    assert document["timestamp"].replace(tzinfo=timezone.utc) == when


def test_one_insert_many_unordered_per_batch(
    fake_mongo: type, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MongoBackend(*names, connection_url="mongodb://localhost:27017/")
    calls: list[tuple[int, bool]] = []
    original = backend.collection.insert_many

    def spy(documents: Sequence[Any], ordered: bool = True) -> Any:
        calls.append((len(documents), ordered))
        return original(documents, ordered=ordered)

    monkeypatch.setattr(backend.collection, "insert_many", spy)
    with Metrics(backend, batch_size=400, flush_interval=60) as metrics:
        for i in range(1000):
            metrics.gauge("g", i)
    # One request per batch: 400, 400 and 200, unless the worker began a round while
    # the calls were still coming (it then sends what was queued: 72 and 128, say).
    assert all(not ordered for _, ordered in calls) and sum(n for n, _ in calls) == 1000
    assert max(n for n, _ in calls) == 400 and len(calls) <= 5
    assert len(stored_metrics(backend.collection)) == 1000


def test_a_retried_batch_with_ids_counts_duplicates_as_delivered(
    fake_mongo: type, names: tuple[str, str]
) -> None:
    backend = MongoBackend(*names, connection_url="mongodb://localhost:27017/")
    batch = [Metric.create("c", "order", {"n": i}, id=f"o-{i}") for i in range(5)]
    backend.send(batch[:3])
    backend.send(batch)  # the first three are duplicates: delivered already
    assert sorted(m.id for m in stored_metrics(backend.collection)) == [f"o-{i}" for i in range(5)]


def test_write_errors_other_than_duplicates_fail_those_metrics_only(
    fake_mongo: type, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MongoBackend(*names, connection_url="mongodb://localhost:27017/")
    batch = [Metric.create("c", "gauge", i) for i in range(4)]

    def failing(documents: Sequence[Any], ordered: bool = True) -> Any:
        raise BulkWriteError(
            {
                "writeErrors": [
                    {"index": 1, "code": 121, "errmsg": "Document failed validation"},
                    {"index": 3, "code": 11000, "errmsg": "E11000 duplicate key"},
                ],
                "nInserted": 2,
            }
        )

    monkeypatch.setattr(backend.collection, "insert_many", failing)
    with pytest.raises(DeliveryError) as caught:
        backend.send(batch)
    # Index 3 is a duplicate of the _id generated from its metric: stored by an earlier
    # attempt of this batch, so delivered.
    assert [m.value for m in caught.value.metrics or []] == [1]
    assert not caught.value.retryable and "Document failed validation" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ({"$where": 1}, None),
        ({"a.b": 1}, None),
        ({"ok": {"$set": 1}}, None),
        (1, {"a.b": "x"}),
        ([{"$set": 1}], None),
        ({"x": [[{"$where": 1}]]}, None),
        ({"x": [1, {"y": [{"a.b": 2}]}]}, None),
        ({"x": ({"$in": 1},)}, None),
    ],
)
def test_keys_mongodb_would_misread_are_refused_at_the_call(
    fake_mongo: type, names: tuple[str, str], value: Any, tags: Any
) -> None:
    metrics = Metrics(MongoBackend(*names, connection_url="mongodb://localhost:27017/"))
    with pytest.raises(InvalidMetric, match="operator or a path"):
        metrics.custom("c", "kind", value, tags=tags)


# -- time series --------------------------------------------------------------------------


def test_time_series_collection_is_created_once_with_meta(
    fake_mongo: type, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MongoBackend(
        *names, connection_url="mongodb://localhost:27017/", time_series=True, granularity="minutes"
    )
    database = backend.client[names[0]]
    created: list[tuple[str, dict[str, Any]]] = []

    def create_collection(name: str, timeseries: dict[str, Any]) -> Any:
        # mongomock has no time-series collections: record the request, make a plain one.
        created.append((name, timeseries))
        return database[name]

    monkeypatch.setattr(
        type(database),
        "create_collection",
        lambda self, name, **kw: create_collection(name, kw["timeseries"]),
    )
    backend.send([Metric.create("cpu", "gauge", 0.5, {"core": "0"})])
    backend.send([Metric.create("cpu", "gauge", 0.7, {"core": "0"})])
    assert created == [
        (names[1], {"timeField": "timestamp", "metaField": "meta", "granularity": "minutes"})
    ]
    document = backend.collection.find_one()
    assert document is not None and document["meta"]["name"] == "cpu"
    assert document["meta"]["tags"] == {"core": "0"} and document["value"] == 0.5


def test_time_series_on_an_old_server_is_a_clear_error(
    fake_mongo: type, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = MongoBackend(*names, connection_url="mongodb://localhost:27017/", time_series=True)
    monkeypatch.setattr(backend.client, "server_info", lambda: {"versionArray": [4, 4, 18, 0]})
    with pytest.raises(
        DeliveryError, match=r"need MongoDB 5\.0 or later; the server runs 4\.4\.18"
    ):
        backend.send([Metric.create("cpu", "gauge", 1)])


# -- failures -------------------------------------------------------------------------------


def test_no_server_is_retryable_never_raises_to_the_caller_and_hides_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"mongodb://app:{SECRET}@127.0.0.1:{closed_port()}/app?collection_name=m&timeout=100"
    metrics = connect(url, batching=False)
    metrics.gauge("g", 1)
    assert metrics.stats().failed == 1
    assert "unreachable" in caplog.text and SECRET not in caplog.text
    assert SECRET not in repr(metrics.backend)
    with pytest.raises(DeliveryError) as caught:
        metrics.backend.send([Metric.create("g", "gauge", 1)])
    assert caught.value.retryable and SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "retryable", "words"),
    [
        (OperationFailure("Authentication failed.", code=18), False, "credentials"),
        (OperationFailure("not authorized on app", code=13), False, "permission"),
        (AutoReconnect("connection closed"), True, "unreachable"),
    ],
)
def test_auth_failures_and_a_server_going_away(
    fake_mongo: type,
    names: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    retryable: bool,
    words: str,
) -> None:
    backend = MongoBackend(*names, connection_url="mongodb://localhost:27017/")

    def fail(documents: Any, ordered: bool = True) -> Any:
        raise error

    monkeypatch.setattr(backend.collection, "insert_many", fail)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    assert caught.value.retryable is retryable and words in str(caught.value)


def test_what_mongodb_cannot_store_is_refused_at_the_call() -> None:
    from kaneda_core import InvalidMetric, Metrics

    backend = MongoBackend("db", "m", host="127.0.0.1", port=1)
    metrics = Metrics(backend, flush_interval=60)
    with pytest.raises(InvalidMetric, match="64 bits"):
        metrics.gauge("g", 2**70)
    with pytest.raises(InvalidMetric, match="64 bits"):
        metrics.custom("c", "shape", {"big": [1, 2**64]})

    class Big(int):  # an int subclass (IntEnum, a numpy-like scalar) is encoded as an int
        pass

    with pytest.raises(InvalidMetric, match="64 bits"):
        metrics.gauge("g", Big(2**63))
    with pytest.raises(InvalidMetric, match="64 bits"):
        metrics.custom("c", "shape", {"big": Big(2**64)})
    with pytest.raises(InvalidMetric, match="16 MiB"):
        metrics.event("dump", "x" * 17_000_000)
    with pytest.raises(InvalidMetric, match=r"id_.*64 bits"):  # the document's _id
        metrics.custom("c", "shape", 1, id_=2**70)
    metrics.gauge("g", 2**62)  # fits
    assert metrics.stats().queued == 1
    metrics.close(0.1)
