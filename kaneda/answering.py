"""kaneda 1.0's return values: a reporting call returns what the backend answered.

In kaneda 1.0, ``metrics.gauge(...)`` returned the backend's ``report`` result (InfluxDB
``True``, the Elasticsearch index response, MongoDB's ``InsertOneResult``), or ``None``
when the backend failed. :class:`AnsweringMetrics` does the same when it delivers in the
caller's thread, for every reporting call; with ``batching=True`` (nothing is delivered
yet when the call returns) calls return ``None``, as :class:`kaneda_core.Metrics` does.
"""

from __future__ import annotations

import threading
from typing import Any

from kaneda_core.delivery import Delivery, Item
from kaneda_core.dispatch import SyncDispatcher
from kaneda_core.metrics import Metrics as CoreMetrics
from kaneda_core.model import TagsInput


class AnsweringDispatcher(SyncDispatcher):
    """Delivers in the caller's thread and keeps, per thread, what the backend answered."""

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery)
        self._answers = threading.local()

    def _submit(self, item: Item) -> None:
        # A call deferred by a signal handler gets no answer: None, not the last one.
        self._answers.answer = None
        super()._submit(item)

    def _deliver_one(self, item: Item) -> None:
        self._answers.answer = None
        answers: list[Any] = []
        self.delivery.deliver((item,), retry=False, answers=answers)
        if answers:  # stored (not failed, not filtered out by a hook)
            per_metric = answers[0]
            self._answers.answer = True if per_metric is None else per_metric[0]

    def answer(self) -> Any:
        """The answer for this thread's last delivered metric; None if it was not stored."""
        return getattr(self._answers, "answer", None)


class AnsweringMetrics(CoreMetrics):
    """:class:`kaneda_core.Metrics` whose reporting calls return the backend's answer.

    The answer is the backend's own result for the metric where it gives one (see
    :meth:`kaneda_core.Backend.send`), ``True`` when it stored the metric without one,
    and ``None`` when the metric was not stored (the backend failed) or not yet
    delivered (``batching=True``).
    """

    _sync_dispatcher = AnsweringDispatcher

    def _answer(self) -> Any:
        dispatcher = self._dispatcher
        return dispatcher.answer() if isinstance(dispatcher, AnsweringDispatcher) else None

    def gauge(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record the value of a gauge; returns the backend's answer (see the class)."""
        super().gauge(name, value, tags)
        return self._answer()

    def increment(self, name: str, tags: TagsInput | None = None) -> Any:
        """Add one to a counter; returns the backend's answer (see the class)."""
        super().increment(name, tags)
        return self._answer()

    def decrement(self, name: str, tags: TagsInput | None = None) -> Any:
        """Subtract one from a counter; returns the backend's answer (see the class)."""
        super().decrement(name, tags)
        return self._answer()

    def timing(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record a duration; returns the backend's answer (see the class)."""
        super().timing(name, value, tags)
        return self._answer()

    def event(self, name: str, text: str, tags: TagsInput | None = None) -> Any:
        """Record an event; returns the backend's answer (see the class)."""
        super().event(name, text, tags)
        return self._answer()

    def custom(
        self,
        name: str,
        metric: str,
        value: Any,
        tags: TagsInput | None = None,
        id_: str | int | None = None,
    ) -> Any:
        """Record a custom metric; returns the backend's answer (see the class)."""
        super().custom(name, metric, value, tags, id_)
        return self._answer()
