"""kaneda 1.0's return values: a reporting call returns what the backend answered.

In kaneda 1.0, ``metrics.gauge(...)`` returned the backend's ``report`` result (InfluxDB
``True``, the Elasticsearch index response, MongoDB's ``InsertOneResult``), or ``None``
when the backend failed. :class:`AnsweringMetrics` does the same when it delivers in the
caller's thread, for every reporting call; with ``batching=True`` (nothing is delivered
yet when the call returns) calls return ``None``, as :class:`kaneda_core.Metrics` does.

A call whose metric was not stored by the time it returns answers ``None``, whatever
the reason: the backend failed, a ``kaneda_filter_metric`` hook left it out, it was
made after ``close()`` (dropped), or it was made from within a delivery of the same
thread (a signal handler, a hook, a backend reporting to its own ``Metrics``), where it
is delivered right after the current one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from kaneda_core.delivery import Delivery, Item
from kaneda_core.dispatch import SyncDispatcher
from kaneda_core.metrics import Metrics as CoreMetrics
from kaneda_core.model import Metric, TagsInput


class AnsweringDispatcher(SyncDispatcher):
    """Delivers in the caller's thread and hands each call what the backend answered.

    Each reporting call opens a slot of its own, per thread (:meth:`slots`), which
    starts as None; the delivery of the call's metric writes the backend's answer in
    the innermost open slot. A call whose metric is not delivered then (dropped after
    close, deferred by a signal handler) finds None there, never another call's answer.
    """

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(delivery)
        self._answers = threading.local()

    def slots(self) -> list[Any]:
        """This thread's open slots, innermost last: one per reporting call in progress."""
        try:
            slots: list[Any] = self._answers.slots
        except AttributeError:
            slots = self._answers.slots = []
        return slots

    def _deliver_one(self, item: Item) -> None:
        answers: list[Any] = []
        self.delivery.deliver((item,), retry=False, answers=answers)
        slots = getattr(self._answers, "slots", None)
        if answers and slots:  # stored (not failed, not filtered out by a hook)
            slots[-1] = _answer_of(answers[0])


def _answer_of(per_metric: Any) -> Any:
    """The answer for the one metric sent: the backend's own, or True where it gave none."""
    if per_metric is None:
        return True
    try:
        return per_metric[0]
    except (LookupError, TypeError):  # a send that answered no list: stored all the same
        return True


class AnsweringMetrics(CoreMetrics):
    """:class:`kaneda_core.Metrics` whose reporting calls return the backend's answer.

    The answer is the backend's own result for the metric where it gives one (see
    :meth:`kaneda_core.Backend.send`), ``True`` when it stored the metric without one,
    and ``None`` when the metric was not stored (the backend failed, a hook filtered it
    out, the call came after ``close()``) or not yet delivered (``batching=True``, or a
    call made from within a delivery in the same thread).
    """

    _sync_dispatcher = AnsweringDispatcher

    def _answering(self, call: Callable[..., None], *args: Any) -> Any:
        """``call(self, *args)``, then the answer for its metric (None if not stored)."""
        dispatcher = self._dispatcher
        if not isinstance(dispatcher, AnsweringDispatcher):  # batching: nothing delivered yet
            call(self, *args)
            return None
        slots = dispatcher.slots()
        depth = len(slots)
        slots.append(None)
        try:
            call(self, *args)
            return slots[depth]
        finally:
            del slots[depth:]

    def gauge(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record the value of a gauge; returns the backend's answer (see the class)."""
        return self._answering(CoreMetrics.gauge, name, value, tags)

    def increment(self, name: str, tags: TagsInput | None = None) -> Any:
        """Add one to a counter; returns the backend's answer (see the class)."""
        return self._answering(CoreMetrics.increment, name, tags)

    def decrement(self, name: str, tags: TagsInput | None = None) -> Any:
        """Subtract one from a counter; returns the backend's answer (see the class)."""
        return self._answering(CoreMetrics.decrement, name, tags)

    def timing(self, name: str, value: float, tags: TagsInput | None = None) -> Any:
        """Record a duration; returns the backend's answer (see the class)."""
        return self._answering(CoreMetrics.timing, name, value, tags)

    def event(self, name: str, text: str, tags: TagsInput | None = None) -> Any:
        """Record an event; returns the backend's answer (see the class)."""
        return self._answering(CoreMetrics.event, name, text, tags)

    def custom(
        self,
        name: str,
        metric: str,
        value: Any,
        tags: TagsInput | None = None,
        id_: str | int | None = None,
    ) -> Any:
        """Record a custom metric; returns the backend's answer (see the class)."""
        return self._answering(CoreMetrics.custom, name, metric, value, tags, id_)

    def forward(self, metrics: Iterable[Metric]) -> None:
        """Deliver metrics built elsewhere (see :meth:`kaneda_core.Metrics.forward`).

        Their answers go to no call: a slot of their own keeps a signal handler's
        forward from handing its answer to the call it interrupted.
        """
        self._answering(CoreMetrics.forward, metrics)
