"""``ElasticsearchBackend``: one ``_bulk`` request per batch into daily indices."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch, UnsupportedProductError

from kaneda_core import Backend, DeliveryError, Metric
from kaneda_core.backend import url_options
from kaneda_core.deadline import deadline
from kaneda_core.errors import ConfigurationError, ImproperlyConfigured
from kaneda_core.forking import abandon
from kaneda_core.redact import MASK, redact_text, redact_url

from . import schema

DEFAULT_PORT = 9200
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
    :param timeout: request timeout (seconds).
    :param verify_certs: check the server's TLS certificate (default True).
    :param ca_certs: path of a CA bundle to check it against.

    Constructing it opens no connection. The index template is installed by the first
    delivery that reaches the server.
    """

    settings_namespace = "ELASTIC"

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
        timeout: float = 0.3,
        *,
        verify_certs: bool = True,
        ca_certs: str | None = None,
    ) -> None:
        for field, value in (("index_name", index_name), ("app_name", app_name)):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"{field} must be a non-empty string, got {value!r}")
        if index_name != index_name.lower() or any(c in index_name for c in ' "*\\<|,>/?#:'):
            raise ConfigurationError(
                f"index_name {index_name!r} is not a valid Elasticsearch index prefix: "
                "use lowercase letters, digits, '-', '_' and '.'"
            )
        self.index_name = index_name
        self.app_name = app_name
        self._secrets: list[str] = [password] if password else []
        options: dict[str, Any] = {
            "request_timeout": timeout,
            "verify_certs": verify_certs,
            "max_retries": 0,  # the dispatcher retries, with backoff
        }
        if ca_certs:
            options["ca_certs"] = ca_certs
        if client is not None:
            if not isinstance(client, Elasticsearch):
                raise ImproperlyConfigured(
                    '"client" parameter is not an instance of Elasticsearch client'
                )
            self.client = client
            self._new_client = None
        elif connection_url:
            urls = [connection_url] if isinstance(connection_url, str) else list(connection_url)
            for url in urls:
                secret = urlsplit(url).password
                if secret:
                    self._secrets += [secret, unquote(secret)]
            if user:
                options["basic_auth"] = (user, password or "")
            self._new_client = functools.partial(Elasticsearch, urls, **options)
            self.client = self._new_client()
        else:
            hosts = host if isinstance(host, list) else [host or "localhost"]
            urls = [_host_url(h, port or DEFAULT_PORT) for h in hosts]
            if user:
                options["basic_auth"] = (user, password or "")
            self._new_client = functools.partial(Elasticsearch, urls, **options)
            self.client = self._new_client()
        self.timeout = timeout
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        _track_connections(self.client, self._connections)
        self._template_ready = False
        self._setup_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ElasticsearchBackend:
        """``elasticsearch+https://user:pw@host:9200/?index_name=k&app_name=web``.

        ``elasticsearch://`` is plain HTTP; query options are the constructor's
        (``index_name``, ``app_name``, ``timeout``, ``verify_certs``, ``ca_certs``).
        """
        parts = urlsplit(url)
        scheme = "https" if "https" in parts.scheme.lower().split("+") else "http"
        server = urlunsplit((scheme, parts.netloc, "", "", ""))
        options = url_options(cls, url, connection_url=server)
        options.update(overrides)
        for needed in ("index_name", "app_name"):
            if needed not in options:
                raise ConfigurationError(
                    f"{redact_url(url)} has no {needed}: add ?index_name=...&app_name=..."
                )
        return cls(**options)

    def send(self, batch: Sequence[Metric]) -> None:
        """Index the batch with one ``_bulk`` request; failed items raise with their reasons."""
        if not self._template_ready:
            self._install_template()
        lines = []
        dumps = _COMPACT.encode
        for metric in batch:
            action: dict[str, Any] = {"_index": schema.index_for(self.index_name, metric)}
            if metric.id is not None:
                action["_id"] = str(metric.id)
            lines.append(dumps({"index": action}))
            lines.append(dumps(schema.document(metric, self.app_name)))
        try:
            # A pre-serialized NDJSON body: the client's NDJSON serializer sends a str as is,
            # which spares it serializing every line again.
            body = "\n".join(lines) + "\n"
            with deadline(self.timeout, self._abort) as watch:
                response = self.client.bulk(operations=body)  # type: ignore[arg-type]
        except Exception as error:  # noqa: BLE001 - translated below
            raise self._delivery_error("writing", _timed_out(error, watch, self.timeout)) from None
        if response.get("errors"):
            self._raise_for_items(batch, response["items"])

    def _raise_for_items(self, batch: Sequence[Metric], items: list[dict[str, Any]]) -> None:
        retry: list[Metric] = []
        rejected: list[Metric] = []
        reasons: list[str] = []
        for metric, item in zip(batch, items, strict=True):
            result = next(iter(item.values()))
            status = int(result.get("status", 0))
            if status < 300:
                continue
            error = result.get("error") or {}
            reason = error.get("reason", "") if isinstance(error, dict) else str(error)
            kind = error.get("type", status) if isinstance(error, dict) else status
            reasons.append(f"{status} {kind}: {reason}")
            (retry if status == 429 or status >= 500 else rejected).append(metric)
        summary = "; ".join(sorted(set(reasons))[:5])
        message = (
            f"Elasticsearch stored {len(batch) - len(retry) - len(rejected)} of {len(batch)} "
            f"documents ({len(rejected)} refused, {len(retry)} to retry): {summary}"
        )
        if retry:
            raise DeliveryError(message, retryable=True, metrics=retry, rejected=rejected)
        raise DeliveryError(message, retryable=False, metrics=rejected)

    def _install_template(self) -> None:
        with self._setup_lock:
            if self._template_ready:
                return
            template = schema.index_template(self.index_name)
            try:
                with deadline(self.timeout, self._abort) as watch:
                    self.client.indices.put_index_template(name=self.index_name, **template)
            except Exception as error:  # noqa: BLE001 - translated below
                error = _timed_out(error, watch, self.timeout)
                raise self._delivery_error("installing the index template", error) from None
            self._template_ready = True

    def _delivery_error(self, doing: str, error: Exception) -> DeliveryError:
        where = f"Elasticsearch ({self._nodes()})"
        detail = self.redact(f"{type(error).__name__}: {error}")
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
        if isinstance(error, (TransportError, TimeoutError)):
            return DeliveryError(f"{where} unreachable while {doing}: {detail}", retryable=True)
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


def _timed_out(error: Exception, watch: Any, timeout: float) -> Exception:
    if watch.expired:
        return TimeoutError(
            f"no complete answer within {timeout} s (timeout bounds the whole request): {error}"
        )
    return error


def _host_url(host: str, port: int) -> str:
    if "://" in host:
        return host
    return f"http://{host}:{port}"
