"""kaneda-rethink: construction, tables, batches, ids, timestamps, failures."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from kaneda_rethink import RethinkBackend
from kaneda_rethink import backend as module
from rethink_helpers import closed_port, stored_metrics
from rethinkdb.errors import ReqlAuthError, ReqlDriverError, ReqlOpFailedError

from kaneda_core import (
    ConfigurationError,
    DeliveryError,
    InvalidMetric,
    Metric,
    Metrics,
    connect,
    load_backend,
)

SECRET = "r3th1nk-s3cret"
r = module.r


def test_registered_under_both_names() -> None:
    assert load_backend("rethinkdb") is RethinkBackend and load_backend("rethink") is RethinkBackend


def test_the_seed_import_path_is_this_class_writing_kaneda_1_0s_layout() -> None:
    import inspect

    from kaneda.backends import RethinkBackend as Seed

    assert issubclass(Seed, RethinkBackend) and Seed.settings_namespace == "RETHINK"
    assert inspect.signature(Seed).parameters["layout"].default == "kaneda1"
    assert inspect.signature(RethinkBackend).parameters["layout"].default == "kaneda2"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ("localhost", 28015, None)),
        ({"host": "db.internal", "port": 28016}, ("db.internal", 28016, None)),
        ({"host": "db", "port": 1, "user": "app", "password": SECRET}, ("db", 1, "app")),
    ],
)
def test_construction_paths_open_no_connection(
    kwargs: dict[str, Any], expected: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(r, "connect", lambda **kw: pytest.fail("connected at construction"))
    backend = RethinkBackend("app", **kwargs)
    assert (backend.host, backend.port, backend.user) == expected
    assert backend.connection is None
    assert SECRET not in repr(backend)


def test_connect_by_url(monkeypatch: pytest.MonkeyPatch, mock_connection: Any) -> None:
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(r, "connect", lambda **kw: seen.append(kw) or mock_connection)
    url = f"rethinkdb://app:{SECRET}@db.internal:28016/metrics_db?table_name=metrics&timeout=2"
    with connect(url) as metrics:
        metrics.increment("requests")
    assert seen == [
        {
            "host": "db.internal",
            "port": 28016,
            "db": "metrics_db",
            "user": "app",
            "password": SECRET,
            "timeout": 2.0,
        }
    ]
    [metric] = stored_metrics(mock_connection, "metrics_db")
    assert metric.name == "requests"
    assert r.db("metrics_db").table_list().run(mock_connection) == ["metrics"]


def test_a_url_without_a_database_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="names no database") as caught:
        connect(f"rethinkdb://app:{SECRET}@host:28015/")
    assert SECRET not in str(caught.value)


def test_kaneda_url_and_settings_module(
    mock_connection: Any, db_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(r, "connect", lambda **kw: mock_connection)
    monkeypatch.setenv("KANEDA_URL", f"rethinkdb://localhost:28015/{db_name}")
    with Metrics() as metrics:
        metrics.gauge("from_url", 1)
    monkeypatch.delenv("KANEDA_URL")
    (tmp_path / "rethink_settings.py").write_text(
        f"BACKEND = 'kaneda.backends.RethinkBackend'\nRETHINK_DB = {db_name!r}\n"
        "RETHINK_HOST = 'localhost'\nRETHINK_PORT = 28015\nRETHINK_TABLE_NAME = 'legacy'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "rethink_settings")
    import kaneda

    kaneda.Metrics().gauge("from_settings", 2)
    sys.modules.pop("rethink_settings", None)
    assert sorted(m.name for m in stored_metrics(mock_connection, db_name)) == [
        "from_settings",
        "from_url",
    ]
    assert sorted(r.db(db_name).table_list().run(mock_connection)) == ["gauge", "legacy"]


@pytest.mark.parametrize("name", ["bad name", "a.b", ""])
def test_invalid_names_are_refused_at_construction(name: str) -> None:
    with pytest.raises(ConfigurationError, match="A-Z, a-z, 0-9, _ and - only"):
        RethinkBackend(name or "ok", table_name=name or "no/slash")


# -- tables ---------------------------------------------------------------------------


def test_tables_are_named_after_the_metric_kind(mock_connection: Any, db_name: str) -> None:
    backend = RethinkBackend(db_name, connection=mock_connection)
    with Metrics(backend) as metrics:
        metrics.gauge("g", 1)
        metrics.increment("c")
        metrics.timing("t", 2)
        metrics.event("e", "text")
        metrics.custom("q", "query_time", {"start_time": 1})
    assert sorted(r.db(db_name).table_list().run(mock_connection)) == [
        "counter",
        "event",
        "gauge",
        "query_time",
        "timing",
    ]
    names = {
        table: [d["name"] for d in r.db(db_name).table(table).run(mock_connection)]
        for table in ("gauge", "query_time")
    }
    assert names == {"gauge": ["g"], "query_time": ["q"]}


def test_a_kind_that_cannot_name_a_table_is_refused_at_the_call(
    mock_connection: Any, db_name: str
) -> None:
    metrics = Metrics(RethinkBackend(db_name, connection=mock_connection))
    with pytest.raises(InvalidMetric, match="names the RethinkDB table"):
        metrics.custom("q", "query time", 1)
    fixed = Metrics(RethinkBackend(db_name, table_name="metrics", connection=mock_connection))
    fixed.custom("q", "query time", 1)  # a fixed table takes any kind
    fixed.close()


class CountingR:
    """``r`` with its catalogue queries counted."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.counts = {"db_list": 0, "table_list": 0, "table_create": 0, "db_create": 0}
        self.inserts: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def db_list(self) -> Any:
        self.counts["db_list"] += 1
        return self.real.db_list()

    def db_create(self, name: str) -> Any:
        self.counts["db_create"] += 1
        return self.real.db_create(name)

    def db(self, name: str) -> Any:
        counts = self.counts
        inserts = self.inserts
        database = self.real.db(name)

        class Table:
            def __init__(self, table: str) -> None:
                self.name = table
                self.query = database.table(table)

            def __getattr__(self, attribute: str) -> Any:
                return getattr(self.query, attribute)

            def insert(self, documents: list[Any], **options: Any) -> Any:
                inserts.append((self.name, len(documents)))
                return self.query.insert(documents, **options)

        class Db:
            def table(self, table: str) -> Table:
                return Table(table)

            def __getattr__(self, attribute: str) -> Any:
                return getattr(database, attribute)

            def table_list(self) -> Any:
                counts["table_list"] += 1
                return database.table_list()

            def table_create(self, table: str) -> Any:
                counts["table_create"] += 1
                return database.table_create(table)

        return Db()


def test_database_and_tables_are_created_once_and_remembered(
    mock_connection: Any, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingR(module.r)
    monkeypatch.setattr(module, "r", counting)
    backend = RethinkBackend(db_name, connection=mock_connection)
    metrics = Metrics(backend, batch_size=10)
    for i in range(100):
        metrics.gauge("g", i)
        metrics.increment("c")
        if i % 10 == 0:
            metrics.flush(5)
    metrics.close()
    assert counting.counts == {"db_list": 1, "db_create": 1, "table_list": 2, "table_create": 2}
    assert len(stored_metrics(mock_connection, db_name)) == 200


@pytest.mark.parametrize(
    ("message", "raises"),
    [
        ("Table `db.gauge` already exists.", False),
        ("Database `db` already exists.", False),
        ("Cannot create a table: no writable replica", True),
    ],
)
def test_created_meanwhile_by_another_process_is_not_an_error(message: str, raises: bool) -> None:
    class Query:
        def run(self, connection: Any) -> Any:
            raise ReqlOpFailedError(message)

    backend = RethinkBackend("db")
    if raises:
        with pytest.raises(ReqlOpFailedError):
            backend._run_create(Query(), None)
    else:
        backend._run_create(Query(), None)


# -- batches, ids, timestamps -----------------------------------------------------------


def test_one_insert_of_a_list_per_table_per_batch(
    mock_connection: Any, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingR(module.r)
    monkeypatch.setattr(module, "r", counting)
    backend = RethinkBackend(db_name, connection=mock_connection)
    with Metrics(backend, batch_size=300, flush_interval=60) as metrics:
        for i in range(300):
            if i % 3:
                metrics.gauge("x", i)
            else:
                metrics.increment("x")
    assert sorted(counting.inserts) == [("counter", 100), ("gauge", 200)]
    assert len(stored_metrics(mock_connection, db_name)) == 300


def test_an_id_is_the_primary_key_and_a_retry_replaces(mock_connection: Any, db_name: str) -> None:
    backend = RethinkBackend(db_name, connection=mock_connection)
    batch = [Metric.create("o", "order", {"total": i}, id=f"o-{i}") for i in range(3)]
    backend.send(batch)
    backend.send(batch)
    stored = stored_metrics(mock_connection, db_name)
    assert sorted(m.id for m in stored) == ["o-0", "o-1", "o-2"]


def test_the_metrics_own_time_is_stored(mock_connection: Any, db_name: str) -> None:
    backend = RethinkBackend(db_name, connection=mock_connection)
    when = datetime(2023, 3, 4, 5, 6, 7, 891_011, tzinfo=timezone.utc)
    backend.send([Metric.create("g", "gauge", 1, timestamp=when)])
    [document] = list(r.db(db_name).table("gauge").run(mock_connection))
    assert isinstance(document["timestamp"], datetime) and document["timestamp"] == when


def test_refused_documents_fail_their_metrics(
    mock_connection: Any, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "CONFLICT", "error")  # what a refused document looks like
    backend = RethinkBackend(db_name, connection=mock_connection)
    backend.send([Metric.create("o", "order", 1, id="dup")])
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("o", "order", 2, id="dup")])
    assert not caught.value.retryable and [m.value for m in caught.value.metrics or []] == [2]


# -- failures -------------------------------------------------------------------------------


def test_no_server_is_retryable_and_the_caller_never_sees_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"rethinkdb://app:{SECRET}@127.0.0.1:{closed_port()}/app?timeout=0.5"
    metrics = connect(url, batching=False)
    started = time.monotonic()
    metrics.gauge("g", 1)
    assert time.monotonic() - started < 5
    assert metrics.stats().failed == 1
    assert "unreachable" in caplog.text and SECRET not in caplog.text
    assert SECRET not in repr(metrics.backend)


def test_a_dropped_connection_is_reopened_on_the_next_batch(
    mock_connection: Any, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections: list[Any] = []

    class Flaky:
        """A connection that breaks once, as a server restart would."""

        def __init__(self) -> None:
            self.broken = not connections
            connections.append(self)

        def is_open(self) -> bool:
            return not self.broken

        def close(self, noreply_wait: bool = False) -> None:
            self.broken = True

        def _start(self, *args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise ReqlDriverError("Connection is closed.")
            return mock_connection._start(*args, **kwargs)

    monkeypatch.setattr(r, "connect", lambda **kw: Flaky())
    backend = RethinkBackend(db_name)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    assert caught.value.retryable and backend.connection is None
    backend.send([Metric.create("g", "gauge", 2)])
    assert len(connections) == 2
    assert [m.value for m in stored_metrics(mock_connection, db_name)] == [2]


def test_bad_credentials_are_not_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(**kwargs: Any) -> Any:
        raise ReqlAuthError("Wrong password", kwargs["host"], kwargs["port"])

    monkeypatch.setattr(r, "connect", refuse)
    metrics = connect(f"rethinkdb://app:{SECRET}@db:28015/app", batching=False)
    metrics.gauge("g", 1)
    assert "refused the credentials of user 'app'" in caplog.text
    assert SECRET not in caplog.text and metrics.stats().retried == 0


def test_an_id_longer_than_a_rethinkdb_primary_key_is_refused_at_the_call() -> None:
    from kaneda_core import InvalidMetric, Metrics

    metrics = Metrics(RethinkBackend("db", host="127.0.0.1", port=1), flush_interval=60)
    with pytest.raises(InvalidMetric, match="127 bytes"):
        metrics.custom("c", "shape", 1, id_="é" * 100)
    metrics.custom("c", "shape", 1, id_="x" * 127)
    assert metrics.stats().queued == 1
    metrics.close(0.1)
