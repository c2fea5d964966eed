"""kaneda 1.0's ``Metrics``: reports in the caller's thread unless asked to batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaneda_core.backend import Backend
from kaneda_core.errors import ConfigurationError, InvalidMetric
from kaneda_core.layouts import KANEDA1
from kaneda_core.metrics import Metrics as CoreMetrics
from kaneda_core.metrics import Timer
from kaneda_core.model import GAUGE, TIMING, TagsInput

from .answering import AnsweringMetrics
from .backends.base import BaseBackend
from .conversions import custom_as_1_0, number_as_1_0, tags_as_1_0, text_as_1_0
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
        from_settings = backend is None and queue is None
        if from_settings:
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
        if from_settings:
            self._delivery.owns_backend = True  # made for it: closed when it is let go of
        self._takes_bools = _stores_as_given(self.backend)

    # kaneda 1.0 passed any value to its backend: a bool gauge or timing was stored as a
    # bool. It still is where it would be stored as 1.0 stored it; anywhere else (this
    # version's layout, a queue, whose workers take numbers only) it is refused at the
    # call, as by kaneda_core.Metrics. With aggregation these methods are replaced.
    #
    # Input kaneda 1.0 stored and kaneda_core refuses (a UUID tag, a Decimal gauge, bytes
    # ...) is converted to what 1.0 stored (see kaneda.conversions) once kaneda_core has
    # refused it, and the call made again: ordinary input pays nothing for it. Converted
    # input meets every check, so what is still wrong is refused, and named, then.

    def gauge(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record the value of a gauge; returns the backend's answer (see the class)."""
        try:
            if type(value) is bool and self._takes_bools:
                return self._answering(type(self)._report, name, GAUGE, value, tags, None)
            return self._answering(CoreMetrics.gauge, name, value, tags)
        except InvalidMetric:
            converted = _as_1_0(number_as_1_0, value, tags)
            if converted is None:
                raise
        return Metrics.gauge(self, name, *converted)

    def increment(self, name: str, tags: TagsInput | None = None) -> Any:
        """Add one to a counter; returns the backend's answer (see the class)."""
        try:
            return self._answering(CoreMetrics.increment, name, tags)
        except InvalidMetric:
            converted = tags_as_1_0(tags)
            if converted is None:
                raise
        return Metrics.increment(self, name, converted)

    def decrement(self, name: str, tags: TagsInput | None = None) -> Any:
        """Subtract one from a counter; returns the backend's answer (see the class)."""
        try:
            return self._answering(CoreMetrics.decrement, name, tags)
        except InvalidMetric:
            converted = tags_as_1_0(tags)
            if converted is None:
                raise
        return Metrics.decrement(self, name, converted)

    def timing(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record a duration; returns the backend's answer (see the class)."""
        try:
            if type(value) is bool and self._takes_bools:
                return self._answering(type(self)._report, name, TIMING, value, tags, None)
            return self._answering(CoreMetrics.timing, name, value, tags)
        except InvalidMetric:
            converted = _as_1_0(number_as_1_0, value, tags)
            if converted is None:
                raise
        return Metrics.timing(self, name, *converted)

    def event(self, name: str, text: str, tags: TagsInput | None = None) -> Any:
        """Record an event; returns the backend's answer (see the class)."""
        try:
            return self._answering(CoreMetrics.event, name, text, tags)
        except InvalidMetric:
            converted = _as_1_0(text_as_1_0, text, tags)
            if converted is None:
                raise
        return Metrics.event(self, name, *converted)

    def custom(
        self,
        name: str,
        metric: str,
        value: Any,
        tags: TagsInput | None = None,
        id_: str | int | None = None,
    ) -> Any:
        """Record a custom metric; returns the backend's answer (see the class)."""
        try:
            return self._answering(CoreMetrics.custom, name, metric, value, tags, id_)
        except InvalidMetric:
            converted = _as_1_0(custom_as_1_0, value, tags)
            if converted is None:
                raise
        return Metrics.custom(self, name, metric, *converted, id_)

    def timed(
        self, name: str | None = None, tags: TagsInput | None = None, use_ms: bool | None = None
    ) -> Timer:
        """Time a function or a block (see :meth:`kaneda_core.Metrics.timed`)."""
        try:
            return CoreMetrics.timed(self, name, tags, use_ms)
        except InvalidMetric:
            converted = tags_as_1_0(tags)
            if converted is None:
                raise
        return CoreMetrics.timed(self, name, converted, use_ms)


def _as_1_0(convert: Callable[[Any], Any], value: Any, tags: Any) -> tuple[Any, Any] | None:
    """``(value, tags)`` as kaneda 1.0 stored them; None when neither has anything to convert."""
    new_value, new_tags = convert(value), tags_as_1_0(tags)
    if new_value is None and new_tags is None:
        return None
    return (value if new_value is None else new_value, tags if new_tags is None else new_tags)


def _stores_as_given(backend: Backend) -> bool:
    """Whether ``backend`` stores a value as kaneda 1.0 did: a 1.0 backend, or 1.0's layout."""
    if isinstance(backend, BaseQueue):
        return False
    if isinstance(backend, BaseBackend):
        return True
    layout = getattr(backend, "layout", None)
    return getattr(layout, "name", layout) == KANEDA1
