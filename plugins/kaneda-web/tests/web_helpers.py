"""Helpers shared by the kaneda-web tests (on sys.path through conftest.py)."""

from __future__ import annotations

from typing import Any

from kaneda_core import Metric, Metrics

DURATION = "http.request.duration"
EXCEPTIONS = "http.request.exceptions"


def reported(metrics: Metrics, name: str = DURATION) -> list[Metric]:
    """What ``metrics`` stored under ``name`` (memory backend), in order."""
    backend: Any = metrics.backend
    return [m for m in backend.metrics if m.name == name]


def request_tags(metrics: Metrics, name: str = DURATION) -> list[dict[str, Any]]:
    """The tags of every metric stored under ``name``, in order."""
    return [dict(m.tags) for m in reported(metrics, name)]  # type: ignore[arg-type]
