"""kaneda 1.0's ``Metrics``: reports in the caller's thread unless asked to batch."""

from __future__ import annotations

from typing import Any

from kaneda_core.backend import Backend
from kaneda_core.errors import ConfigurationError

from .answering import AnsweringMetrics


class Metrics(AnsweringMetrics):
    """Metrics reporting class, with kaneda 1.0's meaning.

    ``backend`` is an instance of a backend; ``queue`` an instance of a queue
    (``kaneda.queues.RQQueue`` ...), which hands each metric to a broker for a worker to
    store. Without either, they come from the settings module (``BACKEND`` or
    ``QUEUE``), as in kaneda 1.0. Each call stores (or enqueues) the metric before it
    returns; pass ``batching=True`` (and any other :class:`kaneda_core.Metrics` option)
    to deliver from a background worker instead.
    Delivered in the caller's thread, each call returns the backend's answer, as in
    kaneda 1.0 (see :class:`kaneda.answering.AnsweringMetrics`).
    """

    def __init__(
        self,
        backend: Backend | str | None = None,
        queue: Backend | None = None,
        *,
        batching: bool = False,
        **options: Any,
    ) -> None:
        if backend is None and queue is None:
            from .utils import get_kaneda_objects

            backend, queue = get_kaneda_objects()
        if queue is not None and not isinstance(queue, Backend):
            raise ConfigurationError(
                "queue must be a Kaneda queue (kaneda.queues.RQQueue, CeleryQueue, ZMQQueue "
                f"or a kaneda.queues.BaseQueue subclass), got {queue!r}"
            )
        #: The queue metrics go through (None when a backend was given, as in kaneda 1.0).
        self.queue = queue if backend is None else None
        super().__init__(backend if backend is not None else queue, batching=batching, **options)
