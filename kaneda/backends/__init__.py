"""kaneda 1.0's backend import paths.

``BaseBackend`` and ``LoggerBackend`` come with kaneda-core. The others are the
classes of their plugins, resolved through the backend registry when first imported:
``from kaneda.backends import InfluxBackend`` needs ``pip install kaneda-influx``.
"""

from __future__ import annotations

from typing import Any

from kaneda_core.backends.logger import LoggerBackend
from kaneda_core.errors import BackendNotFound

from .base import BaseBackend

#: 1.0 class name -> the registered backend name that provides it.
PLUGIN_CLASSES = {
    "ElasticsearchBackend": "elasticsearch",
    "MongoBackend": "mongo",
    "RethinkBackend": "rethink",
    "InfluxBackend": "influxdb",
}

__all__ = ["BaseBackend", "LoggerBackend", *PLUGIN_CLASSES]


def plugin_class(class_name: str) -> Any:
    """The plugin class kaneda 1.0 called ``class_name``; ImportError with advice if missing."""
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
