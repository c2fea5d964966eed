"""``InfluxBackend``: batches of metrics written to InfluxDB 1.x as line protocol."""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError
from influxdb.line_protocol import quote_ident
from requests.exceptions import RequestException

from kaneda_core import Backend, DeliveryError, Metric
from kaneda_core.arguments import argument_error, check_arguments
from kaneda_core.backend import url_options
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured
from kaneda_core.forking import abandon
from kaneda_core.layouts import DEFAULT_LAYOUT, check_layout
from kaneda_core.model import as_metric
from kaneda_core.redact import MASK, redact_text, redact_url
from kaneda_core.urls import check_host, parse_url

from . import field_types
from .field_types import KnownTypes
from .layouts import LAYOUTS, Layout
from .transport import BodyCutOff, HTTPTransport, Redirected, Request, RequestTimeout

log = logging.getLogger("kaneda.influx")

_A_TYPE = {
    field_types.FLOAT: "a float",
    field_types.INTEGER: "an integer",
    field_types.UNSIGNED: "an unsigned integer",
    field_types.STRING: "a string",
    field_types.BOOLEAN: "a boolean",
}

#: Rounds of learning stored field types and writing again, after a type conflict.
_CONFLICT_ROUNDS = 8
#: The largest request body the backend sends when a batch holds large metrics.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
#: A request's body, and the size of the line protocol in it (before compression).
_Payload = tuple[bytes, int]
#: Metrics per write request, by default: a larger batch is sent in parts, the next part
#: built while the server stores the one before (see ``bench/RESULTS.md``).
PART_SIZE = 5000


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
    :param timeout: bounds each request as a whole (seconds; None means the default),
        plus a second per MB of the request's body.
    :param verify_ssl: check the server's TLS certificate (default True).
    :param layout: ``"kaneda2"`` (the default) or ``"kaneda1"``, the measurements,
        tags and fields kaneda 1.0 wrote (see :mod:`kaneda_influx.layouts`).
    :param gzip: compress each write request (``Content-Encoding: gzip``); worth it when
        the network, not the server, is what limits (default False).
    :param part_size: at most this many metrics per write request (default 5,000): a
        larger batch is sent in parts, each part built while the server stores the one
        before it.

    Constructing it never touches the network; the database is created on the first
    delivery that reaches the server (or by :meth:`create_database`). Writes go over
    one keep-alive connection of the plugin's own (:mod:`kaneda_influx.transport`);
    ``client`` stays available for your own queries. The layouts are described in the
    plugin's README and in :mod:`kaneda_influx.layouts`.
    """

    settings_namespace = "INFLUX"
    example_url = "influxdb://user:password@localhost:8086/metrics"
    #: ``send`` takes the calls' records as they were queued (the layouts' line protocol
    #: reads them by position): no Metric is built per point.
    sends_records = True

    def __init__(
        self,
        database: str,
        client: InfluxDBClient | None = None,
        connection_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float | None = 0.3,
        *,
        verify_ssl: bool = True,
        layout: str = DEFAULT_LAYOUT,
        gzip: bool = False,
        part_size: int = PART_SIZE,
    ) -> None:
        check_arguments(InfluxBackend, locals())
        if part_size < 1:
            raise argument_error(
                InfluxBackend, "part_size", "a positive number of metrics", part_size
            )
        if timeout is None:  # kaneda 1.0 allowed it; Kaneda never waits without a bound
            timeout = 0.3
        if not database:
            raise argument_error(InfluxBackend, "database", "a non-empty string", database)
        self.database = database
        if client is not None:
            if not isinstance(client, InfluxDBClient):
                raise ImproperlyConfigured(
                    f'InfluxBackend: "client" parameter is not an instance of '
                    f"InfluxDBClient client: got {client!r} ({type(client).__name__}). "
                    "For example: client=InfluxDBClient(host='localhost', port=8086), or a URL "
                    "such as "
                    f"{self.example_url}"
                )
            self.client = client
            self._password = getattr(client, "_password", None)
        elif connection_url:
            self.client, self._password = _client_for_url(
                connection_url, timeout, verify_ssl, username, password
            )
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
        self.gzip = gzip
        self.part_size = part_size
        self._write_params = {"db": database, "precision": "n"}
        self._write_headers = {"Content-Encoding": "gzip"} if gzip else None
        self._database_ready = False
        self._setup_lock = threading.Lock()
        self.layout: Layout = LAYOUTS[check_layout(layout)]()
        if type(self).check is InfluxBackend.check:  # not a subclass's own check
            # The reporting calls run the layout's check directly: a call level less on
            # the hottest path (Metrics looks check up once; the class keeps the method),
            # and hand it the record they queue (the layouts' checks unpack it).
            self.check = self.layout.check_at_call  # type: ignore[method-assign,assignment]
            self.checks_records = True
        # Stored types learned from field type conflicts: measurement -> field -> type.
        self._known: KnownTypes = {}

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> InfluxBackend:
        """``influxdb://user:pw@host:8086/db?timeout=1`` (``https+influxdb://`` for TLS).

        No host is localhost (``influxdb:///metrics``, as in kaneda 1.0); a slash too
        many (``influxdb:///user:pw@host/db``) is refused.
        """
        check_host(url, cls.example_url, default="localhost")
        database = parse_url(url, cls.example_url).path.strip("/") or None
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
        self.layout.check(metric)

    def send(self, batch: Sequence[Metric]) -> list[bool]:
        """Write the batch (``precision=n``), creating the database first.

        A batch of more than ``part_size`` metrics, or of more than MAX_REQUEST_BYTES of
        line protocol, is written in parts, one request in flight while the next part is
        built. A part refused for what it holds fails its own metrics only; a failure
        that may pass on a retry (the server down, slow, overloaded) stops the batch
        there, and the error names that part and the parts not sent. A part larger than
        the server's ``max-body-size`` (413) is written in halves. When InfluxDB refuses
        points for a field type conflict, the backend learns the stored types and writes
        those points again, each number in its field's stored type when that loses
        nothing; the others are refused, each named. Returns ``True`` per metric (kaneda
        1.0's answer for a stored point).
        """
        if not self._database_ready:
            self._create_database()
        size = self.part_size
        pieces = deque(batch[start : start + size] for start in range(0, len(batch), size))
        # Requests built and not sent yet: (metrics, payload).
        parts: deque[tuple[Sequence[Metric], _Payload]] = deque()
        failed: list[Metric] = []
        errors: list[DeliveryError] = []
        requests = 0
        in_flight: tuple[Sequence[Metric], Request | Exception] | None = None
        while parts or pieces:
            if not parts:
                piece = pieces.popleft()
                try:
                    # Built while the request before is in flight: the server stores
                    # that part meanwhile.
                    parts.extend(self._requests(piece))
                except Exception as error:  # noqa: BLE001 - the rest is still sent
                    failed.extend(piece)
                    errors.append(self._unwritable(error))
                    continue
            part, body = parts.popleft()
            if in_flight is not None and self._settle(*in_flight, failed, errors):
                # The rest waits for the retry rather than for a timeout of its own.
                in_flight = None
                failed.extend(part)
                failed.extend(metric for unsent, _ in parts for metric in unsent)
                failed.extend(metric for piece in pieces for metric in piece)
                break
            in_flight = (part, self._start(body))
            requests += 1
        if in_flight is not None:
            self._settle(*in_flight, failed, errors)
        if len(errors) == 1 and len(failed) == len(batch) and requests <= 1:
            raise errors[0]  # one request (or none), the whole batch: its error as it is
        if errors:
            raise _combined(errors, failed)
        return [True] * len(batch)

    def _unwritable(self, error: Exception) -> DeliveryError:
        """The error for metrics whose line protocol could not be built: halving finds them."""
        return DeliveryError(
            f"kaneda-influx could not write metrics as line protocol: "
            f"{self.redact(f'{type(error).__name__}: {error}')}",
            retryable=False,
            isolate=True,
        )

    def _requests(self, piece: Sequence[Metric]) -> list[tuple[Sequence[Metric], _Payload]]:
        """The write requests for ``piece``: ``(metrics, body)``, each body bounded in size."""
        body = self.layout.lines(piece, self._known).encode("utf-8")
        if len(body) <= MAX_REQUEST_BYTES or len(piece) == 1:
            return [(piece, self._payload(body))]
        # Large metrics (long events): requests of a bounded size, each of which can
        # finish within the timeout (one line per metric).
        requests = []
        lines = body.split(b"\n")
        start = size = 0
        for index, line in enumerate(lines):
            if size and size + len(line) > MAX_REQUEST_BYTES:
                requests.append((piece[start:index], self._payload(b"\n".join(lines[start:index]))))
                start, size = index, 0
            size += len(line) + 1
        requests.append((piece[start:], self._payload(b"\n".join(lines[start:]))))
        return requests

    def _payload(self, body: bytes) -> _Payload:
        """What is sent for ``body``, and the size of the line protocol the server reads."""
        # wbits=31: a gzip container, as Content-Encoding: gzip says. Level 1, the
        # fastest: line protocol repeats itself and compresses well even so.
        return (zlib.compress(body, 1, wbits=31) if self.gzip else body), len(body)

    def _start(self, payload: _Payload) -> Request | Exception:
        """Send a write request; what sending raised stands for its answer."""
        data, size = payload
        try:
            return self._transport.send(
                "write",
                self._write_params,
                data,
                headers=self._write_headers,
                expect=204,
                size=size,  # its time bound grows with it, compressed or not
            )
        except Exception as error:  # noqa: BLE001 - reported by _outcome, in turn
            return error

    def _settle(
        self,
        part: Sequence[Metric],
        sent: Request | Exception,
        failed: list[Metric],
        errors: list[DeliveryError],
    ) -> bool:
        """Wait for the answer to ``part``'s request, recording a failure; True to stop.

        A failure that may pass on a retry stops the batch; a part refused for what it
        holds does not stop the others.
        """
        try:
            if isinstance(sent, Exception):
                raise sent
            sent.answer()
            return False
        except InfluxDBClientError as error:
            try:
                self._recover(part, error)
                return False
            except DeliveryError as failure:
                refusal = failure
        except Exception as error:  # noqa: BLE001 - translated here
            refusal = self._delivery_error("writing", error)
        failed.extend(part if refusal.metrics is None else refusal.metrics)
        errors.append(refusal)
        return refusal.retryable

    def _recover(self, part: Sequence[Metric], error: InfluxDBClientError) -> None:
        """Store what can be stored of a part InfluxDB refused; raise for the rest."""
        if error.code == 413 and len(part) > 1:
            self._send_in_halves(part)
            return
        if error.code == 404:
            self._database_ready = False  # dropped meanwhile: create it again next time
        if error.code == 400 and field_types.is_conflict(server_message(error)):
            self._resolve_conflicts(part, error)
            return
        raise self._delivery_error("writing", error, points=len(part))

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
            raise _combined(errors, failed)

    def _write(self, body: bytes) -> None:
        """Write line protocol in one request, waiting for the answer."""
        sent = self._start(self._payload(body))
        if isinstance(sent, Exception):
            raise sent
        sent.answer()

    def _resolve_conflicts(self, batch: Sequence[Metric], error: InfluxDBClientError) -> None:
        """After a field type conflict: learn the stored types, write the batch again.

        Writing the batch again is safe: a point already stored is overwritten by the
        same point (same series, time and fields). A round that learns nothing after a
        conflict InfluxDB named ends it; after a bare "field type conflict" (nothing was
        stored, but the fields now exist) the batch is written again regardless. What
        still conflicts at the end is refused, metric by metric.
        """
        metrics = list(map(as_metric, batch))  # a record's fields are read by name here
        for _ in range(_CONFLICT_ROUNDS):
            learned = self._learn_field_types(metrics, error)
            named = field_types.parse_conflict(server_message(error)) is not None
            if named and not learned:
                break
            try:
                self._write(self.layout.lines(metrics, self._known).encode("utf-8"))
                return
            except InfluxDBClientError as again:
                if again.code != 400 or not field_types.is_conflict(server_message(again)):
                    raise self._delivery_error("writing", again) from None
                error = again
            except Exception as again:  # noqa: BLE001 - translated below
                raise self._delivery_error("writing", again) from None
        raise self._refusal(batch, metrics, error)

    def _learn_field_types(self, batch: Sequence[Metric], error: InfluxDBClientError) -> bool:
        """Learn the stored types of the batch's fields; whether anything new was learned.

        From the error (it names the first conflict, with the type of the shard being
        written) and from ``SHOW FIELD KEYS`` (which needs READ; without it the error's
        conflict is all there is). A field with several types across shards is learned
        only from an error.
        """
        stored: dict[tuple[str, str], set[str]] = {}
        try:
            stored = self._field_types({metric.kind for metric in batch})
        except Exception as query_error:  # noqa: BLE001 - the error's conflict is enough
            log.debug("kaneda-influx: cannot read field types: %s", self.redact(str(query_error)))
        conflict = field_types.parse_conflict(server_message(error))
        if conflict is not None:
            stored[(conflict.measurement, conflict.field)] = {conflict.stored}
        learned = False
        for metric in batch:
            known = self._known.get(metric.kind)
            for key, written, _ in self.layout.typed_fields(metric, known):
                types = stored.get((metric.kind, key))
                if types is None or len(types) != 1 or written in types:
                    continue
                (stored_type,) = types
                if (known or {}).get(key) != stored_type:
                    known = self._known.setdefault(metric.kind, {})
                    known[key] = stored_type
                    learned = True
        return learned

    def _refusal(
        self, batch: Sequence[Metric], metrics: list[Metric], error: InfluxDBClientError
    ) -> DeliveryError:
        """The error for the metrics that no stored type can take without loss.

        They are named only when their number is the ``dropped=N`` InfluxDB reported;
        otherwise the whole batch is reported as failed (part of it was stored). The
        error names the batch's own objects; ``metrics`` are the same, as Metrics.
        """
        refused: list[Metric] = []
        reasons: list[str] = []
        for given, metric in zip(batch, metrics, strict=True):
            known = self._known.get(metric.kind) or {}
            for key, written, _ in self.layout.typed_fields(metric, known):
                stored_type = known.get(key)
                if stored_type is not None and stored_type != written:
                    value = dict(self.layout.fields(metric))[key]
                    reasons.append(
                        f'field "{key}" of measurement "{metric.kind}" is stored as '
                        f"{stored_type}, the value {field_types.describe(value)} is "
                        f"{_A_TYPE[written]}: it cannot be written as {stored_type} without "
                        "losing information"
                    )
                    refused.append(given)
                    break
        if not refused or len(refused) != field_types.dropped_count(server_message(error)):
            return self._delivery_error("writing", error)
        where = f"InfluxDB at {self.client._host}:{self.client._port} (database {self.database!r})"
        unique = sorted(set(reasons))
        more = f" (and {len(unique) - 5} more)" if len(unique) > 5 else ""
        refusal = DeliveryError(
            f"{where} stored part of the batch and dropped {len(refused)} metrics (400): "
            f"field type conflict: {'; '.join(unique[:5])}{more}",
            retryable=False,
            metrics=refused,
        )
        return self._confirm_rest(batch, metrics, refusal)

    def _confirm_rest(
        self, batch: Sequence[Metric], metrics: list[Metric], refusal: DeliveryError
    ) -> DeliveryError:
        """``refusal``, once the rest of the batch is known to be stored: written again.

        InfluxDB answers with one shard's error and its ``dropped=N``, leaving out the
        points it dropped beyond the retention policy and other shards' errors: that
        the conflicts account for N does not say the rest was stored. Writing it again
        does (a stored point is overwritten by itself); what it still refuses is sought
        by halving.
        """
        refused = {id(metric) for metric in refusal.metrics or ()}
        rest = [
            (given, metric)
            for given, metric in zip(batch, metrics, strict=True)
            if id(given) not in refused
        ]
        if not rest:
            return refusal
        try:
            self._write(self.layout.lines([m for _, m in rest], self._known).encode("utf-8"))
        except Exception as again:  # noqa: BLE001 - translated here
            failure = self._delivery_error("writing", again)
            return DeliveryError(
                f"{refusal}; and writing the rest again: {failure}",
                retryable=failure.retryable,
                metrics=[given for given, _ in rest],
                rejected=refusal.metrics or (),
                isolate=failure.isolate,
            )
        return refusal

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

    def create_database(self, timeout: float | None = None) -> bool:
        """Create the database now, waiting at most ``timeout`` seconds; best effort.

        Returns True when the database exists afterwards. When the server cannot be
        reached in time, or refuses, it returns False (never raises): the first delivery
        tries again. ``timeout`` defaults to the backend's.
        """
        query = f"CREATE DATABASE {quote_ident(self.database)}"
        try:
            self._transport.query(query, timeout=timeout)
        except (InfluxDBClientError, InfluxDBServerError, OSError, http.client.HTTPException,
                ValueError, MemoryError) as error:  # fmt: skip
            log.debug(
                "kaneda-influx: could not create %r now: %s", self.database, self.redact(str(error))
            )
            return False
        with self._setup_lock:
            self._database_ready = True
        return True

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
                    self._shown_user(),
                    self.database,
                )
            except Exception as error:  # noqa: BLE001 - translated below
                raise self._delivery_error("creating the database", error) from None
            self._database_ready = True

    def _delivery_error(
        self, doing: str, error: Exception, *, points: int | None = None
    ) -> DeliveryError:
        """What ``error`` means for the metrics being written (``points`` of them, if known)."""
        where = f"InfluxDB at {self.client._host}:{self.client._port} (database {self.database!r})"
        detail = self.redact(f"{type(error).__name__}: {error}")
        excerpt = _shortened(detail)  # detail is read below; a message shows the excerpt
        if isinstance(error, InfluxDBServerError):
            return DeliveryError(f"{where} failed {doing}: {excerpt}", retryable=True)
        if isinstance(error, InfluxDBClientError):
            code = error.code
            if code == 401:
                message = (
                    f"{where} refused the credentials of user {self._shown_user()!r} "
                    f"while {doing} (401): check the username and password"
                )
                return DeliveryError(message, retryable=False)
            if code == 403:
                message = (
                    f"{where}: user {self._shown_user()!r} is not allowed to write "
                    f"(403 while {doing}): grant it WRITE on the database"
                )
                return DeliveryError(message, retryable=False)
            if code == 404:
                message = (
                    f"{where}: the database does not exist and could not be created (404 "
                    f'while {doing}); create it as an admin: CREATE DATABASE "{self.database}"'
                )
                return DeliveryError(message, retryable=True)
            if isinstance(error, BodyCutOff):
                message = (
                    f"{where} closed the connection in the middle of a request of "
                    f"{error.size} bytes holding one metric, without an answer, while "
                    f"{doing}: InfluxDB does so past its [http] max-body-size; raise "
                    "max-body-size or report smaller values"
                )
                return DeliveryError(message, retryable=False)
            if code == 413:
                message = (
                    f"{where} refused a metric larger than its [http] max-body-size (413 "
                    f"while {doing}): raise max-body-size or report smaller values"
                )
                return DeliveryError(message, retryable=False)
            if isinstance(error, Redirected):
                shown = self.redact(redact_url(error.location or "")) or "nowhere (no Location)"
                message = (
                    f"{where} answered {doing} with a redirect ({code}) to {shown}: Kaneda "
                    "does not follow redirects (they would carry the credentials elsewhere); "
                    "point the URL at the InfluxDB server itself, its own host and port"
                )
                return DeliveryError(message, retryable=False)
            if "HTTP request to an HTTPS server" in detail:
                message = (
                    f"{where} serves HTTPS only ({code} while {doing}): use an "
                    "https+influxdb:// URL"
                )
                return DeliveryError(message, retryable=False)
            if "partial write" in detail and field_types.dropped_count(detail) == points:
                # Every point of the request dropped (a clock hours behind the retention
                # policy): none was stored, and none need be sought by halving.
                what = "the metric" if points == 1 else f"all {points} metrics"
                return DeliveryError(
                    f"{where} dropped {what} of the request ({code}): {excerpt}", retryable=False
                )
            if "partial write" in detail:
                message = (
                    f"{where} stored part of the batch and dropped the rest ({code}): {excerpt}"
                )
            else:
                message = f"{where} refused the batch while {doing} ({code}): {excerpt}"
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
                f"{excerpt}. Give the server a certificate your system trusts, or pass "
                "verify_ssl=False (?verify_ssl=false in a URL) for a self-signed one"
            )
            return DeliveryError(message, retryable=False)
        if isinstance(error, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(error):
            # The TLS handshake met a plain-HTTP answer: retrying cannot help.
            message = (
                f"{where} does not speak TLS (its answer to the TLS handshake was not TLS, "
                f"while {doing}): it serves plain HTTP, so use an influxdb:// URL "
                "(tls off), or turn https-enabled on in the server's [http] section"
            )
            return DeliveryError(message, retryable=False)
        if isinstance(error, RequestTimeout) and error.connected:
            # Up and slow (overloaded, a long compaction, paused): not a wrong address.
            return DeliveryError(
                f"{where} accepted the connection but gave no complete answer while "
                f"{doing} ({error}): the server is slow or overloaded. A longer timeout= "
                "lets slow writes finish",
                retryable=True,
            )
        if isinstance(error, MemoryError):
            # Out of memory says nothing of the metrics (the transport says so of an
            # answer it was reading): they may pass once memory is free again.
            return DeliveryError(
                f"ran out of memory while {doing} for {where}: {excerpt}", retryable=True
            )
        if isinstance(error, (OSError, http.client.HTTPException, RequestException)):
            other = (
                "influxdb:// for plain HTTP" if self._transport.tls else "https+influxdb:// for TLS"
            )
            return DeliveryError(
                f"{where} unreachable while {doing}: {self.redact(_network_reason(error))}. "
                f"Check that influxd runs there, that host and port are right ({other}), and "
                "that this machine can reach it",
                retryable=True,
            )
        return DeliveryError(f"{where} failed {doing}: {excerpt}", retryable=False)

    def destination(self) -> str:
        # The database, not the server: a server moved (a new host name or port) is
        # still where rows buffered before the move belong.
        return f"influxdb database {self.database}"

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
        """Close the connection and the client's HTTP session (a client you passed in too).

        The series cache is emptied: a closed backend holds no memory for its series.
        """
        self._transport.close()
        self.client.close()
        self.layout.cache.clear()

    def _shown_user(self) -> str | None:
        """The user name as messages show it: masked when alone (it often is a token)."""
        return self.client._username if self._password else MASK

    def __repr__(self) -> str:
        user = f"{self._shown_user()}:{MASK}@" if self.client._username else ""
        return f"<InfluxBackend {user}{self.client._host}:{self.client._port}/{self.database}>"


def server_message(error: InfluxDBClientError) -> str:
    """The server's own error text (the body's ``error``), unescaped; else the error."""
    try:
        return str(json.loads(error.content)["error"])
    except (ValueError, TypeError, KeyError):
        return str(error)


def _combined(errors: list[DeliveryError], failed: list[Metric]) -> DeliveryError:
    """One error for the parts of a batch that failed: ``failed`` are their metrics.

    Retryable when any part may pass later (a part refused for good is refused again
    then, and reported as such); halved when every part was refused for what it holds.
    """
    retryable = any(error.retryable for error in errors)
    isolate = not retryable and all(error.isolate for error in errors)
    rejected = [metric for error in errors for metric in error.rejected]
    return DeliveryError(
        str(errors[0]), retryable=retryable, metrics=failed, rejected=rejected, isolate=isolate
    )


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
    url: str,
    timeout: float,
    verify_ssl: bool,
    username: str | None = None,
    password: str | None = None,
) -> tuple[InfluxDBClient, str | None]:
    """A client for ``influxdb://user:pw@host:port/db`` (``https+influxdb://`` for TLS).

    Parsed here rather than by ``InfluxDBClient.from_dsn``, which keeps percent-escapes
    in the credentials (a password ``p@ss`` written ``p%40ss`` would be refused).
    ``username`` and ``password``, when given, win over the URL's.
    """
    check_host(url, InfluxBackend.example_url, default="localhost")
    parts = parse_url(url, InfluxBackend.example_url)
    transport = {part for part in parts.scheme.split("+")}
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
    password = password if password is not None else parts.password
    client = InfluxDBClient(
        host=parts.host or "localhost",
        port=parts.port or 8086,
        username=username or parts.user,
        password=password,
        ssl="https" in transport,
        verify_ssl=verify_ssl,
        timeout=timeout,
        retries=1,  # one attempt per request: the dispatcher retries, with backoff
    )
    return client, password


#: Characters of a server's answer an error message shows, at most: InfluxDB's 400 to a
#: write repeats each line it could not parse (megabytes, for a large write).
SHOWN_ANSWER_CHARS = 2000


def _shortened(text: str) -> str:
    """``text``, its middle left out past SHOWN_ANSWER_CHARS (its end says ``dropped=N``)."""
    if len(text) <= SHOWN_ANSWER_CHARS:
        return text
    half = SHOWN_ANSWER_CHARS // 2
    left_out = len(text) - 2 * half
    return f"{text[:half]} ... ({left_out} characters left out) ... {text[-half:]}"


def _network_reason(error: Exception) -> str:
    """What failed, in a few words, from a requests error wrapping urllib3's long one."""
    inner = error.args[0] if error.args and isinstance(error.args[0], Exception) else error
    # urllib3 keeps the cause in ``reason``; ssl errors have one too, often None.
    reason = getattr(inner, "reason", None)
    text = str(inner if reason is None else reason)
    # "HTTPConnection(host='h', port=1): Failed to establish ..." -> "Failed to establish ..."
    if text.startswith("HTTP") and "): " in text:
        text = text.split("): ", 1)[1]
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
