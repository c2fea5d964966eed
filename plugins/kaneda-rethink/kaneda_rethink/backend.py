"""``RethinkBackend``: one insert per table per batch, tables created once."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import (
    ReqlAuthError,
    ReqlAvailabilityError,
    ReqlDriverError,
    ReqlError,
    ReqlOpFailedError,
    ReqlTimeoutError,
)

from kaneda_core import Backend, DeliveryError, InvalidMetric, Metric
from kaneda_core.arguments import argument_error, check_arguments
from kaneda_core.backend import url_options
from kaneda_core.deadline import deadline
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured
from kaneda_core.forking import abandon
from kaneda_core.layouts import DEFAULT_LAYOUT, check_layout
from kaneda_core.redact import redact_text, redact_url
from kaneda_core.urls import check_host, parse_url

from .connecting import BoundedConnection
from .layouts import LAYOUTS, generated_id

log = logging.getLogger("kaneda")

r = RethinkDB()
#: ``r.connect()`` opens its connections within their timeout: the name resolved, the
#: socket connected and RethinkDB's handshake run each by the deadline (the driver's own
#: leave the first unbounded, and the last too against a server that never ends an answer).
r.connection_type = BoundedConnection

#: What RethinkDB accepts as a database or table name.
VALID_NAME = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT_PORT = 28015
#: RethinkDB's limit on a primary key, in bytes.
MAX_KEY = 127

#: How a document whose id is already stored is treated: replaced by the new one, so a
#: retried batch leaves exactly one copy.
CONFLICT = "replace"


class RethinkBackend(Backend):
    """RethinkDB backend.

    :param db: name of the RethinkDB database (created on the first write if missing).
    :param table_name: the table metrics go to; without one, each metric goes to the
        table named after its kind (``gauge``, ``counter``, ``timing``, ``event`` or the
        ``metric`` of a custom report).
    :param connection: an open ``rethinkdb`` connection to use.
    :param host: server host (default ``localhost``).
    :param port: server port (default 28015).
    :param user: auth username.
    :param password: auth password.
    :param timeout: bounds connecting as a whole (resolving the host's name, the TCP
        connect and RethinkDB's handshake together), and each query as a whole (seconds;
        None means the default).
    :param layout: ``"kaneda2"`` (the default) or ``"kaneda1"``, the documents kaneda
        1.0 wrote (see :mod:`kaneda_rethink.layouts`).

    Without ``connection``, the backend connects on its first delivery (never at
    construction) and reconnects on the next batch after a connection is lost.
    """

    settings_namespace = "RETHINK"
    example_url = "rethinkdb://admin:password@localhost:28015/metrics"

    def __init__(
        self,
        db: str,
        table_name: str | None = None,
        connection: Any = None,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = 0.3,
        *,
        layout: str = DEFAULT_LAYOUT,
    ) -> None:
        check_arguments(RethinkBackend, locals())
        if timeout is None:  # kaneda 1.0 allowed it; Kaneda never waits without a bound
            timeout = 0.3
        if not VALID_NAME.fullmatch(db):
            raise argument_error(
                RethinkBackend, "db", "a RethinkDB name (A-Z, a-z, 0-9, _ and - only)", db
            )
        if table_name is not None and not VALID_NAME.fullmatch(table_name):
            raise argument_error(
                RethinkBackend,
                "table_name",
                "a RethinkDB name (A-Z, a-z, 0-9, _ and - only)",
                table_name,
            )
        if connection is not None and not callable(getattr(connection, "_start", None)):
            # What the driver's run() needs of a connection: r.connect()'s, or a mock's.
            raise ImproperlyConfigured(
                'RethinkBackend: "connection" parameter is not a RethinkDB connection: got '
                f"{connection!r} ({type(connection).__name__}). For example: "
                "connection=r.connect(host='localhost', port=28015), or a URL such as "
                f"{self.example_url}"
            )
        self.layout = check_layout(layout)
        self._document = LAYOUTS[self.layout]
        self.db = db
        self.table_name = table_name
        self.host = host or "localhost"
        self.port = port or DEFAULT_PORT
        self.user = user
        self._password = password
        self.timeout = timeout
        self.connection = connection
        self._owns_connection = connection is None
        self._database_ready = False
        self._tables: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RethinkBackend:
        """``rethinkdb://user:pw@host:28015/db?table_name=metrics&timeout=1``.

        No host is localhost (``rethinkdb:///metrics``); a slash too many
        (``rethinkdb:///user:pw@host/db``) is refused.
        """
        check_host(url, cls.example_url, default="localhost")
        parts = parse_url(url, cls.example_url)
        fixed: dict[str, Any] = {
            "db": parts.path.strip("/") or None,
            "host": parts.host,
            "port": parts.port,
            "user": parts.user,
            "password": parts.password or None,
        }
        options = url_options(cls, url, **fixed)
        options.update(overrides)
        if "db" not in options:
            raise ConfigurationError(
                f"{redact_url(url)} names no database: use rethinkdb://host:28015/<db>"
            )
        return cls(**options)

    def table_for(self, metric: Metric) -> str:
        """The table ``metric`` is stored in."""
        return self.table_name or metric.kind

    def check(self, metric: Metric) -> None:
        """Refuse what RethinkDB cannot store: a kind that cannot name a table (when no
        ``table_name`` is set), an id over 127 bytes (its primary keys' limit)."""
        if self.table_name is None and not VALID_NAME.fullmatch(metric.kind):
            raise InvalidMetric(
                f"metric kind {metric.kind!r} names the RethinkDB table it goes to, and table "
                "names may only hold A-Z, a-z, 0-9, _ and -: rename it, or give the backend a "
                "table_name"
            )
        id_ = metric.id
        if isinstance(id_, str) and len(id_) * 4 > MAX_KEY and len(id_.encode()) > MAX_KEY:
            raise InvalidMetric(
                f"id_ is {len(id_.encode())} bytes long; RethinkDB's primary keys are at most "
                f"{MAX_KEY} bytes: use a shorter id (a hash of it, say)"
            )

    def send(self, batch: Sequence[Metric]) -> list[dict[str, Any]]:
        """Insert the batch: one ``insert`` of a list per table.

        Returns, per metric, the result of its table's insert (kaneda 1.0's answer), with
        the ids Kaneda generated in ``generated_keys``, where RethinkDB lists the ids it
        generates.
        """
        by_table: dict[str, list[Metric]] = defaultdict(list)
        for metric in batch:
            by_table[self.table_for(metric)].append(metric)
        failed: list[Metric] = []
        reasons: list[str] = []
        answers: dict[int, dict[str, Any]] = {}
        try:
            connection = self._connect()
            for table, metrics in by_table.items():
                self._ensure_table(connection, table)
                documents = [self.document(m) for m in metrics]
                result = self._run(
                    r.db(self.db).table(table).insert(documents, conflict=CONFLICT),
                    connection,
                )
                generated = [
                    document["id"]
                    for metric, document in zip(metrics, documents, strict=True)
                    if not metric.id and document["id"] == generated_id(metric)
                ]
                if generated:
                    result = {**result, "generated_keys": generated}
                for metric in metrics:
                    answers[id(metric)] = result
                if result.get("errors"):
                    # The insert reports a count and the first error, not which documents.
                    failed.extend(metrics)
                    reasons.append(f"{table}: {result.get('first_error')}")
        except ReqlError as error:
            raise self._delivery_error(error) from None
        if failed:
            raise DeliveryError(
                f"RethinkDB refused documents in {self.db}: " + self.redact("; ".join(reasons)),
                retryable=False,
                metrics=failed,
            )
        return [answers[id(metric)] for metric in batch]

    def document(self, metric: Metric) -> dict[str, Any]:
        """The document stored for ``metric``, in this backend's layout."""
        return self._document(metric)

    def connect_now(self, timeout: float | None = None) -> bool:
        """Connect and create the database now, waiting at most about ``timeout`` seconds
        per step (the backend's by default); best effort.

        Returns True when connected with the database in place. When the server cannot
        be reached in time, or refuses, it returns False (never raises): the first
        delivery tries again.
        """
        try:
            self._ensure_database(self._connect(timeout), timeout)
        except (ReqlError, OSError) as error:
            log.debug("kaneda-rethink: could not connect now: %s", self.redact(str(error)))
            return False
        return True

    def _connect(self, timeout: float | None = None) -> Any:
        with self._lock:
            if self.connection is None or not _is_open(self.connection):
                self.connection = r.connect(
                    host=self.host,
                    port=self.port,
                    db=self.db,
                    user=self.user or "admin",
                    password=self._password or "",
                    timeout=self.timeout if timeout is None else timeout,
                )
            return self.connection

    def _run(self, query: Any, connection: Any, timeout: float | None = None) -> Any:
        """Run ``query``; if it takes longer than ``timeout`` in all, break it off."""
        limit = self.timeout if timeout is None else timeout
        with deadline(limit, lambda: _shut_down(connection)) as watch:
            try:
                return query.run(connection)
            except (ReqlError, OSError) as error:
                if watch.expired:
                    self._drop_connection()
                    raise ReqlTimeoutError(self.host, self.port) from error
                raise

    def _ensure_table(self, connection: Any, table: str) -> None:
        if table in self._tables:
            return
        self._ensure_database(connection)
        if table not in self._run(r.db(self.db).table_list(), connection):
            self._run_create(r.db(self.db).table_create(table), connection)
        self._tables.add(table)

    def _ensure_database(self, connection: Any, timeout: float | None = None) -> None:
        if not self._database_ready:
            if self.db not in self._run(r.db_list(), connection, timeout):
                self._run_create(r.db_create(self.db), connection, timeout)
            self._database_ready = True

    def _run_create(self, query: Any, connection: Any, timeout: float | None = None) -> None:
        """Run a db/table create; "already exists" (another process was first) is fine."""
        try:
            self._run(query, connection, timeout)
        except ReqlOpFailedError as error:
            if "already exists" not in str(error):
                raise

    def _delivery_error(self, error: ReqlError) -> DeliveryError:
        where = f"RethinkDB at {self.host}:{self.port} (database {self.db!r})"
        detail = self.redact(f"{type(error).__name__}: {error}")
        if isinstance(error, ReqlAuthError):
            return DeliveryError(
                f"{where} refused the credentials of user {self.user or 'admin'!r}: "
                "check the user and password",
                retryable=False,
            )
        if isinstance(error, (ReqlDriverError, ReqlTimeoutError)):
            self._drop_connection()
            return DeliveryError(
                f"{where} unreachable: {detail}. Check that RethinkDB runs there, that host "
                "and port are right (the driver port, 28015 by default), and that this "
                "machine can reach it",
                retryable=True,
            )
        if isinstance(error, ReqlAvailabilityError):
            return DeliveryError(f"{where} unavailable: {detail}", retryable=True)
        return DeliveryError(f"{where} failed: {detail}", retryable=False)

    def _drop_connection(self) -> None:
        # A lost connection is reopened by the next batch.
        if self._owns_connection and self.connection is not None:
            with contextlib.suppress(Exception):  # it is already broken
                self.connection.close(noreply_wait=False)
            self.connection = None

    def redact(self, text: str) -> str:
        """``text`` with the password masked."""
        return redact_text(text, self._password)

    def after_fork(self) -> None:
        """Drop the parent's connection (never close it: it is the parent's); reconnect lazily.

        A connection you passed in is kept: give each process its own.
        """
        self._lock = threading.Lock()
        if self._owns_connection:
            abandon(self.connection)
            self.connection = None

    def close(self) -> None:
        """Close the connection this backend opened (not one you passed in)."""
        if self._owns_connection:
            self._drop_connection()

    def __repr__(self) -> str:
        return f"<RethinkBackend {self.host}:{self.port}/{self.db}>"


def _is_open(connection: Any) -> bool:
    is_open = getattr(connection, "is_open", None)
    return bool(is_open()) if callable(is_open) else True


def _shut_down(connection: Any) -> None:
    """Shut the driver's socket down (a blocked read then fails at once)."""
    sock = getattr(
        getattr(getattr(connection, "_instance", None), "_socket", None), "_socket", None
    )
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
