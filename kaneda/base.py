"""kaneda 1.0's ``Metrics``: reports in the caller's thread unless asked to batch."""

from __future__ import annotations

from typing import Any

from kaneda_core.backend import Backend
from kaneda_core.errors import ConfigurationError
from kaneda_core.layouts import KANEDA1
from kaneda_core.metrics import Metrics as CoreMetrics
from kaneda_core.model import GAUGE, TIMING, TagsInput

from .answering import AnsweringMetrics
from .backends.base import BaseBackend
from .queues.base import BaseQueue


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
        self._takes_bools = _stores_as_given(self.backend)

    # kaneda 1.0 passed any value to its backend: a bool gauge or timing was stored as a
    # bool. It still is where it would be stored as 1.0 stored it; anywhere else (this
    # version's layout, a queue, whose workers take numbers only) it is refused at the
    # call, as by kaneda_core.Metrics. With aggregation these methods are replaced.

    def gauge(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record the value of a gauge; returns the backend's answer (see the class)."""
        if type(value) is bool and self._takes_bools:
            self._report(name, GAUGE, value, tags, None)
        else:
            CoreMetrics.gauge(self, name, value, tags)  # AnsweringMetrics' body, one call less
        return self._answer()

    def timing(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record a duration; returns the backend's answer (see the class)."""
        if type(value) is bool and self._takes_bools:
            self._report(name, TIMING, value, tags, None)
        else:
            CoreMetrics.timing(self, name, value, tags)
        return self._answer()


def _stores_as_given(backend: Backend) -> bool:
    """Whether ``backend`` stores a value as kaneda 1.0 did: a 1.0 backend, or 1.0's layout."""
    if isinstance(backend, BaseQueue):
        return False
    if isinstance(backend, BaseBackend):
        return True
    layout = getattr(backend, "layout", None)
    return getattr(layout, "name", layout) == KANEDA1
