"""kaneda 1.0's settings helpers, with its behaviour and messages."""

from __future__ import annotations

import os
from importlib import import_module
from types import ModuleType
from typing import Any

from kaneda_core.config import (
    DEFAULT_SETTINGS_MODULE,
    SETTINGS_VARIABLE,
    backend_from_settings,
    import_class_path,
    resolve_backend_class,
)
from kaneda_core.errors import ConfigurationError

from .exceptions import SettingsError, UnexistingKanedaClass

DEFAULT_SETTINGS_ENVAR = SETTINGS_VARIABLE

__all__ = [
    "DEFAULT_SETTINGS_ENVAR",
    "DEFAULT_SETTINGS_MODULE",
    "get_backend",
    "get_kaneda_objects",
    "get_object_from_settings",
    "get_settings",
    "import_class",
]


def import_class(path_or_callable: Any) -> Any:
    """The class (or callable) itself, or the one a dotted path or a backend name names.

    As ``kaneda_core`` resolves a settings module's BACKEND: the class name matches in
    any case, and a path that names nothing is an :class:`UnexistingKanedaClass` (an
    ImportError, as 1.0's was) naming the nearest path that exists.
    """
    if callable(path_or_callable):
        return path_or_callable
    try:
        return import_class_path(path_or_callable, setting="")
    except ConfigurationError as error:
        raise UnexistingKanedaClass(str(error)) from None


def get_settings() -> ModuleType:
    """The settings module: ``kanedasettings``, or the one ``KANEDA_SETTINGS_MODULE`` names."""
    return import_module(os.environ.get(DEFAULT_SETTINGS_ENVAR, DEFAULT_SETTINGS_MODULE))


def get_object_from_settings(class_path: Any, settings: Any) -> Any:
    """An instance of ``class_path`` built from the settings named after its namespace.

    With ``settings_namespace = "MY_BACKEND"``, the settings ``MY_BACKEND_HOST`` and
    ``MY_BACKEND_PORT`` become the arguments ``host`` and ``port``.
    """
    setting = next(
        (name for name in ("BACKEND", "QUEUE") if _holds(settings, name, class_path)), ""
    )
    try:
        kaneda_class = resolve_backend_class(class_path, setting)
    except (ConfigurationError, ImportError) as error:
        # 1.0's message first (code may match on it), then what is wrong and what exists.
        raise UnexistingKanedaClass(
            f"The selected BACKEND or QUEUE class does not exists. {error}"
        ) from error
    return backend_from_settings(kaneda_class, settings)


def _holds(settings: Any, name: str, value: Any) -> bool:
    """Whether the setting ``name`` is ``value`` (which setting an error is about)."""
    held = getattr(settings, name, None)
    return held is value or (isinstance(held, str) and held == value)


def get_backend() -> Any:
    """The backend the settings module describes, or a :class:`SettingsError`."""
    try:
        settings = get_settings()
    except ImportError:
        raise SettingsError(
            f"Define backend settings on {DEFAULT_SETTINGS_MODULE}.py or set "
            f'"{DEFAULT_SETTINGS_ENVAR}" enviroment variable with your settings module.'
        ) from None
    if not hasattr(settings, "BACKEND"):
        raise SettingsError(
            "You need to set BACKEND in Kaneda settings file to import a backend instance."
        )
    return get_object_from_settings(settings.BACKEND, settings)


def get_kaneda_objects() -> tuple[Any, Any]:
    """``(backend, None)`` or ``(None, queue)`` from the settings module's BACKEND or QUEUE."""
    try:
        settings = get_settings()
    except ImportError:
        raise SettingsError(
            f"Define backend or queue settings on {DEFAULT_SETTINGS_MODULE}.py or set "
            f'"{DEFAULT_SETTINGS_ENVAR}" enviroment variable with your settings module.'
        ) from None
    if hasattr(settings, "BACKEND"):
        return get_object_from_settings(settings.BACKEND, settings), None
    if hasattr(settings, "QUEUE"):
        return None, get_object_from_settings(settings.QUEUE, settings)
    raise SettingsError("You need to set BACKEND or QUEUE to use Kaneda with a settings file.")
