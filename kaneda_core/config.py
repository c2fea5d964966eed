"""Where a backend comes from: a name, a URL, ``KANEDA_URL``, or a kaneda 1.0 settings module."""

from __future__ import annotations

import os
from importlib import import_module
from inspect import isabstract
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import descriptors
from .backend import Backend
from .errors import BackendNotFound, ConfigurationError, KanedaError
from .registry import load_backend

if TYPE_CHECKING:
    from .metrics import Metrics

URL_VARIABLE = "KANEDA_URL"
SETTINGS_VARIABLE = "KANEDA_SETTINGS_MODULE"
DEFAULT_SETTINGS_MODULE = "kanedasettings"

NOT_CONFIGURED = (
    "Kaneda has no backend configured. Either set the {url} environment variable "
    "(for example {url}=logger:///tmp/metrics.jsonl or "
    "{url}=influxdb://user:pass@localhost:8086/metrics), "
    "or create a settings module {module}.py (or name yours in {settings}) holding "
    "BACKEND = 'kaneda.backends.InfluxBackend' and its INFLUX_* parameters. "
    "You can also pass a backend: Metrics('logger') or connect('memory://')."
)


def backend_name(url: str) -> str:
    """The backend name a URL's scheme selects: ``elasticsearch+https`` -> ``elasticsearch``."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        from .redact import redact_url

        raise ConfigurationError(
            f"{redact_url(url)!r} is not a Kaneda URL: expected scheme://..., "
            "for example influxdb://localhost:8086/metrics or memory://"
        )
    # Transport parts are not names: https+influxdb:// and elasticsearch+https:// name
    # influxdb and elasticsearch; mongodb+srv:// names mongodb.
    for part in scheme.lower().split("+"):
        if part not in _TRANSPORTS:
            return part
    return scheme.lower()


_TRANSPORTS = frozenset(("http", "https", "srv", "tcp", "tls", "ssl"))


def create_backend(name_or_url: str, **options: Any) -> Backend:
    """A backend from a registered name (``"memory"``) or a URL (``"influxdb://host/db"``).

    With a name, ``options`` are the backend's constructor arguments. With a URL, the
    scheme names the backend and the backend reads the rest (host, credentials,
    database, query options); ``options`` then override what the URL says.
    """
    if isinstance(name_or_url, str):
        name_or_url = name_or_url.strip()  # KANEDA_URL="influxdb://... " or a pasted newline
    if not isinstance(name_or_url, str) or "://" not in name_or_url:
        from .arguments import construct

        if not isinstance(name_or_url, str) or not name_or_url:
            raise ConfigurationError(
                f"a backend is named by a non-empty string, got {name_or_url!r}: "
                "for example 'memory', or a URL such as 'logger:///tmp/metrics.jsonl'"
            )
        if any(mark in name_or_url for mark in ":/@"):
            raise ConfigurationError(_not_a_url_advice(name_or_url))
        cls = load_backend(name_or_url)
        return construct(cls, options, name_or_url.lower())
    name = backend_name(name_or_url)
    if name in _TRANSPORTS:
        raise BackendNotFound(
            _scheme_hint(name, name_or_url).strip() or _transport_only_advice(name_or_url)
        )
    try:
        cls = load_backend(name)
    except BackendNotFound as error:
        hint = _scheme_hint(name, name_or_url)
        if not hint:
            raise
        raise BackendNotFound(f"{error}{hint}") from None
    try:
        return cls.from_url(name_or_url, **options)
    except KanedaError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure of a backend made here
        # A from_url or constructor (a third party's, or a client library it calls) may
        # quote the URL whole in its message: never let the password through, never chain.
        from .redact import redact_text, redact_url
        from .urls import url_password

        detail = redact_url(
            redact_text(f"{type(error).__name__}: {error}", url_password(name_or_url))
        )
        where = redact_url(name_or_url)
        if isinstance(error, (ValueError, TypeError)):  # the URL or an option it cannot use
            raise ConfigurationError(f"The {name!r} backend cannot use {where}: {detail}") from None
        raise KanedaError(
            f"The {name!r} backend could not be made from {where}: {detail}"
        ) from None


#: Schemes of servers a backend speaks to, and the Kaneda URL that reaches them through it.
_SCHEME_HINTS = {
    "redis": "rq://{rest} (a queue on RQ, kaneda-rq) or celery+redis://{rest} (kaneda-celery)",
    "rediss": "rq+tls://{rest} (kaneda-rq) or celery+rediss://{rest} (kaneda-celery)",
    "amqp": "celery+amqp://{rest} (a queue on Celery, kaneda-celery)",
    "amqps": "celery+amqps://{rest} (kaneda-celery)",
    "tcp": "zmq+tcp://{rest} (a queue on ZeroMQ, kaneda-zmq)",
    "ipc": "zmq+ipc://{rest} (kaneda-zmq)",
    "es": "elasticsearch://{rest}",
    "elastic": "elasticsearch://{rest}",
    "opensearch": "elasticsearch://{rest} (Elasticsearch 8 or 9 only)",
    "mongo+srv": "mongodb+srv://{rest}",
    "file": "logger://{rest} (JSON lines to a file)",
}


def _scheme_hint(name: str, url: str) -> str:
    """The sentence that points a server's scheme (``redis://``) to the URL that reaches it."""
    from .redact import redact_url

    scheme = url.partition("://")[0].lower()
    template = _SCHEME_HINTS.get(scheme) or _SCHEME_HINTS.get(name)
    if template is None:
        return ""
    rest = redact_url(url).partition("://")[2]
    return f" {scheme}:// is not a backend's name: write {template.format(rest=rest)}."


def _transport_only_advice(url: str) -> str:
    from .redact import redact_url
    from .registry import installed_names

    return (
        f"{redact_url(url)} names no backend: a Kaneda URL's scheme is the backend's name, "
        "with the transport after a '+', as in influxdb://host:8086/db, "
        "https+influxdb://host:8086/db or elasticsearch+https://host:9200/?index_name=k"
        f"&app_name=web (installed backends: {', '.join(installed_names()) or 'none'})"
    )


def _not_a_url_advice(text: str) -> str:
    """Why ``text`` (neither a name nor a URL) is neither, and what to write instead."""
    import re

    from .redact import redact_url
    from .registry import installed_names

    shown = redact_url(text)
    installed = installed_names()
    slashes = re.match(r"([A-Za-z][\w.+-]*)//", text)
    if slashes and backend_name(f"{slashes[1]}://") in installed:
        scheme = slashes[1]
        return (
            f"{shown!r} is missing ':' after {scheme!r}: a Kaneda URL reads "
            f"{scheme}://..., here {scheme}:{shown[len(scheme) :]}"
        )
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() in installed:
        example = getattr(load_backend(scheme.lower()), "example_url", None)
        hint = f", for example {example}" if example else ""
        return (
            f"{shown!r} is missing '//' after {scheme + ':'!r}: a Kaneda URL reads "
            f"{scheme.lower()}://...{hint}"
        )
    if colon and rest.split("/")[0].isdigit():
        example = f"influxdb://{shown}" + ("" if "/" in rest else "/metrics")
        return (
            f"{shown!r} has no backend name in front: put the backend's name and '://' before "
            f"the host, for example {example} (installed backends: "
            f"{', '.join(installed) or 'none'})"
        )
    return (
        f"{shown!r} is neither a backend name nor a URL: a URL starts with the backend's "
        f"name and '://', for example logger:///tmp/metrics.jsonl or influxdb://localhost:8086/"
        f"metrics (installed backends: {', '.join(installed) or 'none'})"
    )


def backend_from_environment() -> Backend:
    """The backend ``KANEDA_URL`` names, else the settings module's, else a clear error."""
    url = os.environ.get(URL_VARIABLE)
    if url:
        return create_backend(url)
    settings = load_settings()
    if settings is None or not hasattr(settings, "BACKEND"):
        raise ConfigurationError(
            NOT_CONFIGURED.format(
                url=URL_VARIABLE, module=DEFAULT_SETTINGS_MODULE, settings=SETTINGS_VARIABLE
            )
        )
    return backend_from_settings(settings.BACKEND, settings)


def load_settings() -> ModuleType | None:
    """The settings module (``KANEDA_SETTINGS_MODULE`` or ``kanedasettings``), None if absent.

    A settings module that exists but fails to import is an error, not an absence.
    """
    name = os.environ.get(SETTINGS_VARIABLE, DEFAULT_SETTINGS_MODULE)
    try:
        return import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name or (error.name and name.startswith(error.name + ".")):
            if SETTINGS_VARIABLE in os.environ:
                raise ConfigurationError(
                    f"{SETTINGS_VARIABLE}={name!r} names a module that cannot be imported"
                ) from None
            return None
        raise


def backend_from_settings(backend: str | type, settings: ModuleType | object) -> Backend:
    """Build ``backend`` (a class, a dotted class path, or a registered name) from settings.

    Its parameters are the settings named ``<NAMESPACE>_<PARAM>``, where NAMESPACE is the
    class's ``settings_namespace`` (kaneda 1.0's convention: ``INFLUX_HOST`` -> ``host``).
    """
    cls = resolve_backend_class(backend)
    namespace = getattr(cls, "settings_namespace", None)
    params: dict[str, Any] = {}
    if namespace:
        # As in kaneda 1.0, only names in the namespace's case are settings: a module's
        # own influx_client (a helper, an import) is not taken for INFLUX_CLIENT.
        prefix = namespace + "_"
        settings_of = {key: key[len(prefix) :].lower() for key in dir(settings)}
        settings_of = {key: name for key, name in settings_of.items() if key.startswith(prefix)}
        _check_setting_names(cls, prefix, settings_of)
        params = {
            name: _setting_value(cls, name, getattr(settings, key))
            for key, name in settings_of.items()
        }
    from .arguments import construct

    return construct(cls, params)  # type: ignore[no-any-return]


def _setting_value(cls: Any, name: str, value: Any) -> Any:
    """``value``, a number or a flag read from text where the parameter takes one.

    Settings often come from the environment (``INFLUX_PORT = os.environ["PORT"]``), and
    kaneda 1.0 passed ``'8086'`` on to clients that took it. Text that is no number is
    left as it is, for the backend to refuse by name.
    """
    from .arguments import accepted_types

    accepted = accepted_types(cls, name) if isinstance(value, str) else ()
    if not accepted or str in accepted:
        return value
    text = value.strip()
    if bool in accepted and text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        if kind in accepted:
            try:
                return kind(text)
            except ValueError:
                continue
    return value


def _check_setting_names(cls: Any, prefix: str, settings_of: dict[str, str]) -> None:
    """Refuse, naming it, a setting of ``cls``'s namespace that is none of its parameters."""
    from difflib import get_close_matches

    from .arguments import parameters_of

    parameters = parameters_of(cls)
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    known = [prefix + name.upper() for name in parameters if not name.startswith("_")]
    for key, name in settings_of.items():
        if name not in parameters:
            close = get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigurationError(
                f"The setting {key} is not a parameter of {cls.__name__} (its settings: "
                f"{', '.join(known) or 'none'}).{hint}"
            )


#: kaneda 1.0's backend class paths, suggested for a settings module's BACKEND.
KANEDA1_CLASS_PATHS = tuple(
    f"kaneda.backends.{name}"
    for name in (
        "ElasticsearchBackend",
        "InfluxBackend",
        "LoggerBackend",
        "MongoBackend",
        "RethinkBackend",
    )
)


def resolve_backend_class(backend: str | type, setting: str = "BACKEND") -> Any:
    """A backend class from itself, a dotted path (``kaneda.backends.InfluxBackend``) or a name.

    The class name in a path matches in any case (``kaneda.backends.influxbackend``); a
    path that names nothing is refused with the nearest path that does, and one that
    names something else than a backend class (a module, ``collections.OrderedDict``)
    is refused saying what it names. ``setting`` is the name the errors give it ("" for
    none).
    """
    found = import_class_path(backend, setting)
    if not isinstance(found, type) or not issubclass(found, Backend) or isabstract(found):
        raise ConfigurationError(
            f"{_named(setting, backend)} names {_what_it_is(found)}, not a backend class: "
            "it must name a concrete subclass of kaneda_core.Backend, such as "
            "'kaneda.backends.InfluxBackend', or an installed backend by its name, such "
            "as 'influxdb'"
        )
    return found


def import_class_path(backend: object, setting: str = "BACKEND") -> Any:
    """What ``backend`` names: itself if a class, an installed backend, or a dotted path's
    attribute (its last part matched in any case), refused with the nearest that exists."""
    if isinstance(backend, type):
        return backend
    if not isinstance(backend, str) or not backend.strip():
        raise ConfigurationError(
            f"{_named(setting, backend)} is neither a class path nor a backend name: for "
            "example 'kaneda.backends.InfluxBackend' or 'influxdb'"
        )
    backend = backend.strip()
    if "." not in backend:
        return load_backend(backend)
    module_name, _, attribute = backend.rpartition(".")
    try:
        module = _import_in_any_case(module_name)
    except ModuleNotFoundError as error:
        if not error.name or not module_name.lower().startswith(error.name.lower()):
            raise  # the module exists; something it imports is missing
        raise ConfigurationError(
            f"{_named(setting, backend)} names a class in a module that cannot be found (no "
            f"module named {error.name!r}).{_class_path_hint(backend)}"
        ) from None
    names = _class_names(module)
    if attribute not in names and attribute not in vars(module):
        same = [name for name in names if name.lower() == attribute.lower()]
        if len(same) != 1:
            raise ConfigurationError(
                f"{_named(setting, backend)}: {module_name} has no backend class {attribute!r}."
                + _class_path_hint(backend, [f"{module_name}.{name}" for name in names])
            )
        attribute = same[0]
    try:
        return getattr(module, attribute)
    except ImportError as error:  # kaneda.backends.InfluxBackend without its plugin
        raise ConfigurationError(f"{_named(setting, backend)}: {error}") from None


def _named(setting: str, value: object) -> str:
    """``BACKEND = 'kaneda.backends.InfluxBackend'``: the setting and its value, for errors
    (the value alone when no setting is named)."""
    return f"{setting} = {value!r}" if setting else repr(value)


def _what_it_is(found: object) -> str:
    """What a setting names, in words: ``a module``, ``the class collections.OrderedDict``."""
    if isinstance(found, ModuleType):
        return f"a module ({found.__name__})"
    if isinstance(found, type):
        abstract = "abstract " if isabstract(found) else ""
        return f"the {abstract}class {found.__module__}.{found.__qualname__}"
    if callable(found):
        return f"a {type(found).__name__.replace('_', ' ')}"
    return f"a {type(found).__name__} value"


def _class_names(module: ModuleType) -> set[str]:
    """The classes ``module`` offers: its ``__all__`` (names it may load lazily), and the
    classes among its attributes (not its submodules or functions)."""
    names = {name for name, value in vars(module).items() if isinstance(value, type)}
    return names | set(getattr(module, "__all__", ()))


def _import_in_any_case(module_name: str) -> ModuleType:
    """``import_module(module_name)``, or of its lower-case spelling (``Kaneda.Backends``)."""
    try:
        return import_module(module_name)
    except ModuleNotFoundError as error:
        if module_name == module_name.lower() or error.name is None:
            raise
        if not module_name.startswith(error.name):
            raise
        try:
            return import_module(module_name.lower())
        except ModuleNotFoundError:
            raise error from None


def _class_path_hint(path: str, candidates: list[str] | None = None) -> str:
    """The nearest known class path to ``path``, as a sentence ("" when none is near)."""
    from difflib import get_close_matches

    from .registry import installed_class_paths

    known = [*(candidates or []), *KANEDA1_CLASS_PATHS, *installed_class_paths()]
    close = get_close_matches(path, known, n=1, cutoff=0.6)
    if not close:
        close = get_close_matches(path.lower(), [k.lower() for k in known], n=1, cutoff=0.6)
        close = [k for k in known if close and k.lower() == close[0]][:1]
    return f" Did you mean {close[0]!r}?" if close else ""


#: Query options of a backend URL that are the ``Metrics``' own, not the backend's.
METRICS_URL_OPTIONS = ("aggregate", "percentiles")


def split_metrics_options(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without its ``Metrics`` options (``?aggregate=true&percentiles=50,99``), and them.

    The rest of the query is left, in order, for the backend.
    """
    if "?" not in url or not any(f"{name}=" in url for name in METRICS_URL_OPTIONS):
        return url, {}
    from urllib.parse import parse_qsl

    base, _, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    kept: list[str] = []
    options: dict[str, Any] = {}
    given: dict[str, str] = {}
    for part in query.split("&"):
        [(key, raw)] = parse_qsl(part, keep_blank_values=True) or [("", "")]
        if key in METRICS_URL_OPTIONS:
            if key in given:  # which one was meant? Neither wins silently.
                from .backend import option_twice

                raise option_twice(url, key, given[key], raw)
            given[key] = raw
        if key == "aggregate":
            options["aggregate"] = _flag(raw, key)
        elif key == "percentiles":
            options["percentiles"] = _numbers(raw, key)
        elif part:
            kept.append(part)
    url = base + ("?" + "&".join(kept) if kept else "") + hash_mark + fragment
    return url, options


def _flag(raw: str, key: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"Option {key}={raw!r} is not true or false (?{key}=true)")


def _numbers(raw: str, key: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigurationError(
            f"Option {key}={raw!r} is not a list of numbers (?{key}=50,90,99)"
        ) from None


@descriptors.explained("make a Metrics")
def connect(url: str, **metrics_options: Any) -> Metrics:
    """A :class:`Metrics` on the backend ``url`` names: ``connect("influxdb://host:8086/db")``.

    The URL's scheme picks the backend and its query carries backend options
    (``?timeout=1``), and the ``Metrics``' ``aggregate`` and ``percentiles``; keyword
    arguments are :class:`Metrics` options (``batching=False``, ``batch_size=500`` ...)
    and win over the URL's.
    """
    from .metrics import Metrics

    _check_metrics_option_names(Metrics, metrics_options)
    url, from_url = split_metrics_options(url)
    metrics = Metrics(create_backend(url), **{**from_url, **metrics_options})
    metrics._delivery.owns_backend = True  # made for it: closed when it is let go of
    return metrics


def _check_metrics_option_names(cls: type, options: dict[str, Any]) -> None:
    """Refuse, with the nearest, an option ``Metrics`` does not take (``batchsize=``)."""
    import inspect
    from difflib import get_close_matches

    taken = [name for name in inspect.signature(cls).parameters if name != "backend"]
    for name in options:
        if name not in taken:
            close = get_close_matches(name, taken, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"connect() takes no option {name!r}.{hint} Its options are the Metrics': "
                f"{', '.join(taken)}; a backend's options go in the URL's query (?timeout=1)"
            )
