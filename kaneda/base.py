"""kaneda 1.0's ``Metrics``: reports in the caller's thread unless asked to batch."""

from __future__ import annotations

from typing import Any

from kaneda_core.backend import Backend
from kaneda_core.errors import ConfigurationError

from .answering import AnsweringMetrics

QUEUES_UNSUPPORTED = (
    "Kaneda queues (queue=..., QUEUE in settings) are not supported by this version. "
    "Report through a backend instead; for delivery off the caller's thread use "
    "Metrics(backend, batching=True)."
)


class Metrics(AnsweringMetrics):
    """Metrics reporting class, with kaneda 1.0's meaning.

    ``backend`` is an instance of a backend; without one (and without ``queue``) the
    backend comes from the settings module, as in kaneda 1.0. Each call stores the
    metric before it returns; pass ``batching=True`` (and any other
    :class:`kaneda_core.Metrics` option) to deliver from a background worker instead.
    Delivered in the caller's thread, each call returns the backend's answer, as in
    kaneda 1.0 (see :class:`kaneda.answering.AnsweringMetrics`).
    """

    def __init__(
        self,
        backend: Backend | str | None = None,
        queue: object = None,
        *,
        batching: bool = False,
        **options: Any,
    ) -> None:
        if queue is not None:
            raise ConfigurationError(QUEUES_UNSUPPORTED)
        if backend is None:
            from .utils import get_kaneda_objects

            backend, _ = get_kaneda_objects()
        super().__init__(backend, batching=batching, **options)
