"""The ``kaneda`` face stores the documents and log lines genuine kaneda 1.0 stores.

The same calls go through kaneda 1.0 (from PyPI, in a subprocess) and through this
project's ``kaneda`` package, for MongoDB, RethinkDB, Elasticsearch and the logger;
every document (or line) must have the same keys, in the same order, with the same
values, but for the time (each side's own). Neither a MongoDB, a RethinkDB nor an
Elasticsearch server runs here, so kaneda 1.0's writes are captured where they leave
it:

- MongoDB: 1.0's backend inserts into a mongomock collection (pymongo's API in memory);
  the face's plugin runs on mongomock too.
- RethinkDB: 1.0 used the driver's module-level API (``import rethinkdb as r;
  r.table(...)``), which today's driver (2.4) moved to ``rethinkdb.r``, and relied on a
  connection's default database, which rethinkdb-mock does not resolve: it is given
  today's ``r`` with ``r.table(name)`` in its database, on a rethinkdb-mock connection.
- Elasticsearch: 1.0 called ``client.index(..., doc_type=kind, body=...)``, which
  today's client no longer accepts: a client subclass records each call and the JSON
  the client's serializer makes of the body. The face writes to a local fake server
  speaking the bulk API (``plugins/kaneda-elasticsearch/tests/fake_elasticsearch.py``).
- The logger writes to files.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mongomock
import pytest
from fake_elasticsearch import FakeElasticsearch
from genuine import run_kaneda1
from rethinkdb import r
from rethinkdb_mock import MockThink

import kaneda
import kaneda.backends

Call = tuple[str, list[Any], dict[str, Any]]

CALLS: list[Call] = [
    ("gauge", ["users.online", 123], {}),
    ("gauge", ["load", 0.75], {"tags": {"region": "eu-west", "core": 2, "hot": True}}),
    ("increment", ["page.views"], {}),
    ("decrement", ["credit.usage"], {"tags": ["plan:pro", "beta"]}),
    ("timing", ["query.response.time", 0.26], {}),
    ("event", ["server.status", "Too much requests"], {"tags": {"level": "warn"}}),
    (
        "custom",
        ["availability.request"],
        {
            "metric": "xml_response",
            "value": {"status": "ok", "xml": "<xml/>", "sizes": [1, 2], "meta": {"a": 1}},
            "tags": ["test"],
            "id_": "2B75D750",
        },
    ),
    ("custom", ["overwrites"], {"metric": "shape", "value": {"name": "mine", "host": "h2"}}),
    ("custom", ["flag"], {"metric": "flag", "value": True, "id_": 0}),
    ("custom", ["note"], {"metric": "note", "value": "text", "id_": 17}),
    ("gauge", ["maintenance.on", True], {}),  # 1.0 stored a bool as given
    ("timing", ["cache.hit", False], {"tags": {"tier": "l1"}}),
]

ISO_NAIVE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?")


def calls_script() -> str:
    return f"""
        answers = []
        for method, args, kwargs in json.loads({json.dumps(CALLS)!r}):
            answers.append(getattr(metrics, method)(*args, **kwargs))
    """


def face_calls(backend: Any) -> list[Any]:
    metrics = kaneda.Metrics(backend=backend)
    answers = [getattr(metrics, method)(*args, **kwargs) for method, args, kwargs in CALLS]
    assert metrics.stats().failed == 0
    return answers


def close_in_time(*times: datetime) -> bool:
    return max(times) - min(times) < timedelta(minutes=5)


# -- MongoDB ---------------------------------------------------------------------------


def mongo_shape(document: dict[str, Any]) -> dict[str, Any]:
    """A document with its time and generated id replaced by their types."""
    shaped = dict(document)
    shaped["timestamp"] = type(document["timestamp"]).__name__
    if not isinstance(document["_id"], (str, int)):
        shaped["_id"] = type(document["_id"]).__name__
    return shaped


def test_mongo_documents_are_kaneda_1_0s(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = run_kaneda1(
        """
        import json, mongomock
        from kaneda import Metrics
        from kaneda.backends import MongoBackend

        backend = MongoBackend("app", "metrics", connection_url="mongodb://127.0.0.1:1/")
        backend.collection = mongomock.MongoClient()["app"]["metrics"]
        metrics = Metrics(backend=backend)
        """
        + calls_script()
        + """
        documents = []
        for document in backend.collection.find():
            document["timestamp"] = document["timestamp"].isoformat()
            if not isinstance(document["_id"], (str, int)):
                document["_id"] = type(document["_id"]).__name__
            documents.append(document)
        inserted = [a and f"{type(a).__name__}:{bool(a.inserted_id)}" for a in answers]
        print(json.dumps({"documents": documents, "inserted": inserted}))
        """
    )
    from kaneda_mongo import backend as plugin

    monkeypatch.setattr(plugin, "MongoClient", mongomock.MongoClient)
    backend = kaneda.backends.MongoBackend("app", "metrics", connection_url="mongodb://x:1/")
    answers = face_calls(backend)
    ours = list(backend.collection.find())
    stored_times = [d["timestamp"].replace(tzinfo=timezone.utc) for d in ours]
    their_times = [
        datetime.fromisoformat(d["timestamp"]).replace(tzinfo=timezone.utc)
        for d in theirs["documents"]
    ]
    assert close_in_time(*stored_times, *their_times)
    expected = [{**d, "timestamp": "datetime"} for d in theirs["documents"]]
    assert [mongo_shape(d) for d in ours] == expected
    assert [list(d) for d in ours] == [list(d) for d in theirs["documents"]]  # key order
    # 1.0 returned InsertOneResult from gauge; the face does from every call.
    gauges = [method == "gauge" for method, _, _ in CALLS]
    assert theirs["inserted"] == [("InsertOneResult:True" if g else None) for g in gauges]
    assert all(type(a).__name__ == "InsertOneResult" and a.inserted_id for a in answers)
    assert answers[6].inserted_id == "2B75D750"


# -- RethinkDB -------------------------------------------------------------------------


def rethink_tables(connection: Any, db: str) -> dict[str, list[dict[str, Any]]]:
    tables = {}
    for table in sorted(r.db(db).table_list().run(connection)):
        documents = []
        for document in r.db(db).table(table).run(connection):
            document = dict(document)
            document["timestamp"] = type(document["timestamp"]).__name__
            if isinstance(document.get("id"), str) and len(document["id"]) == 36:
                document["id"] = "generated"
            documents.append(document)
        tables[table] = sorted(documents, key=lambda d: json.dumps(d, sort_keys=True))
    return tables


# kaneda 1.0's RethinkBackend on rethinkdb-mock (see the module's docstring), then the
# tables it wrote, read back.
KANEDA1_RETHINK = """
        import json, rethinkdb
        from rethinkdb_mock import MockThink
        import kaneda.backends.rethink as module

        class DefaultDatabase:
            def __init__(self, db):
                self.database = db
            def table(self, name):
                return rethinkdb.r.db(self.database).table(name)
            def __getattr__(self, name):
                return getattr(rethinkdb.r, name)

        module.r = DefaultDatabase("kaneda_app")
        connection = MockThink({{"dbs": {{}}}}).get_conn()
        from kaneda import Metrics
        backend = module.RethinkBackend(
            db="kaneda_app", table_name={table_name!r}, connection=connection
        )
        metrics = Metrics(backend=backend)
"""
KANEDA1_RETHINK_TABLES = """
        r = rethinkdb.r
        tables = {}
        for table in r.db("kaneda_app").table_list().run(connection):
            documents = []
            for document in r.db("kaneda_app").table(table).run(connection):
                document = dict(document)
                document["timestamp"] = type(document["timestamp"]).__name__
                if isinstance(document.get("id"), str) and len(document["id"]) == 36:
                    document["id"] = "generated"
                documents.append(document)
            tables[table] = documents
        print(json.dumps({"tables": tables, "answer": answers[0]}))
"""


def test_rethink_documents_and_tables_are_kaneda_1_0s() -> None:
    theirs = run_kaneda1(
        KANEDA1_RETHINK.format(table_name=None) + calls_script() + KANEDA1_RETHINK_TABLES
    )
    connection = MockThink({"dbs": {}}).get_conn()
    backend = kaneda.backends.RethinkBackend(db="kaneda_app", connection=connection)
    answers = face_calls(backend)
    ours = rethink_tables(connection, "kaneda_app")
    expected = {
        table: sorted(documents, key=lambda d: json.dumps(d, sort_keys=True))
        for table, documents in theirs["tables"].items()
    }
    assert ours == expected
    assert set(ours) == {"gauge", "counter", "timing", "event", "xml_response", "shape"} | {
        "flag",
        "note",
    }
    assert theirs["answer"]["inserted"] == 1 and answers[0]["inserted"] == 1
    assert all(answer["inserted"] + answer["replaced"] == 1 for answer in answers)
    # The id of a document stored without one, where 1.0's code would look for it.
    assert set(theirs["answer"]) == set(answers[0])
    assert [len(key) for key in answers[0]["generated_keys"]] == [36]
    stored_ids = {d["id"] for d in r.db("kaneda_app").table("gauge").run(connection)}
    assert answers[0]["generated_keys"][0] in stored_ids


def test_rethink_with_a_table_name_is_kaneda_1_0s_every_kind_in_it_and_none_stored() -> None:
    theirs = run_kaneda1(
        KANEDA1_RETHINK.format(table_name="metrics") + calls_script() + KANEDA1_RETHINK_TABLES
    )
    connection = MockThink({"dbs": {}}).get_conn()
    backend = kaneda.backends.RethinkBackend(
        db="kaneda_app", table_name="metrics", connection=connection
    )
    face_calls(backend)
    ours = rethink_tables(connection, "kaneda_app")
    assert list(ours) == list(theirs["tables"]) == ["metrics"]
    assert ours["metrics"] == sorted(
        theirs["tables"]["metrics"], key=lambda d: json.dumps(d, sort_keys=True)
    )
    assert len(ours["metrics"]) == len(CALLS)
    assert not any("metric" in document for document in ours["metrics"])


# -- an id reported twice --------------------------------------------------------------

TWICE: list[Call] = [
    ("custom", ["first"], {"metric": "order", "value": 1, "id_": "o-1"}),
    ("custom", ["second"], {"metric": "order", "value": 2, "id_": "o-1"}),
]


def test_an_id_reported_twice_keeps_the_first_in_mongodb_as_1_0_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    theirs = run_kaneda1(
        f"""
        import json, mongomock
        from kaneda import Metrics
        from kaneda.backends import MongoBackend

        backend = MongoBackend("app", "metrics", connection_url="mongodb://127.0.0.1:1/")
        backend.collection = mongomock.MongoClient()["app"]["metrics"]
        metrics = Metrics(backend=backend)
        for method, args, kwargs in {TWICE!r}:
            getattr(metrics, method)(*args, **kwargs)
        print(json.dumps([d["name"] for d in backend.collection.find()]))
        """
    )
    from kaneda_mongo import backend as plugin

    monkeypatch.setattr(plugin, "MongoClient", mongomock.MongoClient)
    backend = kaneda.backends.MongoBackend("app", "metrics", connection_url="mongodb://x:1/")
    metrics = kaneda.Metrics(backend=backend)
    answers = [getattr(metrics, method)(*args, **kwargs) for method, args, kwargs in TWICE]
    assert [d["name"] for d in backend.collection.find()] == theirs == ["first"]
    # 1.0 logged the DuplicateKeyError; here the id is stored, so the call succeeded.
    assert [a.inserted_id for a in answers] == ["o-1", "o-1"]
    assert metrics.stats().failed == 0


def test_an_id_reported_twice_keeps_the_latest_in_rethinkdb_where_1_0_kept_the_first() -> None:
    # A stated difference: RethinkDB replaces a document whose id is stored (so that a
    # retried batch leaves one copy, the latest); 1.0's insert refused the second.
    script = f"""
        for method, args, kwargs in {TWICE!r}:
            getattr(metrics, method)(*args, **kwargs)
        table = rethinkdb.r.db("kaneda_app").table("order")
        print(json.dumps([d["name"] for d in table.run(connection)]))
    """
    theirs = run_kaneda1(KANEDA1_RETHINK.format(table_name=None) + script)
    connection = MockThink({"dbs": {}}).get_conn()
    backend = kaneda.backends.RethinkBackend(db="kaneda_app", connection=connection)
    metrics = kaneda.Metrics(backend=backend)
    answers = [getattr(metrics, method)(*args, **kwargs) for method, args, kwargs in TWICE]
    assert theirs == ["first"]
    assert [d["name"] for d in r.db("kaneda_app").table("order").run(connection)] == ["second"]
    assert [a["replaced"] for a in answers] == [0, 1]


# -- Elasticsearch ---------------------------------------------------------------------


@pytest.fixture
def fake_es() -> Iterator[FakeElasticsearch]:
    server = FakeElasticsearch()
    yield server
    server.stop()


def test_elasticsearch_documents_are_kaneda_1_0s_with_the_kind_in_metric(
    fake_es: FakeElasticsearch,
) -> None:
    theirs = run_kaneda1(
        """
        import json
        from elasticsearch import Elasticsearch
        from kaneda import Metrics
        from kaneda.backends import ElasticsearchBackend

        class Recording(Elasticsearch):
            calls = []

            def index(self, **kwargs):
                body = kwargs.pop("body")
                body = self.transport.serializers.dumps(body, mimetype="application/json")
                Recording.calls.append({**kwargs, "body": json.loads(body)})
                return {"_index": kwargs["index"], "_id": kwargs["id"] or "x", "result": "created"}

        backend = ElasticsearchBackend("kaneda", "web", client=Recording("http://127.0.0.1:9"))
        metrics = Metrics(backend=backend)
        """
        + calls_script()
        + """
        print(json.dumps({"calls": Recording.calls, "answer": answers[0]}))
        """
    )
    backend = kaneda.backends.ElasticsearchBackend("kaneda", "web", connection_url=fake_es.url)
    answers = face_calls(backend)
    ours = [json.loads(line) for body in fake_es.bulk_requests() for line in body.splitlines()]
    actions, documents = ours[0::2], ours[1::2]
    assert len(documents) == len(theirs["calls"]) == len(CALLS)
    for action, document, call in zip(actions, documents, theirs["calls"], strict=True):
        their_body = call["body"]
        assert ISO_NAIVE.fullmatch(document["@timestamp"])
        assert ISO_NAIVE.fullmatch(their_body["@timestamp"])
        assert close_in_time(
            datetime.fromisoformat(document.pop("@timestamp")),
            datetime.fromisoformat(their_body.pop("@timestamp")),
        )
        # 1.0's doc_type (removed from Elasticsearch 7) is the document's "metric".
        assert document == {**their_body, "metric": call["doc_type"]}
        assert list(document) == [*their_body, "metric"]
        index = action["index"]
        # 1.0 passed any id but None to Elasticsearch (0 too, unlike its other backends).
        # Where it let Elasticsearch choose, the id is derived from the metric instead, so
        # a retried batch is not stored twice (plugins/kaneda-elasticsearch/README.md).
        if call["id"] is None:
            assert re.fullmatch(r"[0-9a-f]{32}", index["_id"])
        else:
            assert index["_id"] == str(call["id"])
        assert re.fullmatch(r"kaneda-\d{4}\.\d\d\.\d\d", index["_index"])
        assert re.fullmatch(r"kaneda-\d{4}\.\d\d\.\d\d", call["index"])
    pairs = zip(actions, theirs["calls"], strict=True)
    derived = [action["index"]["_id"] for action, call in pairs if call["id"] is None]
    assert len(set(derived)) == len(derived) > 0  # one per metric
    mappings = fake_es.templates["kaneda"]["template"]["mappings"]["properties"]
    assert mappings["metric"] == {"type": "keyword"}
    assert mappings["value"] == {"type": "double", "ignore_malformed": True}
    # 1.0 returned the index response from gauge; the face returns each bulk item.
    assert theirs["answer"]["result"] == "created"
    assert all(answer["result"] == "created" and answer["_id"] for answer in answers)
    assert answers[6]["_id"] == "2B75D750"


def test_a_custom_dicts_metric_key_gives_way_to_the_kind_in_elasticsearch(
    fake_es: FakeElasticsearch,
) -> None:
    # A stated difference: 1.0 kept the kind in _type and the dict's own "metric" in the
    # document; with _type gone, "metric" holds the kind (as 1.0's MongoDB documents did).
    backend = kaneda.backends.ElasticsearchBackend("kaneda", "web", connection_url=fake_es.url)
    kaneda.Metrics(backend=backend).custom("job", "batch", {"metric": "rows", "count": 3})
    [(_, _, document)] = fake_es.documents()
    assert document["metric"] == "batch" and document["count"] == 3


# -- the logger ------------------------------------------------------------------------

LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (kaneda\.backends\.logger) - (.*)")


def test_log_lines_are_kaneda_1_0s(tmp_path: Path) -> None:
    theirs_file, ours_file = tmp_path / "theirs.log", tmp_path / "ours.log"
    theirs = run_kaneda1(
        f"""
        import json
        from kaneda import Metrics
        from kaneda.backends import LoggerBackend

        metrics = Metrics(backend=LoggerBackend(filename={str(theirs_file)!r}))
        """
        + calls_script()
        + """
        print(json.dumps(answers))
        """
    )
    backend = kaneda.backends.LoggerBackend(filename=str(ours_file))
    answers = face_calls(backend)
    backend.close()
    their_lines = theirs_file.read_text().splitlines()
    our_lines = ours_file.read_text().splitlines()
    assert len(our_lines) == len(their_lines) == len(CALLS)
    for ours, their in zip(our_lines, their_lines, strict=True):
        our_match, their_match = LINE.fullmatch(ours), LINE.fullmatch(their)
        assert our_match and their_match, (ours, their)
        assert our_match.group(2, 3) == their_match.group(2, 3)  # the payload, char for char
        assert isinstance(ast.literal_eval(our_match.group(3)), dict)
    assert theirs == [None] * len(CALLS)  # logger.info's None...
    assert answers == [True] * len(CALLS)  # ...the face answers True when it logged


def test_log_records_reach_handlers_on_kaneda_backends_logger(tmp_path: Path) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    application_handler = Keep()
    logging.getLogger("kaneda.backends.logger").addHandler(application_handler)
    try:
        backend = kaneda.backends.LoggerBackend(filename=str(tmp_path / "m.log"))
        kaneda.Metrics(backend=backend).gauge("g", 1, tags={"k": "v"})
        backend.close()
    finally:
        logging.getLogger("kaneda.backends.logger").removeHandler(application_handler)
    [record] = records
    assert record.name == "kaneda.backends.logger" and record.levelno == logging.INFO
    assert record.msg == {
        "host": record.msg["host"],
        "name": "g",
        "value": 1,
        "tags": {"k": "v"},
        "metric": "gauge",
    }


def test_two_log_files_each_get_their_own_lines(tmp_path: Path) -> None:
    first = kaneda.backends.LoggerBackend(filename=str(tmp_path / "first.log"))
    second = kaneda.backends.LoggerBackend(filename=str(tmp_path / "second.log"))
    kaneda.Metrics(backend=first).event("e", "one")
    kaneda.Metrics(backend=second).event("e", "two")
    first.close(), second.close()
    assert "'one'" in (tmp_path / "first.log").read_text()
    assert "'two'" not in (tmp_path / "first.log").read_text()
    assert (tmp_path / "second.log").read_text().count("\n") == 1


def test_without_a_file_the_lines_go_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    backend = kaneda.backends.LoggerBackend()
    kaneda.Metrics(backend=backend).increment(f"c{uuid.uuid4().hex[:6]}")
    backend.close()
    [line] = capfd.readouterr().err.splitlines()
    assert LINE.fullmatch(line) and "'metric': 'counter'" in line


def test_a_given_logger_is_used_as_is(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="my.app.metrics")
    backend = kaneda.backends.LoggerBackend(logger=logging.getLogger("my.app.metrics"))
    kaneda.Metrics(backend=backend).timing("t", 4)
    [record] = [r for r in caplog.records if r.name == "my.app.metrics"]
    assert record.getMessage().endswith("'value': 4, 'metric': 'timing'}")


def test_the_core_logger_keeps_its_json_lines(tmp_path: Path) -> None:
    from kaneda_core import connect

    with connect(f"logger://{tmp_path}/m.jsonl", batching=False) as metrics:
        metrics.gauge("g", 1)
    line = json.loads((tmp_path / "m.jsonl").read_text())
    assert line["name"] == "g" and line["metric"] == "gauge" and "timestamp" in line
    with connect(f"logger://{tmp_path}/k1.log?layout=kaneda1", batching=False) as metrics:
        metrics.gauge("g", 1)
    assert LINE.fullmatch((tmp_path / "k1.log").read_text().strip())


def test_the_faces_rethink_backend_connects_and_creates_its_database_when_constructed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kaneda 1.0's constructor connected and created the database (its tests check that
    ``backend.connection`` is open); the plugin waits for its first delivery. The server
    here is rethinkdb-mock's, handed out by a stand-in for ``r.connect``."""
    import kaneda_rethink.backend as plugin

    server = MockThink({"dbs": {}})
    asked: list[dict[str, Any]] = []

    def connect(**options: Any) -> Any:
        asked.append(options)
        return server.get_conn()

    monkeypatch.setattr(plugin.r, "connect", connect)
    backend = kaneda.backends.RethinkBackend(db="kaneda_app", host="db.example", port=28016)
    assert backend.connection is not None
    assert asked[0]["host"] == "db.example" and asked[0]["port"] == 28016
    assert asked[0]["timeout"] <= 1.0  # construction waits briefly, whatever the timeout
    assert "kaneda_app" in r.db_list().run(backend.connection)
    plain = plugin.RethinkBackend(db="other", host="db.example", port=28016)
    assert plain.connection is None and len(asked) == 1  # the plugin itself waits


def test_the_faces_rethink_backend_constructs_when_no_server_answers() -> None:
    """A server that is down costs construction a moment, never an exception; the
    first delivery connects (and fails, counted) as the plugin's does."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    backend = kaneda.backends.RethinkBackend(
        db="kaneda_app", host="127.0.0.1", port=port, timeout=300
    )
    assert time.monotonic() - started < 5
    assert backend.connection is None
