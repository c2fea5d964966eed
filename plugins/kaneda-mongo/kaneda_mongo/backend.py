"""``MongoBackend``: one ``insert_many`` per batch, optionally into a time-series collection."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
from difflib import get_close_matches
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import dns.exception
import dns.resolver
import pymongo
from pymongo import MongoClient
from pymongo.common import URI_OPTIONS_VALIDATOR_MAP
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)
from pymongo.errors import ConfigurationError as DriverConfigurationError
from pymongo.results import InsertOneResult

from kaneda_core import Backend, DeliveryError, InvalidMetric, Metric
from kaneda_core.arguments import argument_error, check_arguments
from kaneda_core.backend import option_twice
from kaneda_core.deadline import deadline
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured
from kaneda_core.forking import abandon
from kaneda_core.layouts import DEFAULT_LAYOUT, check_layout
from kaneda_core.limits import refuse_ints_beyond, refuse_text_over
from kaneda_core.redact import redact_text, redact_url
from kaneda_core.urls import check_credentials_escaped, check_host, parse_url, url_password

from .layouts import LAYOUTS

#: The longest string a metric may hold: MongoDB's documents are at most 16 MiB.
MAX_TEXT = 16 * 1024 * 1024 - 64 * 1024
DUPLICATE_KEY = 11000
AUTH_FAILED = 18
UNAUTHORIZED = 13
GRANULARITIES = ("seconds", "minutes", "hours")
#: How long after ``timeout`` a server selection still waiting is woken to give up: it
#: sleeps in 0.5 s steps (pymongo's minimum heartbeat) and looks at the clock only then.
_WAKE_AFTER = 0.005

#: Query options of a Kaneda URL that are the backend's, not the MongoDB driver's.
_OWN_OPTIONS = ("collection_name", "timeout", "time_series", "granularity", "layout")


class MongoBackend(Backend):
    """MongoDB backend.

    :param db_name: name of the MongoDB database.
    :param collection_name: name of the collection metrics are stored in.
    :param client: a ``pymongo.MongoClient`` to use instead of building one.
    :param connection_url: ``mongodb://localhost:27017/`` (or ``mongodb+srv://``).
    :param host: server host.
    :param port: server port.
    :param timeout: bounds each operation as a whole, server selection included
        (milliseconds).
    :param time_series: create the collection as a time-series collection (MongoDB 5.0+)
        if it does not exist.
    :param granularity: the time-series granularity: seconds, minutes or hours.
    :param layout: ``"kaneda2"`` (the default) or ``"kaneda1"``, the documents kaneda
        1.0 wrote (see :mod:`kaneda_mongo.layouts`).

    The client connects lazily: constructing the backend never waits for a server.
    """

    settings_namespace = "MONGO"
    example_url = "mongodb://localhost:27017/metrics?collection_name=metrics"

    def __init__(
        self,
        db_name: str,
        collection_name: str,
        client: MongoClient[Any] | None = None,
        connection_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        timeout: int = 300,
        *,
        time_series: bool = False,
        granularity: str = "seconds",
        layout: str = DEFAULT_LAYOUT,
    ) -> None:
        check_arguments(MongoBackend, locals())
        for field, value in (("db_name", db_name), ("collection_name", collection_name)):
            if not value:
                raise argument_error(MongoBackend, field, "a non-empty string", value)
        if granularity not in GRANULARITIES:
            raise ConfigurationError(
                f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}"
            )
        self.layout = check_layout(layout)
        self._document = LAYOUTS[self.layout]
        self._password: str | None = None
        self._srv_host: str | None = None
        if client is not None:
            if not isinstance(client, MongoClient):
                raise ImproperlyConfigured(
                    f'MongoBackend: "client" parameter is not an instance of '
                    f"MongoClient client: got {client!r} ({type(client).__name__}). For example: "
                    f"client=MongoClient('mongodb://localhost:27017/'), or a URL such as "
                    f"{self.example_url}"
                )
            self.client = client
            self._new_client = None
        elif connection_url:
            check_credentials_escaped(connection_url)
            self._password = url_password(connection_url)
            parts = urlsplit(connection_url)
            dns_bound: dict[str, Any] = {}
            if parts.scheme.lower() == "mongodb+srv":
                self._srv_host = parts.hostname or ""
                given = {key.lower() for key, _ in parse_qsl(parts.query)}
                if "connecttimeoutms" not in given:
                    # pymongo bounds each DNS lookup of a mongodb+srv:// URL (SRV, then
                    # TXT) by connectTimeoutMS, 20 s unless given.
                    dns_bound["connectTimeoutMS"] = timeout
            self._new_client = functools.partial(
                MongoClient,
                connection_url,
                serverSelectionTimeoutMS=timeout,
                connect=False,
                tz_aware=True,
                **dns_bound,
            )
            self.client = self._checked_client(self._new_client)
        else:
            self._new_client = functools.partial(
                MongoClient,
                host=host,
                port=port,
                serverSelectionTimeoutMS=timeout,
                connect=False,
                tz_aware=True,
            )
            self.client = self._checked_client(self._new_client)
        self.timeout = timeout
        self.db_name = db_name
        self.collection_name = collection_name
        self.time_series = time_series
        self.granularity = granularity
        self.collection = self.client[db_name][collection_name]
        self._ready = not time_series
        self._setup_lock = threading.Lock()

    def _checked_client(self, new_client: Any) -> MongoClient[Any]:
        """``new_client()``; what pymongo refuses in the URL or options is a ConfigurationError."""
        try:
            client: MongoClient[Any] = new_client()
        except (PyMongoError, ValueError, TypeError, OSError) as error:  # OSError: tlsCAFile
            args, kwargs = new_client.args, new_client.keywords
            shown = redact_url(args[0]) if args else f"{kwargs.get('host')}:{kwargs.get('port')}"
            raise ConfigurationError(
                f"pymongo refuses {shown}: {self.redact(str(error))}. For example: "
                f"{self.example_url}"
            ) from None
        return client

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MongoBackend:
        """``mongodb://user:pw@host:27017/db?collection_name=metrics`` (``mongodb+srv://`` too).

        ``collection_name``, ``timeout``, ``time_series`` and ``granularity`` are Kaneda's;
        the other query options (``authSource``, ``replicaSet``, ``tls`` ...) go to pymongo.
        """
        check_host(url, cls.example_url)
        parse_url(url, cls.example_url, several_hosts=True)
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        _check_query(url, query)
        own = {k: v for k, v in query if k in _OWN_OPTIONS}
        # ':' and ',' kept as written: pymongo reads readPreferenceTags=dc:ny,rack:1 unquoted.
        driver_query = urlencode([(k, v) for k, v in query if k not in _OWN_OPTIONS], safe=":,")
        scheme = "mongodb+srv" if "srv" in parts.scheme.lower().split("+") else "mongodb"
        connection_url = urlunsplit((scheme, parts.netloc, parts.path, driver_query, ""))
        options: dict[str, Any] = {"connection_url": connection_url}
        db_name = unquote(parts.path).strip("/")
        if db_name:
            options["db_name"] = db_name
        if "collection_name" in own:
            options["collection_name"] = own["collection_name"]
        if "timeout" in own:
            options["timeout"] = _number(own["timeout"], "timeout", url)
        if "time_series" in own:
            options["time_series"] = own["time_series"].lower() in ("1", "true", "yes", "on")
        if "granularity" in own:
            options["granularity"] = own["granularity"]
        if "layout" in own:
            options["layout"] = own["layout"]
        options.update(overrides)
        for needed in ("db_name", "collection_name"):
            if needed not in options:
                raise ConfigurationError(
                    f"{redact_url(url)} names no {needed}: use "
                    "mongodb://host:27017/<db_name>?collection_name=<collection>"
                )
        return cls(**options)

    def check(self, metric: Metric) -> None:
        """Refuse what MongoDB cannot store: keys it would read as operators or paths
        (``$x``, ``a.b``), integers beyond 64 bits, a document over 16 MiB."""
        _check_keys(metric.value, "value")
        _check_keys(metric.tags, "tags")
        if type(metric.value) is not float:
            refuse_ints_beyond(metric, 64, "MongoDB")
        if type(metric.id) is int and not -(2**63) <= metric.id < 2**63:  # the _id
            raise InvalidMetric(
                f"id_ is an integer of {metric.id.bit_length()} bits; MongoDB stores integers "
                f"of at most 64 bits: give the id as a string ({str(metric.id)!r})"
            )
        refuse_text_over(metric, MAX_TEXT, "MongoDB", "a document is at most 16 MiB")

    def send(self, batch: Sequence[Metric]) -> list[InsertOneResult]:
        """Insert the batch with one unordered ``insert_many``.

        Returns an ``InsertOneResult`` per metric (kaneda 1.0's answer for one insert).
        """
        if not self._ready:
            self._create_time_series()
        documents = [self.document(metric) for metric in batch]
        # insert_many gives the others an ObjectId: only these can meet themselves again.
        with_id = ["_id" in document for document in documents]
        acknowledged = True
        try:
            # timeout bounds the whole operation (server selection, every read), not
            # each read: a server that answers a byte at a time cannot hold it open.
            with pymongo.timeout(self.timeout / 1000), self._selection_bounded():
                result = self.collection.insert_many(documents, ordered=False)
            acknowledged = result.acknowledged
        except BulkWriteError as error:
            self._raise_for_write_errors(batch, with_id, error)
        except PyMongoError as error:
            raise self._delivery_error(error) from None
        # insert_many gave each document without one the _id it stored it under.
        return [InsertOneResult(document.get("_id"), acknowledged) for document in documents]

    @contextlib.contextmanager
    def _selection_bounded(self) -> Iterator[None]:
        """Make pymongo's server selection give up at ``timeout``, not at the next 0.5 s.

        Its loop waits on the topology's condition in steps of 0.5 s (the minimum
        heartbeat) and compares the clock with its deadline only when woken: a watchdog
        wakes it just after ``timeout``, and it raises ServerSelectionTimeoutError then.
        """

        def wake() -> None:
            topology = getattr(self.client, "_topology", None)  # made late for SRV
            condition = getattr(topology, "_condition", None)
            if condition is not None:  # pymongo's; mongomock has none
                with condition:
                    condition.notify_all()

        with deadline(self.timeout / 1000 + _WAKE_AFTER, wake):
            yield

    def document(self, metric: Metric) -> dict[str, Any]:
        """The document stored for ``metric``, in this backend's layout."""
        return self._document(metric, self.time_series)

    def _raise_for_write_errors(
        self, batch: Sequence[Metric], with_id: Sequence[bool], error: BulkWriteError
    ) -> None:
        failed = []
        reasons = []
        for write_error in error.details.get("writeErrors", []):
            index = write_error["index"]
            metric = batch[index]
            if with_id[index] and _duplicate_id(write_error):
                # The document carried its own _id (the metric's, a custom value's or
                # generated from the metric): that document is stored already.
                continue
            failed.append(metric)
            reasons.append(f"{write_error.get('code')}: {write_error.get('errmsg')}")
        concern = error.details.get("writeConcernErrors") or []
        if concern:
            raise DeliveryError(
                f"MongoDB write concern failed for {self._where()}: {concern[0].get('errmsg')}",
                retryable=True,
            )
        if failed:
            raise DeliveryError(
                f"MongoDB refused {len(failed)} documents in {self._where()}: "
                + self.redact("; ".join(sorted(set(reasons)))),
                retryable=False,
                metrics=failed,
            )

    def _create_time_series(self) -> None:
        with self._setup_lock:
            if self._ready:
                return
            try:
                version = self.client.server_info().get("versionArray", [0])
                if list(version[:2]) < [5, 0]:
                    raise DeliveryError(
                        f"time-series collections need MongoDB 5.0 or later; the server runs "
                        f"{'.'.join(map(str, version[:3]))}. Use time_series=False",
                        retryable=False,
                    )
                database = self.client[self.db_name]
                if self.collection_name not in database.list_collection_names():
                    database.create_collection(
                        self.collection_name,
                        timeseries={
                            "timeField": "timestamp",
                            "metaField": "meta",
                            "granularity": self.granularity,
                        },
                    )
            except CollectionInvalid:
                pass  # created meanwhile by another process
            except PyMongoError as error:
                raise self._delivery_error(error) from None
            self._ready = True

    def _delivery_error(self, error: PyMongoError) -> DeliveryError:
        detail = self.redact(f"{type(error).__name__}: {error}")
        if isinstance(error, DriverConfigurationError) and isinstance(
            error.__cause__, dns.exception.DNSException
        ):
            return self._dns_error(error.__cause__)
        if isinstance(error, OperationFailure) and error.code in (AUTH_FAILED, UNAUTHORIZED):
            return DeliveryError(
                f"MongoDB refused the credentials or the permission for {self._where()} "
                f"({error.code}): check the user, password and authSource",
                retryable=False,
            )
        if isinstance(error, ServerSelectionTimeoutError):
            if "CERTIFICATE_VERIFY_FAILED" in str(error):
                # Retrying cannot help: the certificate will not change by itself.
                return DeliveryError(
                    self._unreachable(error).partition(". Check that")[0]
                    + ". The server's TLS certificate did not verify: give it a certificate "
                    "this machine trusts, or pass the CA that signed it (?tlsCAFile=/path.pem)",
                    retryable=False,
                )
            return DeliveryError(self._unreachable(error), retryable=True)
        retryable = isinstance(error, ConnectionFailure) or error.has_error_label(
            "RetryableWriteError"
        )
        doing = "unreachable" if isinstance(error, ConnectionFailure) else "failed"
        return DeliveryError(
            f"MongoDB {doing} for {self._where()}: {_first_line(detail)}", retryable=retryable
        )

    def _dns_error(self, cause: dns.exception.DNSException) -> DeliveryError:
        """The DNS lookup of a ``mongodb+srv://`` host failed: say whether it may pass."""
        host = self._srv_host or "the mongodb+srv:// host"
        what = f"MongoDB's DNS lookup of {host} (its SRV record) for {self._where()}"
        if isinstance(cause, (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer)):
            missing = (
                "does not exist"
                if isinstance(cause, dns.resolver.NXDOMAIN)
                else ("has no SRV record")
            )
            return DeliveryError(
                f"{what} failed: the name {missing}: check the cluster's host name in the "
                "mongodb+srv:// URL (copy it from your provider's connection string), or use "
                "mongodb://host:port/ for a server without SRV records",
                retryable=False,
            )
        return DeliveryError(
            f"{what} failed: {_first_line(self.redact(str(cause)))}. Check that this "
            "machine's DNS resolver answers (the lookup is bounded by timeout, or by "
            "connectTimeoutMS in the URL)",
            retryable=True,
        )

    def _unreachable(self, error: ServerSelectionTimeoutError) -> str:
        """One line for "no server answered": each address tried, what failed, what to check.

        pymongo's own message holds the whole topology description (~900 characters);
        this keeps, for each server, its address and the reason it could not be used.
        """
        try:
            servers = self.client.topology_description.server_descriptions()
        except Exception:  # noqa: BLE001 - the summary is best effort; the cause is below
            servers = {}
        reasons = []
        for (host, port), server in list(servers.items())[:3]:
            reason = str(server.error) if server.error else server.server_type_name
            reason = reason.split(" (configured timeouts", 1)[0]
            reason = reason.removeprefix(f"{host}:{port}: ")
            reasons.append(f"{host}:{port}: {reason}")
        if len(servers) > 3:
            reasons.append(f"and {len(servers) - 3} more")
        tried = "; ".join(reasons) or _first_line(str(error)).split(", Timeout:", 1)[0]
        try:
            waited = f" within {self.client.options.server_selection_timeout * 1000:g} ms"
        except Exception:  # noqa: BLE001 - a client double without options
            waited = ""
        return self.redact(
            f"MongoDB unreachable for {self._where()}: no server could be used{waited} "
            f"({tried}). Check that mongod runs at that address, the host and port (and "
            "replicaSet) in the URL, and that this machine can reach it"
        )

    def _where(self) -> str:
        return f"{self.db_name}.{self.collection_name}"

    def redact(self, text: str) -> str:
        """``text`` with the connection password masked."""
        return redact_text(text, self._password)

    def after_fork(self) -> None:
        """Drop the parent's client; the child builds its own (a client you passed in is kept).

        pymongo resets a client's pools after a fork itself, with a warning; building a
        new one keeps the child clear of the parent's monitors and sessions.
        """
        self._setup_lock = threading.Lock()
        if self._new_client is None:
            return
        abandon(self.client)
        self.client = self._new_client()
        self.collection = self.client[self.db_name][self.collection_name]

    def close(self) -> None:
        """Close the client (connections and monitors)."""
        self.client.close()

    def __repr__(self) -> str:
        return f"<MongoBackend {self._where()}>"


def _duplicate_id(write_error: dict[str, Any]) -> bool:
    """Whether ``write_error`` is a duplicate of the ``_id``, not of another unique index."""
    if write_error.get("code") != DUPLICATE_KEY:
        return False
    pattern = write_error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["_id"]
    message = str(write_error.get("errmsg", ""))
    return "index: " not in message or "index: _id_ " in message


def _first_line(text: str, limit: int = 300) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_keys(item: Any, field: str) -> None:
    """Refuse a key MongoDB would misread in ``item``, at any depth of dicts and lists
    (the core limits nesting to 32 levels)."""
    if isinstance(item, dict):
        for key, value in item.items():
            if isinstance(key, str) and (key.startswith("$") or "." in key):
                raise InvalidMetric(
                    f"{field} key {key!r} starts with '$' or contains '.', which MongoDB "
                    "reads as an operator or a path: rename it (e.g. with '_')"
                )
            _check_keys(value, f"{field}[{key!r}]")
    elif isinstance(item, (list, tuple)):
        for index, value in enumerate(item):
            _check_keys(value, f"{field}[{index}]")


#: Query options pymongo takes, in lower case (it reads them in any case).
_DRIVER_OPTIONS = frozenset(URI_OPTIONS_VALIDATOR_MAP)
#: The one driver option that may be given more than once (a list of tag sets).
_REPEATABLE = frozenset(("readpreferencetags",))


def _check_query(url: str, query: list[tuple[str, str]]) -> None:
    """Refuse credentials in the query, an option neither Kaneda's nor pymongo's (pymongo
    only warns and drops it), and an option given twice (pymongo keeps the last)."""
    given: dict[str, tuple[str, str]] = {}  # the option as compared -> as written, its value
    for key, raw in query:
        if key.lower() in ("user", "username", "password"):
            raise ConfigurationError(
                f"{redact_url(url)} gives ?{key}= as an option; MongoDB takes credentials "
                "before the host: mongodb://user:password@host:27017/db?collection_name=m "
                "(escape reserved characters with %, e.g. @ as %40)"
            )
        same = key if key in _OWN_OPTIONS else key.lower()
        if same not in _OWN_OPTIONS and same not in _DRIVER_OPTIONS:
            close = get_close_matches(same, [*_OWN_OPTIONS, *sorted(_DRIVER_OPTIONS)], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"Unknown option {key!r} in {redact_url(url)} for MongoBackend (Kaneda's: "
                f"{', '.join(_OWN_OPTIONS)}; and pymongo's URI options, such as authSource, "
                f"replicaSet or tls).{hint}"
            )
        if same in given and same not in _REPEATABLE:  # which one was meant? Neither wins.
            raise option_twice(url, same, given[same][1], raw)
        given[same] = (key, raw)


def _number(raw: str, field: str, url: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(
            f"{field}={raw!r} in {redact_url(url)} is not a whole number of milliseconds"
        ) from None
