"""kaneda 1.0's backend import paths.

``BaseBackend`` and ``LoggerBackend`` come with kaneda-core. The others are the
classes of their plugins, resolved through the backend registry when first imported:
``from kaneda.backends import InfluxBackend`` needs ``pip install kaneda-influx``.
Each is a subclass of the plugin's (or core's) class that writes kaneda 1.0's layout
by default (see :mod:`kaneda.backends.faces`).
"""

from __future__ import annotations

from typing import Any

from kaneda_core.backends import logger as _logger
from kaneda_core.errors import BackendNotFound

from .base import BaseBackend
from .faces import kaneda1_class

LoggerBackend = kaneda1_class(_logger.LoggerBackend, "LoggerBackend")

#: 1.0 class name -> the registered backend name that provides it.
PLUGIN_CLASSES = {
    "ElasticsearchBackend": "elasticsearch",
    "MongoBackend": "mongo",
    "RethinkBackend": "rethink",
    "InfluxBackend": "influxdb",
}

__all__ = ["BaseBackend", "LoggerBackend", *PLUGIN_CLASSES]

#: (1.0 class name, plugin class) -> its face: one class per plugin class, so that
#: ``import_class("kaneda.backends.InfluxBackend")`` is always the same object.
_faces: dict[tuple[str, type], Any] = {}


def plugin_class(class_name: str) -> Any:
    """kaneda 1.0's ``class_name``: its plugin's class, writing kaneda 1.0's layout.

    ImportError with install advice if the plugin is missing.
    """
    plugin = _plugin(class_name)
    face = _faces.get((class_name, plugin))
    if face is None:
        face = _faces[(class_name, plugin)] = kaneda1_class(plugin, class_name)
    return face


def _plugin(class_name: str) -> Any:
    from kaneda_core.registry import install_advice, load_backend

    name = PLUGIN_CLASSES[class_name]
    try:
        return load_backend(name)
    except BackendNotFound:
        raise ImportError(
            f"kaneda.backends.{class_name} is provided by a plugin that is not installed."
            + install_advice(name),
            name=f"kaneda.backends.{class_name}",
        ) from None


def __getattr__(attribute: str) -> Any:
    if attribute in PLUGIN_CLASSES:
        return plugin_class(attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
