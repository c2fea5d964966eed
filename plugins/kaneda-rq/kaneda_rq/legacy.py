"""kaneda 1.0's RQ queue and job, with its wire format: one job per metric.

``RQQueue`` enqueues ``kaneda.tasks.rq.report(name, metric, value, tags, id_)`` on the
queue ``kaneda``; :func:`report` is that job, run by ``rq worker kaneda`` or by
``kaneda worker rq://...?queue_name=kaneda``. Either side works with kaneda 1.0's other
side. For one job per batch, with the metrics' own time and host, use ``rq://`` URLs
(:class:`~kaneda_rq.RQBackend`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue

from kaneda.exceptions import ImproperlyConfigured
from kaneda.queues import worker_backend
from kaneda.queues.base import BaseQueue
from kaneda_core import Metric
from kaneda_core.worker import current_handler

from .jobs import conclude

log = logging.getLogger("kaneda.queues.rq")

#: The job kaneda 1.0 enqueued for every metric.
LEGACY_JOB = "kaneda.tasks.rq.report"


class RQQueue(BaseQueue):
    """RQ queue, as in kaneda 1.0.

    :param queue: queue instance of RQ class.
    :param redis_url: Redis connection url where RQ will attend the async reporting requests.
    :param queue_name: name of the queue being used by the RQ worker process.
    """

    settings_namespace = "RQ"

    def __init__(
        self, queue: Queue | None = None, redis_url: str | None = None, queue_name: str = "kaneda"
    ) -> None:
        if queue is not None:
            if not isinstance(queue, Queue):
                raise ImproperlyConfigured('"queue" parameter is not an instance of RQ queue.')
            self.queue = queue
        elif redis_url:
            self.queue = Queue(queue_name, connection=Redis.from_url(redis_url))
        else:
            self.queue = Queue(queue_name, connection=Redis())

    def report(self, name: str, metric: str, value: Any, tags: Any, id_: Any = None) -> Any:
        """Enqueue one metric, as kaneda 1.0 did; returns the job, or None (logged) on error."""
        try:
            return self.queue.enqueue(LEGACY_JOB, name, metric, value, tags, id_)
        except Exception as error:  # kaneda 1.0 logged and carried on
            log.exception(error)
            return None

    def send(self, batch: Sequence[Metric]) -> list[Any]:
        """Enqueue each metric of ``batch`` as one kaneda 1.0 job; returns the jobs."""
        from kaneda_core import DeliveryError

        jobs = []
        for index, metric in enumerate(batch):
            try:
                job = self.queue.enqueue(
                    LEGACY_JOB,
                    metric.name,
                    metric.kind,
                    metric.value,
                    metric.tags or None,
                    metric.id,
                )
            except Exception as error:
                raise DeliveryError(
                    f"RQ could not enqueue: {type(error).__name__}: {error}",
                    retryable=self.is_retryable(error),
                    metrics=batch[index:],
                ) from error
            jobs.append(job)
        return jobs  # kaneda 1.0's calls returned the job

    def is_retryable(self, error: BaseException) -> bool:
        """Retry when Redis is down or slow (see :func:`is_retryable_redis_error`)."""
        from .backend import is_retryable_redis_error

        return is_retryable_redis_error(error)

    def redact(self, text: str) -> str:
        """``text`` with the Redis password masked."""
        from kaneda_core.redact import redact_text

        password = self.queue.connection.connection_pool.connection_kwargs.get("password")
        return redact_text(text, password)

    def after_fork(self) -> None:
        """Give a forked child a connection pool of its own, set up as the parent's."""
        queue = self.queue
        pool = queue.connection.connection_pool
        fresh = type(pool)(connection_class=pool.connection_class, **pool.connection_kwargs)
        self.queue = Queue(
            queue.name,
            connection=Redis(connection_pool=fresh),
            serializer=queue.serializer,
            job_class=queue.job_class,
        )


def report(name: Any, metric: Any, value: Any, tags: Any, id_: Any = None) -> int:
    """The job ``kaneda.tasks.rq.report``: store one kaneda 1.0 metric.

    Stored at the time the job was created, with the id ``JOB_ID-0`` when the call gave
    none: a job run twice (its worker was killed) is one point, one document.

    Under ``kaneda worker`` it goes to that worker's backend; under ``rq worker``, to
    ``KANEDA_URL``'s backend or the settings module's (``BACKEND = ...``).
    """
    from rq import get_current_job

    handler = current_handler(worker_backend)
    job = get_current_job()
    if job is None:  # called outside a worker
        return conclude(handler.handle_legacy(name, metric, value, tags, id_))
    return conclude(
        handler.handle_legacy(name, metric, value, tags, id_, origin=job.id, ns=job_ns(job))
    )


def job_ns(job: Any) -> int | None:
    """The time of ``job``'s creation by its producer, in nanoseconds, the same each time
    the job runs (RQ sets ``enqueued_at`` again when it requeues a job): the microseconds
    RQ keeps, and three digits of the job's id below them, so that two jobs created in
    one microsecond are two points in InfluxDB. None if the job has no such time."""
    import zlib

    from kaneda_core.model import epoch_us

    created = getattr(job, "created_at", None)
    if created is None:
        return None
    if created.tzinfo is None:  # RQ's times are UTC
        from datetime import timezone

        created = created.replace(tzinfo=timezone.utc)
    return epoch_us(created) * 1000 + zlib.crc32(str(job.id).encode()) % 1000
