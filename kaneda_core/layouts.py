"""Stored layouts: the shape a backend gives the metrics it writes.

What a backend writes (measurement, fields and their types, document keys) is a
contract with the dashboards and queries built on it, so every storage backend offers
two:

- ``kaneda2`` (the default): this version's layout, described in each plugin's README;
- ``kaneda1``: exactly what kaneda 1.0 wrote, so data written before and after an
  upgrade from kaneda 1.0 can be queried alike. The ``kaneda`` package's backends use it.

Each plugin keeps the code of its two layouts in one module of its own; this module
holds what they share: the names, the check of a ``layout`` argument, and kaneda 1.0's
common payload.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigurationError
from .model import Metric

KANEDA2 = "kaneda2"
KANEDA1 = "kaneda1"
#: Every layout name, the default first.
LAYOUTS = (KANEDA2, KANEDA1)
DEFAULT_LAYOUT = KANEDA2


def check_layout(layout: object) -> str:
    """``layout`` if it names a layout, else a :class:`ConfigurationError` saying which exist."""
    if layout in LAYOUTS:
        return str(layout)
    raise ConfigurationError(
        f"layout must be one of {', '.join(repr(name) for name in LAYOUTS)}, got {layout!r} "
        f"({KANEDA2!r} is this version's layout, {KANEDA1!r} the one kaneda 1.0 wrote)"
    )


def kaneda1_payload(metric: Metric) -> dict[str, Any]:
    """kaneda 1.0's common payload for ``metric``, key for key and in 1.0's order.

    ``host``, ``name``, then ``value`` or, for a dict value, the dict's own keys (which
    win over ``host`` and ``name``, as they did in 1.0), then ``tags`` when any were
    given. Each backend's kaneda 1.0 layout adds its own keys (time, kind, id) after.
    """
    payload: dict[str, Any] = {"host": metric.host, "name": metric.name}
    value = metric.value
    if isinstance(value, dict):
        payload.update(value)
    else:
        payload["value"] = value
    if metric.tags:
        payload["tags"] = metric.tags
    return payload


__all__ = ["DEFAULT_LAYOUT", "KANEDA1", "KANEDA2", "LAYOUTS", "check_layout", "kaneda1_payload"]
