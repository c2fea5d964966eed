"""Kaneda: report metrics and events from Python applications to the backend you choose.

>>> from kaneda_core import connect
>>> metrics = connect("memory://")
>>> metrics.increment("requests", tags={"route": "/"})
"""

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
)
from .metrics import Metrics
from .model import Metric
from .registry import BackendInfo, available_backends, load_backend

__version__ = "2.0.0"

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
    "RetryPolicy",
    "Stats",
    "available_backends",
    "connect",
    "create_backend",
    "load_backend",
]
