"""The contract every backend implements: deliver a batch of metrics, then close."""

from __future__ import annotations

import errno
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from .errors import ConfigurationError, DeliveryError
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

    #: A URL that works for this backend, shown in error messages as an example
    #: (``influxdb://user:password@localhost:8086/metrics``).
    example_url: ClassVar[str | None] = None

    #: Whether :meth:`check` also takes a metric's *record*: a plain tuple of the eight
    #: fields of :class:`~kaneda_core.Metric`, in order. Such a check unpacks it, or makes
    #: the Metric itself (``tuple.__new__(Metric, record)``) before reading attributes.
    #: The reporting calls then hand it what they queue, without building a Metric for
    #: it: about a tenth of a call. The contract suite checks both give one verdict.
    checks_records: bool = False

    #: Whether :meth:`send` also takes records (see ``checks_records``): the batch is
    #: then what the calls queued, plain tuples and Metrics mixed, and the worker does not
    #: build a Metric for each (a tenth of a microsecond per metric, and garbage the
    #: collector would walk). Such a send reads fields by position, or through
    #: :func:`~kaneda_core.model.as_metric`; the metrics a :class:`DeliveryError` names
    #: must be the very objects of the batch. Filters and failure hooks always get
    #: Metrics. A subclass that overrides ``send`` should set it False unless its own
    #: send takes records too.
    sends_records: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> Backend:
        backend = super().__new__(cls)
        # Every backend, however it was made, gets its fork step in a forked child.
        track_backend(backend)
        return backend

    @abstractmethod
    def send(self, batch: Sequence[Metric]) -> Sequence[Any] | None:
        """Store every metric of ``batch`` or raise; called from one thread at a time.

        It may return the store's answer for each metric, in order (an index response,
        an insert result): the ``kaneda`` package returns it from a reporting call
        delivered in the caller's thread, as kaneda 1.0 did. Returning None is fine.
        """

    def check(self, metric: Metric) -> None:
        """Refuse, with :class:`~kaneda_core.InvalidMetric`, a metric this backend cannot store.

        Called at the reporting call, in the caller's thread, before the metric is
        queued, so a bad metric fails where it was made. The default accepts all.
        """

    def is_retryable(self, error: BaseException) -> bool:
        """Whether sending the same batch again may succeed after ``error``.

        The default retries network errors (``OSError``: refused, reset, timed out), but
        not the ``OSError`` that no retry can mend: a missing file or folder, a
        permission, a certificate that does not verify (:func:`is_transient_os_error`).
        A :class:`~kaneda_core.DeliveryError` says for itself.
        """
        if isinstance(error, DeliveryError):
            return error.retryable
        return is_transient_os_error(error)

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

    def destination(self) -> str:
        """Where this backend stores metrics, without secrets: ``influxdb database app``.

        A disk buffer marks its rows with it, and a process configured for another
        destination leaves them (two applications given one ``buffer_path``). A backend
        that writes to a database says which (the database rather than the server,
        which may move). The default, ``""``, says nothing: such rows are delivered by
        any process on the path, and such a process delivers any rows, as before.
        """
        return ""

    def redact(self, text: str) -> str:
        """``text`` with this backend's secrets (passwords, tokens) masked.

        Applied to every log line and failure message Kaneda writes about this backend.
        Backends that hold a secret override it; the default returns ``text`` unchanged.
        """
        return text

    @classmethod
    def from_url(cls: type[B], url: str, **overrides: Any) -> B:
        """Build the backend from a URL: ``name://user:password@host:port/path?option=value``.

        The default passes the URL's host, port, user, password and path to the
        constructor parameters of those names (``host`` or ``hostname``, ``user`` or
        ``username``; the path unescaped, with its leading ``/``), by position to
        positional-only ones, and the query options converted to the types
        of their defaults (:func:`url_options`). A URL part the constructor has no
        parameter for is refused with advice. ``overrides`` are constructor arguments
        that win over the URL.
        """
        from .arguments import construct

        options = url_options(cls, url, **location_options(cls, url))
        options.update({key: value for key, value in overrides.items() if value is not None})
        return construct(cls, options, url=url)

    def __enter__(self: B) -> B:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: The URL parts :meth:`Backend.from_url` passes, and the parameter names that take them.
_LOCATION_PARAMETERS = {
    "host": ("host", "hostname"),
    "port": ("port",),
    "user": ("user", "username"),
    "password": ("password",),
    "path": ("path",),
}

#: ``OSError`` subclasses that a retry cannot mend.
_PERMANENT_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def is_transient_os_error(error: BaseException) -> bool:
    """Whether ``error`` is an ``OSError`` a retry may mend (a network error, a full disk).

    A missing file or folder, a permission, a read-only file system, a name too long
    and a TLS certificate that does not verify stay as they are however often one tries.
    """
    if not isinstance(error, OSError) or isinstance(error, _PERMANENT_OS_ERRORS):
        return False
    if error.errno in (errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES, errno.EPERM):
        return False
    # No import here (it fails at interpreter shutdown): an ssl error means ssl is loaded.
    ssl = sys.modules.get("ssl")
    return ssl is None or not isinstance(error, ssl.SSLCertVerificationError)


def location_options(cls: type, url: str) -> dict[str, Any]:
    """Host, port, user, password and path of ``url``, keyed by ``cls``'s parameter names.

    Raises :class:`ConfigurationError` when the URL gives a part that ``cls`` takes no
    parameter for (``memory://localhost``), or when the URL cannot be read (a port
    that is not a number, an unescaped ``/`` in the password).
    """
    from .arguments import parameters_of
    from .redact import redact_url
    from .urls import parse_url

    parsed = parse_url(url, getattr(cls, "example_url", None))
    given = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.user,
        "password": parsed.password,
        "path": parsed.path or None,
    }
    parameters = parameters_of(cls)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    options: dict[str, Any] = {}
    for part, value in given.items():
        if value is None:
            continue
        names = [n for n in _LOCATION_PARAMETERS[part] if n in parameters] or (
            [part] if accepts_any else []
        )
        if not names:
            accepted = ", ".join(p for p in parameters if not p.startswith("_")) or "none"
            raise ConfigurationError(
                f"{redact_url(url)} gives a {part}, but {cls.__name__} takes no "
                f"{' or '.join(_LOCATION_PARAMETERS[part])} parameter (its parameters: "
                f"{accepted}). Leave the {part} out of the URL, pass options in the query "
                "(?option=value), or give the backend a from_url of its own."
            )
        options[names[0]] = value
    return options


def url_options(cls: type, url: str, **fixed: Any) -> dict[str, Any]:
    """The query options of ``url`` converted to ``cls``'s parameter types, plus ``fixed``.

    A parameter whose default is a bool, int or float gets its query value converted
    to that type; an unknown option or a bad value raises ConfigurationError.
    """
    import inspect

    from .arguments import parameters_of
    from .redact import is_secret_name, redact_url
    from .urls import parse_url

    parameters = parameters_of(cls)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    options: dict[str, Any] = {}
    given: dict[str, str] = {}
    secret_before = None  # an option after ?password= may be a piece of the password
    for key, raw in parse_url(url, getattr(cls, "example_url", None)).query:
        parameter = parameters.get(key)
        if secret_before and ((parameter is None and not accepts_any) or key in options):
            raise ConfigurationError(
                f"{redact_url(url)}: an option after ?{secret_before}= is unknown or given "
                f"twice. If the {secret_before} holds &, #, + or %, escape them with %: & is "
                "%26, # is %23, + is %2B, % is %25."
            )
        if key in given:  # which one was meant? Neither wins silently.
            raise option_twice(url, key, given[key], raw)
        given[key] = raw
        if is_secret_name(key):
            secret_before = secret_before or key
        if parameter is None and not accepts_any:
            from difflib import get_close_matches

            names = sorted(p for p in parameters if not p.startswith("_"))
            close = get_close_matches(key, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"Unknown option {key!r} in {redact_url(url)} for {cls.__name__} "
                f"(accepted: {', '.join(names) or 'none'}).{hint}"
            )
        default = parameter.default if parameter is not None else None
        if default is None or default is inspect.Parameter.empty:
            default = _sample_of_annotation(cls, key)
        options[key] = _convert(key, raw, default, url, hide=bool(secret_before))
    for key, value in fixed.items():
        if value is None:
            continue
        if key in options and options[key] != value:
            raise ConfigurationError(
                f"{redact_url(url)} gives {key} twice, in the URL and as ?{key}=: keep one"
            )
        options[key] = value
    return options


def option_twice(url: str, key: str, first: str, second: str) -> ConfigurationError:
    """The error for query option ``key`` given twice in ``url``, naming both values
    (masked when the option is a secret)."""
    from .redact import MASK, is_secret_name, redact_url

    shown = (MASK, MASK) if is_secret_name(key) else (repr(first), repr(second))
    return ConfigurationError(
        f"{redact_url(url)} gives the option {key} twice ({shown[0]} and {shown[1]}): "
        "keep the one you mean"
    )


def _sample_of_annotation(cls: type, key: str) -> object:
    """A value of the type ``cls.__init__`` declares for ``key`` (``int | None`` -> 0)."""
    from .arguments import accepted_types

    accepted = accepted_types(cls, key)
    for kind in (bool, int, float):
        if kind in accepted:
            return kind()
    return None


def _convert(key: str, raw: str, default: object, url: str, *, hide: bool = False) -> object:
    from .redact import MASK, is_secret_name, redact_url

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
        expected = {bool: "true or false", int: "a whole number", float: "a number"}[type(default)]
        shown = MASK if hide or is_secret_name(key) else repr(raw)
        raise ConfigurationError(
            f"Option {key}={shown} in {redact_url(url)} must be {expected}"
        ) from None
    return raw


def sends_records(backend: Backend) -> bool:
    """Whether ``backend``'s :meth:`~Backend.send` takes records (``sends_records``).

    Only the class whose ``send`` it is, or a subclass of it, can say so: a subclass
    that overrides ``send`` without saying anything gets Metrics, as its send expects.
    """
    # Told apart from the class's value without vars(backend): making an instance's
    # __dict__ slows every later attribute access on it (measured: 4 % of a sync call).
    told = getattr(backend, "sends_records", False)
    if told is not getattr(type(backend), "sends_records", False):
        return bool(told)  # set on the instance itself
    for cls in type(backend).__mro__:
        if "sends_records" in vars(cls):
            return bool(vars(cls)["sends_records"])
        if "send" in vars(cls):
            return False
    return False
