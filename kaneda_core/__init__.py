"""Kaneda: report metrics and events from Python applications to the backend you choose.

>>> from kaneda_core import connect
>>> metrics = connect("memory://")
>>> metrics.increment("requests", tags={"route": "/"})

The public names are imported from their modules when first used (PEP 562): ``import
kaneda_core`` alone costs almost nothing, and a program pays for what it touches.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backend import Backend
    from .config import connect, create_backend
    from .delivery import RetryPolicy, Stats
    from .errors import (
        BackendLoadError,
        BackendNotFound,
        ConfigurationError,
        DeliveryError,
        InvalidMetric,
        KanedaError,
        PluginLoadError,
    )
    from .forking import deliver_on_terminate
    from .metrics import Metrics
    from .model import Metric
    from .registry import BackendInfo, available_backends, load_backend

__version__ = "2.0.0"

#: Each public name and the module it comes from.
_PUBLIC = {
    "Backend": "backend",
    "BackendInfo": "registry",
    "BackendLoadError": "errors",
    "BackendNotFound": "errors",
    "ConfigurationError": "errors",
    "DeliveryError": "errors",
    "InvalidMetric": "errors",
    "KanedaError": "errors",
    "Metric": "model",
    "Metrics": "metrics",
    "PluginLoadError": "errors",
    "RetryPolicy": "delivery",
    "Stats": "delivery",
    "available_backends": "registry",
    "connect": "config",
    "create_backend": "config",
    "deliver_on_terminate": "forking",
    "load_backend": "registry",
}

__all__ = [
    "Backend",
    "BackendInfo",
    "BackendLoadError",
    "BackendNotFound",
    "ConfigurationError",
    "DeliveryError",
    "InvalidMetric",
    "KanedaError",
    "Metric",
    "Metrics",
    "PluginLoadError",
    "RetryPolicy",
    "Stats",
    "available_backends",
    "connect",
    "create_backend",
    "deliver_on_terminate",
    "load_backend",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'kaneda_core' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # found once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
