"""The contract every backend implements: deliver a batch of metrics, then close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from .errors import ConfigurationError
from .forking import track_backend
from .model import Metric

B = TypeVar("B", bound="Backend")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Backend(ABC):
    """Base class of every Kaneda backend.

    A backend receives metrics in batches (a single report is a batch of one) and
    stores them. It raises :class:`~kaneda_core.DeliveryError` when it cannot, saying
    whether a retry may help; any other exception is treated as a failure too, and
    retried when :meth:`is_retryable` says so. Backends never need to catch their own
    errors: the dispatcher logs them, retries them and reports them to the hooks.
    """

    #: Prefix of this backend's parameters in a kaneda 1.0 settings module
    #: (``INFLUX`` reads ``INFLUX_HOST``, ``INFLUX_PORT`` ...).
    settings_namespace: ClassVar[str | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Backend:
        backend = super().__new__(cls)
        # Every backend, however it was made, gets its fork step in a forked child.
        track_backend(backend)
        return backend

    @abstractmethod
    def send(self, batch: Sequence[Metric]) -> None:
        """Store every metric of ``batch`` or raise; called from one thread at a time."""

    def check(self, metric: Metric) -> None:
        """Refuse, with :class:`~kaneda_core.InvalidMetric`, a metric this backend cannot store.

        Called at the reporting call, in the caller's thread, before the metric is
        queued, so a bad metric fails where it was made. The default accepts all.
        """

    def is_retryable(self, error: BaseException) -> bool:
        """Whether sending the same batch again may succeed after ``error``.

        The default retries network errors (``OSError``: refused, reset, timed out).
        """
        return isinstance(error, OSError)

    def close(self) -> None:
        """Release connections and files. Safe to call more than once."""

    def after_fork(self) -> None:
        """Forget the connections, clients, sessions and files inherited from the parent.

        Called in a forked child (``os.fork``, gunicorn ``--preload``, ``multiprocessing``)
        before the child delivers anything. A socket, client or file handle opened by the
        parent is shared with it: a child writing on it would interleave its bytes with
        the parent's. Drop the references so the child opens its own, lazily, on its
        first delivery. Do not *close* them politely: closing can talk on the parent's
        connection (a TLS goodbye, a driver's end-session command). The default does
        nothing, right for a backend that holds no connection.
        """

    def redact(self, text: str) -> str:
        """``text`` with this backend's secrets (passwords, tokens) masked.

        Applied to every log line and failure message Kaneda writes about this backend.
        Backends that hold a secret override it; the default returns ``text`` unchanged.
        """
        return text

    @classmethod
    def from_url(cls: type[B], url: str, **overrides: Any) -> B:
        """Build the backend from a URL; the default reads options from the query string.

        ``overrides`` are constructor arguments that win over the URL. Backends with a
        server override this to read host, port, credentials and path as well.
        """
        return cls(**url_options(cls, url, **overrides))

    def __enter__(self: B) -> B:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def url_options(cls: type, url: str, **fixed: Any) -> dict[str, Any]:
    """The query options of ``url`` converted to ``cls``'s parameter types, plus ``fixed``.

    A parameter whose default is a bool, int or float gets its query value converted
    to that type; an unknown option or a bad value raises ConfigurationError.
    """
    import inspect
    from urllib.parse import parse_qsl, urlsplit

    from .redact import redact_url

    parameters = inspect.signature(cls).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    options: dict[str, Any] = {}
    for key, raw in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        parameter = parameters.get(key)
        if parameter is None and not accepts_any:
            accepted = ", ".join(sorted(p for p in parameters if not p.startswith("_")))
            raise ConfigurationError(
                f"Unknown option {key!r} in {redact_url(url)} for {cls.__name__} "
                f"(accepted: {accepted})"
            )
        default = parameter.default if parameter is not None else None
        options[key] = _convert(key, raw, default, url)
    options.update({k: v for k, v in fixed.items() if v is not None})
    return options


def _convert(key: str, raw: str, default: object, url: str) -> object:
    from .redact import redact_url

    try:
        if isinstance(default, bool):
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        expected = type(default).__name__
        raise ConfigurationError(
            f"Option {key}={raw!r} in {redact_url(url)} is not a valid {expected}"
        ) from None
    return raw
