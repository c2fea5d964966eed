"""The hooks a plugin can implement beyond adding a backend.

Implement them in a module or class decorated with :data:`hookimpl` and publish it on
the ``kaneda`` entry-point group (or register it with ``get_plugin_manager()``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .model import Metric, Scalar

PROJECT = "kaneda"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def kaneda_default_tags(backend: Backend) -> Mapping[str, Scalar] | None:
    """Tags added to every dict-tagged metric of a new ``Metrics``; the call's own tags win.

    Called once when a ``Metrics`` is created, so return values that do not change
    while the process runs (the service name, the region, the release).
    """


@hookspec
def kaneda_filter_metric(metric: Metric) -> bool | None:
    """Return ``False`` to drop ``metric`` before it reaches the backend.

    ``False`` itself: anything else (``None``, ``True``, ``0``) keeps it.

    Called for every metric just before delivery, in the delivering thread, only when
    at least one plugin implements it. Dropped metrics are counted as ``filtered``.
    """


@hookspec
def kaneda_batch_failed(metrics: Sequence[Metric], error: BaseException, backend: Backend) -> None:
    """Told when ``metrics`` could not be delivered for good (after any retries).

    ``error`` says why: the backend's exception, or a :class:`~kaneda_core.KanedaError`
    for metrics dropped because the buffer was full. Send them elsewhere, page
    someone, count them; an exception raised here is logged and ignored.
    """
