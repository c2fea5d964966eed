"""``InfluxBackend``: batches of metrics written to InfluxDB 1.x as line protocol."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError
from requests.exceptions import RequestException

from kaneda_core import Backend, DeliveryError, Metric
from kaneda_core.backend import url_options
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured
from kaneda_core.redact import MASK, redact_text

from . import line_protocol

log = logging.getLogger("kaneda.influx")


class InfluxBackend(Backend):
    """InfluxDB backend.

    :param database: name of the InfluxDB database (created on the first write if missing).
    :param client: an ``influxdb.InfluxDBClient`` to use instead of building one.
    :param connection_url: ``influxdb://username:password@localhost:8086/databasename``
        (``https+influxdb://`` for TLS).
    :param host: server host (default ``localhost``).
    :param port: server port (default 8086).
    :param username: auth username.
    :param password: auth password.
    :param timeout: InfluxDB connection timeout (seconds).
    :param verify_ssl: check the server's TLS certificate (default True).

    Constructing it never touches the network; the database is created on the first
    delivery that reaches the server. The schema is described in the plugin's README
    and in :mod:`kaneda_influx.line_protocol`.
    """

    settings_namespace = "INFLUX"

    def __init__(
        self,
        database: str,
        client: InfluxDBClient | None = None,
        connection_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 0.3,
        *,
        verify_ssl: bool = True,
    ) -> None:
        if not isinstance(database, str) or not database:
            raise ConfigurationError(f"database must be a non-empty string, got {database!r}")
        self.database = database
        if client is not None:
            if not isinstance(client, InfluxDBClient):
                raise ImproperlyConfigured(
                    '"client" parameter is not an instance of InfluxDBClient client.'
                )
            self.client = client
            self._password = getattr(client, "_password", None)
        elif connection_url:
            # One attempt per request: the dispatcher retries, with backoff.
            self.client = InfluxDBClient.from_dsn(
                _client_dsn(connection_url), timeout=timeout, retries=1, verify_ssl=verify_ssl
            )
            self._password = urlsplit(connection_url).password
        else:
            self.client = InfluxDBClient(
                host=host or "localhost",
                port=port or 8086,
                username=username,
                password=password,
                database=database,
                timeout=timeout,
                retries=1,
                verify_ssl=verify_ssl,
            )
            self._password = password
        self._database_ready = False
        self._setup_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> InfluxBackend:
        """``influxdb://user:pw@host:8086/db?timeout=1`` (``https+influxdb://`` for TLS)."""
        parts = urlsplit(url)
        database = unquote(parts.path).strip("/") or None
        fixed = {"database": database, "connection_url": url.split("?", 1)[0]}
        options = url_options(cls, url, **fixed)
        options.update(overrides)
        if "database" not in options:
            raise ConfigurationError(
                f"{redact_text(url, parts.password)} names no database: "
                "use influxdb://host:8086/<database>"
            )
        return cls(**options)

    def check(self, metric: Metric) -> None:
        """Refuse list tags, nested custom values and names InfluxDB would misread."""
        line_protocol.check(metric)

    def send(self, batch: Sequence[Metric]) -> None:
        """Write the batch in one request (``precision=n``), creating the database first."""
        if not self._database_ready:
            self._create_database()
        body = line_protocol.lines(batch).encode("utf-8")
        try:
            self.client.request(
                "write",
                method="POST",
                params={"db": self.database, "precision": "n"},
                data=body,
                expected_response_code=204,
                headers={"Content-Type": "application/octet-stream"},
            )
        except Exception as error:  # noqa: BLE001 - translated below
            if isinstance(error, InfluxDBClientError) and error.code == 404:
                self._database_ready = False  # dropped meanwhile: create it again next time
            raise self._delivery_error("writing", error) from None

    def _create_database(self) -> None:
        with self._setup_lock:
            if self._database_ready:
                return
            try:
                self.client.create_database(self.database)
            except InfluxDBClientError as error:
                if error.code != 403:
                    raise self._delivery_error("creating the database", error) from None
                # Not allowed to create it: it may exist already; the write will tell.
                log.warning(
                    "kaneda-influx: user %r may not create database %r; writing to it anyway",
                    self.client._username,
                    self.database,
                )
            except Exception as error:  # noqa: BLE001 - translated below
                raise self._delivery_error("creating the database", error) from None
            self._database_ready = True

    def _delivery_error(self, doing: str, error: Exception) -> DeliveryError:
        where = f"InfluxDB at {self.client._host}:{self.client._port} (database {self.database!r})"
        detail = self.redact(f"{type(error).__name__}: {error}")
        if isinstance(error, InfluxDBServerError):
            return DeliveryError(f"{where} failed {doing}: {detail}", retryable=True)
        if isinstance(error, InfluxDBClientError):
            code = error.code
            if code == 401:
                message = (
                    f"{where} refused the credentials of user {self.client._username!r} "
                    f"while {doing} (401): check the username and password"
                )
                return DeliveryError(message, retryable=False)
            if code == 403:
                message = (
                    f"{where}: user {self.client._username!r} is not allowed to write "
                    f"(403 while {doing}): grant it WRITE on the database"
                )
                return DeliveryError(message, retryable=False)
            if code == 404:
                message = (
                    f"{where}: the database does not exist and could not be created (404 "
                    f'while {doing}); create it as an admin: CREATE DATABASE "{self.database}"'
                )
                return DeliveryError(message, retryable=True)
            return DeliveryError(
                f"{where} refused the batch while {doing} ({code}): {detail}",
                retryable=code in (408, 429),
            )
        if isinstance(error, (RequestException, OSError)):
            return DeliveryError(f"{where} unreachable while {doing}: {detail}", retryable=True)
        return DeliveryError(f"{where} failed {doing}: {detail}", retryable=False)

    def redact(self, text: str) -> str:
        """``text`` with the password masked."""
        return redact_text(text, self._password)

    def close(self) -> None:
        """Close the client's HTTP session (a client you passed in is closed too)."""
        self.client.close()

    def __repr__(self) -> str:
        user = f"{self.client._username}:{MASK}@" if self.client._username else ""
        return f"<InfluxBackend {user}{self.client._host}:{self.client._port}/{self.database}>"


def _client_dsn(url: str) -> str:
    """The influxdb client's spelling of a Kaneda URL: ``https+influxdb://``, no query."""
    scheme, rest = url.split("://", 1)
    parts = {part.lower() for part in scheme.split("+")}
    scheme = "https+influxdb" if "https" in parts else "influxdb"
    return f"{scheme}://{rest.split('?', 1)[0]}"
