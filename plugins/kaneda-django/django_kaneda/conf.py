"""Which backend and which ``Metrics`` Django's settings describe.

In order, the first that applies:

1. ``KANEDA_DEBUG = True``: the logger backend (``KANEDA_LOGGER``, a logger's name, or
   ``KANEDA_LOGGER_FILENAME``, a file; else stderr), as in kaneda 1.0.
2. ``KANEDA_URL``: the backend the URL names (``influxdb://user:pw@host:8086/db``),
   delivered by a background worker (``kaneda_core.Metrics``, batching).
3. ``KANEDA_QUEUE``, then ``KANEDA_BACKEND``: a class path, built from the settings
   ``KANEDA_<NAMESPACE>_<PARAM>`` (``KANEDA_INFLUX_HOST`` -> ``host``), delivered in the
   caller's thread (``kaneda.Metrics``), as in kaneda 1.0. 1.0 let the queue win
   when both were set; so does this.
4. The ``KANEDA_URL`` environment variable, when the settings name none of the above.

``KANEDA_OPTIONS`` (a dict) are ``Metrics`` options for any of them:
``{"batching": True, "batch_size": 500, "buffer_path": "/var/lib/app/kaneda.sqlite"}``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kaneda_core import Backend, ConfigurationError, Metrics

# The module itself, from sys.modules: ``from . import settings`` would give whatever
# django_kaneda.settings holds now, which code may have replaced (see legacy_settings).
own_settings = importlib.import_module("django_kaneda.settings")

BACKEND_SETTING = "KANEDA_BACKEND"
QUEUE_SETTING = "KANEDA_QUEUE"
URL_SETTING = "KANEDA_URL"
OPTIONS_SETTING = "KANEDA_OPTIONS"

NOTHING_CONFIGURED = (
    "You need to set KANEDA_BACKEND or KANEDA_QUEUE on settings.py to django_kaneda, "
    "or KANEDA_URL (for example KANEDA_URL = 'influxdb://localhost:8086/metrics'), "
    "or KANEDA_DEBUG = True to log metrics instead."
)


def legacy_settings() -> Any:
    """kaneda 1.0's settings as ``django_kaneda.settings`` holds them now.

    Read at each use, as 1.0 did: code (and kaneda 1.0's own tests) that replaces
    ``django_kaneda.settings`` with an object of its own is heard.
    """
    import django_kaneda

    return getattr(django_kaneda, "settings", own_settings)


def settings_error(message: str) -> Exception:
    """kaneda 1.0's ``SettingsError``, which is also a ``kaneda_core.ConfigurationError``."""
    from kaneda.exceptions import SettingsError

    return SettingsError(message)


def naming(error: Exception, setting: str) -> Exception:
    """``error``, its message led by the setting that caused it; of its own type if it can be.

    The type is kept (``ImproperlyConfigured``, ``BackendNotFound``, ``ValueError`` ...)
    for code that catches it; an exception that cannot be made again from one message
    becomes a ``SettingsError``.
    """
    message = f"{setting}: {error}"
    try:
        renamed = type(error)(message)
    except Exception:  # noqa: BLE001 - a constructor that wants more than a message
        return settings_error(message)
    return renamed if str(renamed) == message else settings_error(message)


@dataclass
class Configuration:
    """What the settings ask for: where the backend comes from, and the Metrics options.

    ``source`` names the setting that chose the backend. ``make_backend`` builds a
    new backend (or queue) each time it is called. ``batching`` is whether metrics go
    through a background worker: True for ``KANEDA_URL``, False for kaneda 1.0's
    settings, unless ``KANEDA_OPTIONS`` says otherwise. ``legacy`` picks the class:
    ``kaneda.Metrics`` for 1.0's settings, ``kaneda_core.Metrics`` for a URL.
    """

    source: str
    make_backend: Callable[[], Any]
    options: dict[str, Any] = field(default_factory=dict)
    batching: bool = False
    #: kaneda 1.0's ``kaneda.Metrics`` (1.0 settings), else ``kaneda_core.Metrics`` (a URL).
    legacy: bool = True

    def build_metrics(self, **overrides: Any) -> Metrics:
        """A new ``Metrics`` on a new backend, with the options (and ``overrides``)."""
        options = {**self.options, "batching": self.batching, **overrides}
        backend = self.make_backend()
        try:
            if not self.legacy:
                return Metrics(backend, **options)
            import kaneda

            if self.source == QUEUE_SETTING:
                return kaneda.Metrics(queue=backend, **options)  # metrics.queue, as in 1.0
            return kaneda.Metrics(backend, **options)
        except ConfigurationError as error:
            if any(str(error).startswith(name) for name in self.options):
                raise settings_error(f"{OPTIONS_SETTING}: {error}") from None
            raise naming(error, self.source) from error


def read_configuration() -> Configuration:
    """The :class:`Configuration` Django's settings describe, or a SettingsError saying why not."""
    from django.conf import settings

    options = _options(getattr(settings, OPTIONS_SETTING, None))
    explicit_batching = options.pop("batching", None)
    url = getattr(settings, URL_SETTING, None)
    legacy = legacy_settings()
    backend_path = getattr(legacy, "BACKEND", None)
    queue_path = getattr(legacy, "QUEUE", None)

    if _flag("KANEDA_DEBUG", getattr(legacy, "DEBUG", False)):
        configuration = Configuration("KANEDA_DEBUG", _logger_backend, options)
    elif url:
        if backend_path or queue_path:
            other = QUEUE_SETTING if queue_path else BACKEND_SETTING
            raise settings_error(
                f"Both {URL_SETTING} and {other} are set: keep one. {URL_SETTING} names the "
                f"backend by URL; {other} by class path, kaneda 1.0's way."
            )
        configuration = Configuration(
            URL_SETTING, _url_backend(url), options, batching=True, legacy=False
        )
    elif queue_path:
        configuration = Configuration(
            QUEUE_SETTING, lambda: build_from_settings(QUEUE_SETTING, queue_path), options
        )
    elif backend_path:
        configuration = Configuration(
            BACKEND_SETTING, lambda: build_from_settings(BACKEND_SETTING, backend_path), options
        )
    elif os.environ.get(URL_SETTING):
        configuration = Configuration(
            "the environment variable KANEDA_URL",
            _url_backend(os.environ[URL_SETTING]),
            options,
            batching=True,
            legacy=False,
        )
    else:
        raise settings_error(NOTHING_CONFIGURED)
    if explicit_batching is not None:
        configuration.batching = explicit_batching
    return configuration


#: How a flag read from the environment says yes or no (``os.environ.get("KANEDA_DEBUG")``).
TRUE_TEXT = ("1", "true", "yes", "on")
FALSE_TEXT = ("", "0", "false", "no", "off")


def _flag(setting: str, value: Any) -> bool:
    """``value`` as a yes or no; text read as a flag, not by being non-empty.

    ``KANEDA_DEBUG = os.environ.get("KANEDA_DEBUG", "False")`` would otherwise turn the
    logger on, and the metrics would go to a log instead of the store.
    """
    if value is None or isinstance(value, bool | int):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE_TEXT or text in FALSE_TEXT:
            return text in TRUE_TEXT
    raise settings_error(
        f"{setting} must be True or False (or text such as 'true', 'false', '1', '0'), "
        f"got {value!r}"
    )


def _options(options: Any) -> dict[str, Any]:
    """``KANEDA_OPTIONS`` checked: a dict of ``kaneda_core.Metrics`` keyword arguments."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise settings_error(
            f"{OPTIONS_SETTING} must be a dict of Metrics options, for example "
            f"{{'batch_size': 500}}; got a {type(options).__name__}"
        )
    accepted = [
        name
        for name, parameter in inspect.signature(Metrics).parameters.items()
        if parameter.kind is parameter.KEYWORD_ONLY
    ]
    for key in options:
        if key not in accepted:
            raise settings_error(
                f"{OPTIONS_SETTING} has an unknown option {key!r} (accepted: {', '.join(accepted)})"
            )
    return dict(options)


def _url_backend(url: str) -> Callable[[], Backend]:
    if not isinstance(url, str):
        raise settings_error(f"{URL_SETTING} must be a string, got a {type(url).__name__}")

    def make() -> Backend:
        from kaneda_core import create_backend

        try:
            return create_backend(url)
        except (ConfigurationError, TypeError, ValueError) as error:
            raise naming(error, URL_SETTING) from error  # create_backend hides the password

    return make


def _logger_backend() -> Backend:
    # kaneda 1.0's class: its lines, through its logger, as a 1.0 project's log had them.
    from kaneda.backends import LoggerBackend

    legacy = legacy_settings()
    name = getattr(legacy, "LOGGER", None)
    if name:
        if not isinstance(name, str):
            raise settings_error(
                "KANEDA_LOGGER must be the name of a logger (a string), got a "
                f"{type(name).__name__}"
            )
        return LoggerBackend(logger=logging.getLogger(name))
    filename = getattr(legacy, "LOGGER_FILENAME", None)
    if filename:
        if not isinstance(filename, (str, os.PathLike)):
            raise settings_error(
                "KANEDA_LOGGER_FILENAME must be a file's path (a string), got a "
                f"{type(filename).__name__}"
            )
        return LoggerBackend(filename=filename)
    return LoggerBackend()


def build_from_settings(setting: str, class_path: Any) -> Any:
    """An instance of the class ``setting`` names, with its ``KANEDA_<NAMESPACE>_*`` arguments.

    kaneda 1.0's way: the class's ``settings_namespace`` (``INFLUX``) selects the
    settings (``KANEDA_INFLUX_HOST`` -> ``host``); 1.0's defaults fill what is unset
    (``KANEDA_INFLUX_DATABASE`` is ``'kaneda'``).
    """
    from kaneda.exceptions import UnexistingKanedaClass
    from kaneda.utils import import_class

    try:
        cls = import_class(class_path)
    except (ImportError, AttributeError, ValueError, TypeError) as error:
        raise UnexistingKanedaClass(
            f"The selected {setting} class does not exists: {class_path!r} cannot be "
            f"imported ({error})"
        ) from error
    namespace = getattr(cls, "settings_namespace", None)
    arguments = namespace_arguments(namespace) if namespace else {}
    _check_arguments(cls, namespace, arguments)
    try:
        return cls(**arguments)
    except (ConfigurationError, TypeError, ValueError) as error:
        raise naming(error, _culprit(setting, class_path, namespace, error)) from error


def _culprit(setting: str, class_path: Any, namespace: str | None, error: Exception) -> str:
    """Which setting a class's error is about: the set argument it names first, else all.

    Errors name the argument they refuse before anything else ("port must be an int"),
    and may go on to an example that names others. Only names are added to the
    message, never a value (a password stays out).
    """
    built = f"{setting} = {class_path!r}"
    if not namespace:
        return built
    text = str(error)
    first: tuple[int, str] | None = None
    for name in _explicit_names(namespace):
        found = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text)
        if found and (first is None or found.start() < first[0]):
            first = (found.start(), name)
    prefix = own_settings.PREFIX + namespace + "_"
    if first is not None:
        return f"{prefix}{first[1].upper()} (for {built})"
    return f"{built}, built from the settings {prefix}*"


def namespace_arguments(namespace: str) -> dict[str, Any]:
    """``KANEDA_<namespace>_<PARAM>`` settings as ``{param: value}``, over 1.0's defaults."""
    from django.conf import settings

    arguments: dict[str, Any] = {}
    prefix = namespace + "_"
    legacy = legacy_settings()
    if legacy is not own_settings:
        # Something put its own object in django_kaneda.settings (kaneda 1.0's tests do):
        # its <NAMESPACE>_<PARAM> attributes are the arguments, as 1.0 read them.
        return {
            name[len(prefix) :].lower(): getattr(legacy, name)
            for name in dir(legacy)
            if name.startswith(prefix)
        }
    for name, value in own_settings.DEFAULTS.items():
        if name.startswith(prefix) and value is not None:  # None: 1.0 left it unset
            arguments[name[len(prefix) :].lower()] = value
    full_prefix = own_settings.PREFIX + prefix
    for name in dir(settings):
        if name.startswith(full_prefix):
            arguments[name[len(full_prefix) :].lower()] = getattr(settings, name)
    return arguments


def _check_arguments(cls: type, namespace: str | None, arguments: dict[str, Any]) -> None:
    """Refuse a setting the class takes no argument for; drop defaults it does not take."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to check against
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    explicit = set(_explicit_names(namespace))
    for name in list(arguments):
        if name in parameters:
            continue
        if name not in explicit:
            del arguments[name]  # a 1.0 default this class does not take
            continue
        accepted = ", ".join(
            f"{own_settings.PREFIX}{namespace}_{p.upper()}" for p in parameters if p != "self"
        )
        raise settings_error(
            f"{own_settings.PREFIX}{namespace}_{name.upper()} is not an argument of "
            f"{cls.__name__} (its settings: {accepted})"
        )
    required = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for name, parameter in parameters.items():
        if parameter.default is parameter.empty and parameter.kind in required:
            if name in arguments:
                continue
            needed = (
                f"the setting {own_settings.PREFIX}{namespace}_{name.upper()}"
                if namespace
                else f"the argument {name!r}, and has no settings_namespace to read it from"
            )
            raise settings_error(f"{cls.__name__} needs {needed}")


def _explicit_names(namespace: str | None) -> list[str]:
    from django.conf import settings

    if not namespace:
        return []
    prefix = own_settings.PREFIX + namespace + "_"
    return [name[len(prefix) :].lower() for name in dir(settings) if name.startswith(prefix)]
