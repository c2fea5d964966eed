"""kaneda 1.0's Celery queue and task, with its wire format: one task per metric.

``CeleryQueue`` sends ``kaneda.tasks.celery.report(name, metric, value, tags, id_)``;
``celery -A kaneda.tasks.celery worker`` (kaneda 1.0's command) or ``kaneda worker
celery+redis://...?queue_name=celery`` runs it. Either side works with kaneda 1.0's
other side. For one task per batch, with the metrics' own time and host, use
``celery+redis://`` or ``celery+amqp://`` URLs (:class:`~kaneda_celery.CeleryBackend`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from kaneda.exceptions import ImproperlyConfigured
from kaneda.queues.base import BaseQueue
from kaneda_core import DeliveryError, Metric

from .tasks import LEGACY_TASK, TASK_OPTIONS, register_tasks

log = logging.getLogger("kaneda.queues.celery")

__all__ = ["LEGACY_TASK", "TASK_OPTIONS", "CeleryQueue", "legacy_app"]


class CeleryQueue(BaseQueue):
    """Celery queue, as in kaneda 1.0.

    :param app: app instance of Celery class.
    :param broker: broker connection url where Celery will attend the async reporting requests.
    :param queue_name: name of the queue being used by the Celery worker process.
    """

    settings_namespace = "CELERY"

    def __init__(
        self, app: Celery | None = None, broker: str | None = None, queue_name: str = ""
    ) -> None:
        if app is not None:
            if not isinstance(app, Celery):
                raise ImproperlyConfigured('"queue" parameter is not an instance of Celery queue.')
            self.app = app
        else:
            self.app = Celery(broker=broker)
        self.queue_name = queue_name

    def report(self, name: str, metric: str, value: Any, tags: Any, id_: Any = None) -> Any:
        """Send one metric, as kaneda 1.0 did; returns the AsyncResult, or None (logged)."""
        try:
            return self.app.send_task(
                LEGACY_TASK, args=(name, metric, value, tags, id_), queue=self.queue_name
            )
        except Exception as error:  # kaneda 1.0 logged and carried on
            log.exception(error)
            return None

    def send(self, batch: Sequence[Metric]) -> list[Any]:
        """Send each metric of ``batch`` as one kaneda 1.0 task; returns the task results."""
        results = []
        for index, metric in enumerate(batch):
            call = (metric.name, metric.kind, metric.value, metric.tags or None, metric.id)
            try:
                result = self.app.send_task(LEGACY_TASK, args=call, queue=self.queue_name)
            except Exception as error:
                raise DeliveryError(
                    f"Celery could not send the task: {type(error).__name__}: {error}",
                    retryable=True,
                    metrics=batch[index:],
                ) from error
            results.append(result)
        return results  # kaneda 1.0's calls returned the task's AsyncResult

    def after_fork(self) -> None:
        """Drop the parent's broker connections, as Celery does in its own pool's children."""
        after_fork = getattr(self.app, "_after_fork", None)
        if after_fork is not None:
            after_fork()


def legacy_app() -> Celery:
    """kaneda 1.0's worker app: ``Celery()`` configured from ``celeryconfig`` if there is one."""
    app = Celery()
    app.config_from_object("celeryconfig", silent=True)
    register_tasks(app)
    return app
