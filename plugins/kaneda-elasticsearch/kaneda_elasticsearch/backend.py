"""``ElasticsearchBackend``: one ``_bulk`` request per batch into daily indices."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import reprlib
import socket
import threading
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from elastic_transport import SerializationError, TlsError, TransportError
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError
from urllib3.exceptions import NewConnectionError

from kaneda_core import Backend, DeliveryError, InvalidMetric, Metric
from kaneda_core.arguments import argument_error, check_arguments
from kaneda_core.backend import url_options
from kaneda_core.deadline import deadline, request_seconds
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured
from kaneda_core.forking import abandon
from kaneda_core.layouts import DEFAULT_LAYOUT, check_layout
from kaneda_core.limits import refuse_text_over
from kaneda_core.redact import MASK, redact_text, redact_url
from kaneda_core.urls import check_host, parse_url, url_password

from . import quiet, schema
from .layouts import LAYOUTS, Layout
from .node import SERIALIZERS, AnswerCutShort, AnswerError, BoundedNode

DEFAULT_PORT = 9200
#: Lucene's limit on one keyword term, in bytes (names and tags are keywords).
MAX_TERM = 32766
#: The longest string a document may hold: Elasticsearch takes requests of 100 MB.
MAX_TEXT = 90 * 1024 * 1024
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class ElasticsearchBackend(Backend):
    """Elasticsearch backend.

    :param index_name: prefix of the daily indices, ``index_name-YYYY.MM.DD``.
    :param app_name: name of the app/project the metrics come from.
    :param client: an ``elasticsearch.Elasticsearch`` client to use.
    :param connection_url: ``https://user:secret@localhost:9200``, or a list of them.
    :param host: server host, or a list of hosts.
    :param port: server port (default 9200).
    :param user: HTTP basic auth username.
    :param password: HTTP basic auth password.
    :param timeout: bounds each request as a whole (seconds; None means the default),
        plus a second per MB of the request's body: resolving the host's name and
        connecting too, and reading the answer, which may be 16 MiB (decoded) plus four
        bytes per byte of the request at most.
    :param verify_certs: check the server's TLS certificate (default True).
    :param ca_certs: path of a CA bundle to check it against.
    :param layout: ``"kaneda2"`` (the default) or ``"kaneda1"``, the documents kaneda
        1.0 wrote (see :mod:`kaneda_elasticsearch.layouts`).

    Constructing it opens no connection. The index template is installed by the first
    delivery that reaches the server.
    """

    settings_namespace = "ELASTIC"
    example_url = (
        "elasticsearch+https://user:password@localhost:9200/?index_name=metrics&app_name=web"
    )

    def __init__(
        self,
        index_name: str,
        app_name: str,
        client: Elasticsearch | None = None,
        connection_url: str | list[str] | None = None,
        host: str | list[str] | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = 0.3,
        *,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        layout: str = DEFAULT_LAYOUT,
    ) -> None:
        check_arguments(ElasticsearchBackend, locals())
        quiet.install()
        if timeout is None:  # kaneda 1.0 allowed it; Kaneda never waits without a bound
            timeout = 0.3
        for field, value in (("index_name", index_name), ("app_name", app_name)):
            if not value:
                raise argument_error(ElasticsearchBackend, field, "a non-empty string", value)
        if index_name != index_name.lower() or any(c in index_name for c in ' "*\\<|,>/?#:'):
            raise ConfigurationError(
                f"index_name {index_name!r} is not a valid Elasticsearch index prefix: "
                "use lowercase letters, digits, '-', '_' and '.'"
            )
        self.index_name = index_name
        self.app_name = app_name
        self.layout: Layout = LAYOUTS[check_layout(layout)]()
        self._secrets: list[str] = [password] if password else []
        options: dict[str, Any] = {
            "request_timeout": timeout,
            "verify_certs": verify_certs,
            "max_retries": 0,  # the dispatcher retries, with backoff
            # Answers read up to a bound, the name resolved within the timeout (node.py);
            # errors that quote the start of an answer, not all of it.
            "node_class": BoundedNode,
            "serializers": SERIALIZERS,
        }
        if ca_certs:
            if not os.access(ca_certs, os.R_OK):
                raise ConfigurationError(
                    f"ElasticsearchBackend: ca_certs={ca_certs!r} is not a file this process "
                    "can read: give the path of the CA bundle (PEM) that signed the server's "
                    "certificate"
                )
            options["ca_certs"] = ca_certs
        if client is not None:
            if not isinstance(client, Elasticsearch):
                raise ImproperlyConfigured(
                    f'ElasticsearchBackend: "client" parameter is not an instance of '
                    f"Elasticsearch client: got {client!r} ({type(client).__name__}). For example: "
                    "client=Elasticsearch('https://localhost:9200'), or a URL such as "
                    f"{self.example_url}"
                )
            self.client = client
            self._new_client = None
        elif connection_url:
            urls = [connection_url] if isinstance(connection_url, str) else list(connection_url)
            for url in urls:
                _check_node_url(url, "connection_url")
                secret = url_password(url)
                if secret:
                    self._secrets.append(secret)
            self._new_client = self._client_factory(urls, user, password, options)
            self.client = self._new_client()
        else:
            hosts = list(host) if isinstance(host, (list, tuple)) else [host or "localhost"]
            urls = [_host_url(h, port or DEFAULT_PORT) for h in hosts]
            self._new_client = self._client_factory(urls, user, password, options)
            self.client = self._new_client()
        self.timeout = timeout
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        _track_connections(self.client, self._connections)
        self._template_ready = False
        self._setup_lock = threading.Lock()

    def _client_factory(
        self, urls: list[str], user: str | None, password: str | None, options: dict[str, Any]
    ) -> Any:
        """What builds this backend's client: now, and again in a forked child."""
        if password and not user:
            raise ConfigurationError(
                "ElasticsearchBackend: a password was given without a user: pass user= too "
                f"(or write both in the URL). For example: {self.example_url}"
            )
        if user:
            options["basic_auth"] = (user, password or "")
        return functools.partial(Elasticsearch, urls, **options)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ElasticsearchBackend:
        """``elasticsearch+https://user:pw@host:9200/?index_name=k&app_name=web``.

        ``elasticsearch://`` is plain HTTP; query options are the constructor's
        (``index_name``, ``app_name``, ``timeout``, ``verify_certs``, ``ca_certs``).
        """
        check_host(url, cls.example_url)
        parsed = parse_url(url, cls.example_url)
        parts = urlsplit(url)
        scheme = "https" if "https" in parsed.scheme.split("+") else "http"
        server = urlunsplit((scheme, parts.netloc, "", "", ""))
        options = url_options(cls, url, connection_url=server)
        if parsed.user is not None and ({"user", "password"} & options.keys()):
            raise ConfigurationError(
                f"{redact_url(url)} gives credentials twice, before the host and as ?user= "
                "or ?password=: keep the ones before the host"
            )
        options.update(overrides)
        for needed in ("index_name", "app_name"):
            if needed not in options:
                raise ConfigurationError(
                    f"{redact_url(url)} has no {needed}: add ?index_name=...&app_name=..."
                )
        return cls(**options)

    def check(self, metric: Metric) -> None:
        """Refuse what Elasticsearch cannot index: a name or tag over 32,766 bytes (a
        keyword term's limit), a document over its default 100 MB request limit."""
        tags = metric.tags
        longest = max(
            (len(t) for t in (tags.values() if isinstance(tags, dict) else tags) if type(t) is str),
            default=0,
        )
        if max(longest, len(metric.name)) * 4 > MAX_TERM:
            _refuse_long_terms(metric)
        refuse_text_over(metric, MAX_TEXT, "Elasticsearch", "a request is at most 100 MB")

    def send(self, batch: Sequence[Metric]) -> list[dict[str, Any]]:
        """Index the batch with one ``_bulk`` request; failed items raise with their reasons.

        Returns, per metric, its item of the bulk response (``_index``, ``_id``,
        ``result`` ...: what kaneda 1.0's index call answered).
        """
        if not self._template_ready:
            self._install_template()
        lines = []
        dumps = _COMPACT.encode
        document = self.layout.document
        document_id = schema.document_id
        for metric in batch:
            # Every document has an _id, the caller's or one derived from the metric:
            # sending a batch again (a retry after a lost answer, a queue's redelivery)
            # overwrites the same documents instead of storing copies.
            doc_id = str(metric.id) if metric.id is not None else document_id(metric)
            action = {"_index": schema.index_for(self.index_name, metric), "_id": doc_id}
            lines.append(dumps({"index": action}))
            lines.append(dumps(document(metric, self.app_name)))
        # A pre-serialized NDJSON body: the client's NDJSON serializer sends a str as is,
        # which spares it serializing every line again.
        body = "\n".join(lines) + "\n"
        # A large request gets longer than the timeout (see request_seconds).
        seconds = request_seconds(self.timeout, len(body))
        try:
            with deadline(seconds, self._abort) as watch, quiet.client_logs_held_back():
                response = self.client.options(request_timeout=seconds).bulk(
                    operations=body  # type: ignore[arg-type]
                )
        except ApiError as error:
            if error.meta.status == 413:
                raise self._too_large(batch, len(body)) from None
            raise self._delivery_error("writing", error) from None
        except Exception as error:  # noqa: BLE001 - translated below
            late = _timed_out(error, watch, self._within(seconds))
            raise self._delivery_error("writing", late) from None
        answer = response.body
        if not isinstance(answer, dict):
            # A 200 whose body is not a JSON object: a proxy's sign-in or error page.
            # Whether the documents were stored is unknown; sending them again is
            # harmless (every document has its _id), so the batch is retried whole.
            raise DeliveryError(
                f"Elasticsearch ({self._nodes()}) answered the bulk request with something "
                f"that is not Elasticsearch's answer (a proxy's page?): "
                f"{self.redact(_excerpt(answer))}. Check that the URL points at Elasticsearch "
                "itself, or that the proxy in front of it lets this client through",
                retryable=True,
            )
        items = answer.get("items") or []
        if len(items) != len(batch):
            # Elasticsearch answers one item per document; anything else (an error said
            # with a 200, a proxy's answer) confirms nothing.
            raise DeliveryError(
                f"Elasticsearch ({self._nodes()}) answered the bulk request of {len(batch)} "
                f"documents with {len(items)} items, so none is known to be stored: "
                f"{self.redact(_excerpt(answer))}",
                retryable=True,
            )
        if answer.get("errors"):
            self._raise_for_items(batch, items)
        return [next(iter(item.values())) for item in items]

    def _raise_for_items(self, batch: Sequence[Metric], items: list[dict[str, Any]]) -> None:
        retry: list[Metric] = []
        rejected: list[Metric] = []
        reasons: list[str] = []
        for metric, item in zip(batch, items, strict=True):
            result = next(iter(item.values()))
            status = int(result.get("status", 0))
            if status < 300:
                continue
            if status == 409:
                # A version conflict. The `index` action overwrites and Kaneda sends no
                # version condition, so Elasticsearch should not answer it; if it does,
                # a document with this _id exists, and the _id is the caller's or
                # derived from this very metric: it is there, counted as stored.
                continue
            error = result.get("error") or {}
            reason = error.get("reason", "") if isinstance(error, dict) else str(error)
            kind = error.get("type", status) if isinstance(error, dict) else status
            reasons.append(f"{status} {kind}: {reason}")
            (retry if status == 429 or status >= 500 else rejected).append(metric)
        if not retry and not rejected:
            return
        summary = "; ".join(sorted(set(reasons))[:5])
        message = (
            f"Elasticsearch stored {len(batch) - len(retry) - len(rejected)} of {len(batch)} "
            f"documents ({len(rejected)} refused, {len(retry)} to retry): {summary}"
        )
        if retry:
            raise DeliveryError(message, retryable=True, metrics=retry, rejected=rejected)
        raise DeliveryError(message, retryable=False, metrics=rejected)

    def _too_large(self, batch: Sequence[Metric], size: int) -> DeliveryError:
        where = f"Elasticsearch ({self._nodes()})"
        limit = (
            "the limit of a proxy in front of Elasticsearch (nginx's client_max_body_size) or "
            "of the cluster (http.max_content_length, 100mb by default)"
        )
        if len(batch) == 1:
            advice = (
                f"this single document is over {limit}: raise that limit, or report a smaller value"
            )
        else:
            advice = (
                f"it is over {limit}; Kaneda sends the batch in halves. Lower batch_size, "
                "or raise that limit"
            )
        # Not retryable but isolate: the core halves the batch until the parts fit, and
        # a single document that does not fit fails alone.
        return DeliveryError(
            f"{where} answered 413 Request Entity Too Large to a bulk request of "
            f"{len(batch)} document{'s' if len(batch) != 1 else ''} ({size} bytes): {advice}",
            retryable=False,
            isolate=True,
        )

    def _install_template(self) -> None:
        with self._setup_lock:
            if self._template_ready:
                return
            template = self.layout.index_template(self.index_name)
            try:
                with deadline(self.timeout, self._abort) as watch, quiet.client_logs_held_back():
                    self.client.indices.put_index_template(name=self.index_name, **template)
            except Exception as error:  # noqa: BLE001 - translated below
                error = _timed_out(error, watch, self._within(self.timeout))
                raise self._delivery_error("installing the index template", error) from None
            self._template_ready = True

    def _within(self, seconds: float) -> str:
        """``within 1.0 s (timeout bounds the whole request)``, for a timeout's message."""
        extra = seconds - self.timeout
        allowance = f", plus {extra:.2f} s for its size" if extra >= 0.01 else ""
        return f"within {self.timeout} s (timeout bounds the whole request{allowance})"

    def _delivery_error(self, doing: str, error: Exception) -> DeliveryError:
        where = f"Elasticsearch ({self._nodes()})"
        detail = self.redact(_error_text(error))
        answer = _answer_error(error)
        if isinstance(error, _Unfinished):
            # The server answered, and the answer did not end in time: a server (or a
            # proxy) that is slow, or that sends a body without end a byte at a time.
            return DeliveryError(
                f"{where} began answering while {doing}, but {self.redact(str(error))}, so "
                "what was stored is unknown (sending again is harmless: every document has "
                "its _id). The server, or a proxy in front of it, is slow or overloaded",
                retryable=True,
            )
        if answer is not None:
            # Too large, in an encoding the client cannot read (not Elasticsearch's answer:
            # a proxy's doing?), or broken off: what was stored is unknown.
            return DeliveryError(
                f"{where}, while {doing}, answered {answer.status} "
                f"{self.redact(answer.detail)}. What was stored is unknown (sending again "
                "is harmless: every document has its _id); if a proxy stands in front of "
                "Elasticsearch, check what it answers",
                retryable=True,
            )
        if isinstance(error, UnsupportedProductError):
            return DeliveryError(
                f"{where} is not Elasticsearch (the product check failed while {doing}); "
                "kaneda-elasticsearch needs Elasticsearch 8 or 9 (OpenSearch is not supported)",
                retryable=False,
            )
        if isinstance(error, ApiError):
            status = error.meta.status
            if status == 401:
                return DeliveryError(
                    f"{where} refused the credentials while {doing} (401): check user and password",
                    retryable=False,
                )
            if status == 403:
                return DeliveryError(
                    f"{where}: the user may not do this (403 while {doing}); grant it "
                    f"'create_index', 'write' and 'manage_index_templates' on {self.index_name}-*",
                    retryable=False,
                )
            return DeliveryError(
                f"{where} answered {status} while {doing}: {detail}",
                retryable=status == 429 or status >= 500,
            )
        if isinstance(error, SerializationError):
            # An answer came, but not one the client could read (JSON cut short, a
            # content type Elasticsearch does not send). Sending again is harmless:
            # every document has its _id.
            reason = self.redact(_excerpt(str(error)))
            return DeliveryError(
                f"{where} answered with something that is not valid JSON while {doing}, so "
                f"what was stored is unknown: {reason}. If a proxy stands in front of "
                "Elasticsearch, check what it answers",
                retryable=True,
            )
        if isinstance(error, (TransportError, TimeoutError)):
            if isinstance(error, TransportError):
                reason = self.redact(_transport_reason(error))
            else:
                reason = self.redact(str(error))
            if isinstance(error, TlsError) and "CERTIFICATE_VERIFY_FAILED" in reason:
                # Retrying cannot help: the certificate will not change by itself.
                return DeliveryError(
                    f"{where}: the server's TLS certificate did not verify while {doing} "
                    f"({reason}). Give the server a certificate this machine trusts, pass "
                    "ca_certs= the CA that signed it, or verify_certs=False for a test server",
                    retryable=False,
                )
            return DeliveryError(
                f"{where} unreachable while {doing}: {reason}. Check that Elasticsearch runs "
                "there, that host, port and scheme (http or https) are right, and that this "
                "machine can reach it",
                retryable=True,
            )
        return DeliveryError(f"{where} failed while {doing}: {detail}", retryable=False)

    def _nodes(self) -> str:
        nodes = self.client.transport.node_pool.all()
        return ", ".join(f"{n.config.scheme}://{n.config.host}:{n.config.port}" for n in nodes)

    def redact(self, text: str) -> str:
        """``text`` with the passwords masked."""
        return redact_text(text, *self._secrets)

    def _abort(self) -> None:
        # Called by the watchdog when a request outlives ``timeout``: shutting the
        # socket down ends a read that a slow server keeps alive a byte at a time.
        for connection in list(self._connections):
            sock = getattr(connection, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def after_fork(self) -> None:
        """Drop the parent's client and its connections; the child builds its own.

        A client you passed in is kept: give each process its own, or let the backend
        build it from a URL or host.
        """
        self._setup_lock = threading.Lock()
        if self._new_client is None:
            return
        abandon(self.client)
        self.client = self._new_client()
        self._connections = weakref.WeakSet()
        _track_connections(self.client, self._connections)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def __repr__(self) -> str:
        auth = f" (auth {MASK})" if self._secrets else ""
        return f"<ElasticsearchBackend {self._nodes()}/{self.index_name}-*{auth}>"


def _refuse_long_terms(metric: Metric) -> None:
    tags = metric.tags
    items = tags.items() if isinstance(tags, dict) else ((None, t) for t in tags)
    terms = [("name", metric.name)] + [
        (f"tags[{key!r}]" if key is not None else "a tag", item)
        for key, item in items
        if type(item) is str
    ]
    for where, text in terms:
        size = len(text.encode("utf-8"))
        if size > MAX_TERM:
            raise InvalidMetric(
                f"{where} is {size} bytes long; Elasticsearch indexes it as a keyword, of at "
                f"most {MAX_TERM} bytes (an immense term is refused): shorten it, or put long "
                "text in an event"
            )


def _track_connections(client: Elasticsearch, registry: weakref.WeakSet[Any]) -> None:
    """Record every connection the client's nodes open, so a deadline can shut them."""
    for node in client.transport.node_pool.all():
        pool = getattr(node, "pool", None)
        if pool is None or not hasattr(pool, "ConnectionCls"):
            continue
        base = pool.ConnectionCls

        class TrackedConnection(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                registry.add(self)
                super().connect()

        pool.ConnectionCls = TrackedConnection


_E = TypeVar("_E", bound=BaseException)
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring = 4, 20, 20, 200
_SHORT.maxother = 200


def _excerpt(answer: Any, limit: int = 200) -> str:
    """The start of an answer, on one line; only that much of it is ever copied."""
    if isinstance(answer, bytes):
        answer = answer[: limit * 2].decode("utf-8", "replace")
    text = answer[: limit * 2] if isinstance(answer, str) else _SHORT.repr(answer)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _error_text(error: Exception, limit: int = 300) -> str:
    """``Type: message`` of an error, without formatting a long answer it may hold."""
    if isinstance(error, ApiError):
        # Its str() is the whole answer (a proxy's page of any size) quoted with repr.
        message = error.message if isinstance(error.message, str) else ""
        if len(message) > limit or not isinstance(error.body, (dict, type(None))):
            return f"{type(error).__name__}({error.meta.status}, {_excerpt(error.body, limit)})"
    return f"{type(error).__name__}: {_excerpt(str(error), limit)}"


def _caused_by(error: BaseException, kind: type[_E]) -> _E | None:
    """The ``kind`` of error behind a client's error (the node raised it), if any."""
    cause: BaseException | None = error
    for _ in range(5):
        if cause is None or isinstance(cause, kind):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _answer_error(error: BaseException) -> AnswerError | None:
    """The :class:`AnswerError` behind a client's error: the answer's body not taken."""
    return _caused_by(error, AnswerError)


class _Unfinished(TimeoutError):
    """The server began answering (status line and headers came), but did not finish."""


def _timed_out(error: Exception, watch: Any, within: str) -> Exception:
    """The error to report when ``watch`` fired: what was late, not what the shut socket
    made the client raise."""
    if not watch.expired or _caused_by(error, NewConnectionError):
        return error  # not late, or it says itself what was (resolving, connecting)
    answer = _answer_error(error)
    if answer is not None and not isinstance(answer, AnswerCutShort):
        return error  # too large, or unreadable: said as such, however long it took
    if answer is not None:
        return _Unfinished(
            f"its answer ({answer.status}) did not finish {within}: {answer.received} bytes "
            "of its body came"
        )
    if isinstance(error, (SerializationError, ApiError)):
        # A body came, cut short at the deadline: what it held cannot be read.
        return _Unfinished(f"its answer did not finish {within}")
    return TimeoutError(f"no answer {within}")


def _host_url(host: str, port: int) -> str:
    if "://" in host:
        _check_node_url(host, "host")
        return host
    return f"http://{host}:{port}"


def _check_node_url(url: str, parameter: str) -> None:
    """Refuse, before the client quotes it whole, a node URL it cannot use."""
    example = "https://user:secret@localhost:9200"
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        raise ConfigurationError(
            f"ElasticsearchBackend: {parameter} must start with http:// or https://, got "
            f"{redact_url(url)!r}. For example: {example}"
        )
    parse_url(url, example)


def _transport_reason(error: TransportError) -> str:
    """What failed, from a transport error whose ``str`` may be only "Connection error"."""
    reason = str(error.args[0]) if error.args and error.args[0] else str(error)
    # "HTTPConnection(host='127.0.0.1', port=1): Failed to ..." -> "Failed to ..."
    reason = re.sub(r"^\w+\(host=[^)]*\): ", "", reason)
    return reason.strip().splitlines()[0] if reason.strip() else type(error).__name__
