"""``InfluxBackend``: batches of metrics written to InfluxDB 1.x as line protocol."""

from __future__ import annotations

import http.client
import logging
import re
import ssl
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError
from influxdb.line_protocol import quote_ident
from requests.exceptions import RequestException

from kaneda_core import Backend, DeliveryError, Metric
from kaneda_core.backend import url_options
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured
from kaneda_core.forking import abandon
from kaneda_core.redact import MASK, redact_text, redact_url

from . import line_protocol
from .transport import HTTPTransport

log = logging.getLogger("kaneda.influx")

_DROPPED = re.compile(r"dropped=(\d+)")


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
    :param timeout: InfluxDB timeout (seconds): bounds each request as a whole.
    :param verify_ssl: check the server's TLS certificate (default True).

    Constructing it never touches the network; the database is created on the first
    delivery that reaches the server. Writes go over one keep-alive connection of the
    plugin's own (:mod:`kaneda_influx.transport`); ``client`` stays available for your
    own queries. The schema is described in the plugin's README and in
    :mod:`kaneda_influx.line_protocol`.
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
            self.client, self._password = _client_for_url(connection_url, timeout, verify_ssl)
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
        self._transport = _transport_for(self.client)
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
                f"{redact_url(url)} names no database: use influxdb://host:8086/<database>"
            )
        return cls(**options)

    def check(self, metric: Metric) -> None:
        """Refuse list tags, nested custom values and names InfluxDB would misread."""
        line_protocol.check(metric)

    def send(self, batch: Sequence[Metric]) -> None:
        """Write the batch in one request (``precision=n``), creating the database first.

        A batch larger than the server's ``max-body-size`` (413) is written in halves.
        When InfluxDB stores part of a batch and drops the rest (a field type conflict),
        the error names the dropped metrics if they can be told apart.
        """
        if not self._database_ready:
            self._create_database()
        try:
            self._write(line_protocol.lines(batch).encode("utf-8"))
        except InfluxDBClientError as error:
            if error.code == 413 and len(batch) > 1:
                self._send_in_halves(batch)
                return
            if error.code == 404:
                self._database_ready = False  # dropped meanwhile: create it again next time
            failed = self._dropped(batch, error) if error.code == 400 else None
            raise self._delivery_error("writing", error, failed) from None
        except Exception as error:  # noqa: BLE001 - translated below
            raise self._delivery_error("writing", error) from None

    def _send_in_halves(self, batch: Sequence[Metric]) -> None:
        """Send both halves; if either fails, raise for exactly what was not stored."""
        half = len(batch) // 2
        failed: list[Metric] = []
        errors: list[DeliveryError] = []
        for part in (batch[:half], batch[half:]):
            try:
                self.send(part)
            except DeliveryError as error:
                failed.extend(part if error.metrics is None else error.metrics)
                errors.append(error)
        if errors:
            # Retry when any part may succeed later; a part refused for good is refused
            # again then, and reported as such.
            retryable = any(error.retryable for error in errors)
            raise DeliveryError(str(errors[0]), retryable=retryable, metrics=failed)

    def _write(self, body: bytes) -> None:
        self._transport.post("write", {"db": self.database, "precision": "n"}, body)

    def _dropped(self, batch: Sequence[Metric], error: InfluxDBClientError) -> list[Metric] | None:
        """The metrics of ``batch`` a partial write dropped, or None when unsure.

        InfluxDB stores the points it can and reports only the first field type
        conflict and a count (``dropped=N``). The field types now stored tell which of
        our points were refused; the answer is trusted only if it matches the count.
        """
        found = _DROPPED.search(str(error))
        if not found or "partial write" not in str(error):
            return None
        try:
            stored = self._field_types({metric.kind for metric in batch})
        except Exception as query_error:  # noqa: BLE001 - best effort: all failed, then
            log.debug("kaneda-influx: cannot read field types: %s", self.redact(str(query_error)))
            return None
        dropped = [
            metric
            for metric in batch
            if any(
                kind not in stored.get((metric.kind, key), ())
                for key, kind in line_protocol.field_types(metric)
            )
        ]
        return dropped if len(dropped) == int(found.group(1)) else None

    def _field_types(self, measurements: set[str]) -> dict[tuple[str, str], set[str]]:
        """``{(measurement, field): {types}}`` from ``SHOW FIELD KEYS``."""
        names = ", ".join(quote_ident(name) for name in sorted(measurements))
        result = self._transport.query(
            f"SHOW FIELD KEYS ON {quote_ident(self.database)} FROM {names}", self.database
        )
        types: dict[tuple[str, str], set[str]] = {}
        for series in result.get("series", []):
            for field_key, field_type in series["values"]:
                types.setdefault((series["name"], field_key), set()).add(field_type)
        return types

    def _create_database(self) -> None:
        with self._setup_lock:
            if self._database_ready:
                return
            try:
                self._transport.query(f"CREATE DATABASE {quote_ident(self.database)}")
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

    def _delivery_error(
        self, doing: str, error: Exception, failed: Sequence[Metric] | None = None
    ) -> DeliveryError:
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
            if failed is not None:
                return DeliveryError(
                    f"{where} stored part of the batch and dropped {len(failed)} metrics "
                    f"({code}): {detail}",
                    retryable=False,
                    metrics=failed,
                )
            if code == 413:
                message = (
                    f"{where} refused a metric larger than its [http] max-body-size (413 "
                    f"while {doing}): raise max-body-size or report smaller values"
                )
                return DeliveryError(message, retryable=False)
            if "HTTP request to an HTTPS server" in detail:
                message = (
                    f"{where} serves HTTPS only ({code} while {doing}): use an "
                    "https+influxdb:// URL"
                )
                return DeliveryError(message, retryable=False)
            if "partial write" in detail:
                message = (
                    f"{where} stored part of the batch and dropped the rest ({code}): {detail}"
                )
            else:
                message = f"{where} refused the batch while {doing} ({code}): {detail}"
            # A point it cannot parse refuses the request (or that point alone) without
            # saying which metric it was: halving the batch finds it, the rest is stored.
            isolate = code == 400 and ("unable to parse" in detail or "partial write" in detail)
            return DeliveryError(message, retryable=code in (408, 429), isolate=isolate)
        if isinstance(error, ssl.SSLCertVerificationError) or (
            isinstance(error, OSError) and "CERTIFICATE_VERIFY_FAILED" in str(error)
        ):
            # Retrying cannot help: the certificate will not change by itself.
            message = (
                f"{where}: the server's TLS certificate did not verify while {doing}: "
                f"{detail}. Give the server a certificate your system trusts, or pass "
                "verify_ssl=False (?verify_ssl=false in a URL) for a self-signed one"
            )
            return DeliveryError(message, retryable=False)
        if isinstance(error, (OSError, http.client.HTTPException, RequestException)):
            return DeliveryError(f"{where} unreachable while {doing}: {detail}", retryable=True)
        return DeliveryError(f"{where} failed {doing}: {detail}", retryable=False)

    def redact(self, text: str) -> str:
        """``text`` with the password masked (as given, and as a URL would escape it)."""
        if not self._password:
            return text
        return redact_text(text, self._password, quote(self._password, safe=""))

    def after_fork(self) -> None:
        """Drop the parent's connection and session; the child opens its own."""
        self._transport.forget()
        abandon(self.client._session)
        self.client._session = requests.Session()
        self._setup_lock = threading.Lock()

    def close(self) -> None:
        """Close the connection and the client's HTTP session (a client you passed in too)."""
        self._transport.close()
        self.client.close()

    def __repr__(self) -> str:
        user = f"{self.client._username}:{MASK}@" if self.client._username else ""
        return f"<InfluxBackend {user}{self.client._host}:{self.client._port}/{self.database}>"


def _transport_for(client: InfluxDBClient) -> HTTPTransport:
    """A transport to the server ``client`` talks to, with its credentials and timeout."""
    return HTTPTransport(
        client._host,
        client._port,
        tls=client._scheme == "https",
        verify_ssl=bool(client._verify_ssl),
        timeout=float(client._timeout or 5),
        username=client._username,
        password=client._password,
    )


def _client_for_url(
    url: str, timeout: float, verify_ssl: bool
) -> tuple[InfluxDBClient, str | None]:
    """A client for ``influxdb://user:pw@host:port/db`` (``https+influxdb://`` for TLS).

    Parsed here rather than by ``InfluxDBClient.from_dsn``, which keeps percent-escapes
    in the credentials (a password ``p@ss`` written ``p%40ss`` would be refused).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConfigurationError(
            f"{redact_url(url)} is not a valid InfluxDB URL: {error}"
        ) from None
    transport = {part for part in parts.scheme.lower().split("+")}
    if not transport & {"influxdb", "influx"} or transport - {
        "influxdb",
        "influx",
        "https",
        "http",
    }:
        raise ConfigurationError(
            f"{redact_url(url)} is not an InfluxDB URL: use influxdb://user:password@host:8086/db "
            "(https+influxdb:// for TLS)"
        )
    password = unquote(parts.password) if parts.password is not None else None
    client = InfluxDBClient(
        host=parts.hostname or "localhost",
        port=port or 8086,
        username=unquote(parts.username) if parts.username else None,
        password=password,
        ssl="https" in transport,
        verify_ssl=verify_ssl,
        timeout=timeout,
        retries=1,  # one attempt per request: the dispatcher retries, with backoff
    )
    return client, password
