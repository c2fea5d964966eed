"""``kaneda worker rq://...``: RQ's own worker, running jobs in its process (no fork per job).

Jobs then deliver through the handler ``kaneda worker`` installed: one ``Metrics``,
one connection to the store, and the disk buffer if asked for, for the life of the
worker. RQ's worker stops on SIGTERM or SIGINT after the job at hand.

When Redis goes away, RQ's worker quits; this one waits for Redis, gives back the job it
held (RQ would otherwise find it only a minute or two later, at a maintenance run) and
starts again.

Redis may also take a job off the queue and then lose the connection before its answer
arrives: the job sits in the queue's intermediate list, taken by no one, and RQ's
maintenance would later mark it *failed*. On starting and after every connection error,
this worker gives back jobs that stay there, unstarted, for ``ORPHAN_GRACE`` seconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from kaneda_core.incidents import REPEAT_AFTER
from kaneda_core.redact import redact_text, redact_url
from kaneda_core.worker import (
    STOP_GRACE,
    MessageHandler,
    current_handler,
    exit_unless_stopped_within,
)

from .backend import redis_address
from .jobs import PoisonMessage
from .trust import JobSerializer, KanedaJob

log = logging.getLogger("kaneda.rq")

#: Seconds between RQ's maintenance runs, which give jobs of killed workers back.
MAINTENANCE_INTERVAL = 60

#: Seconds a job may sit taken off the queue but not started before it counts as lost.
#: A live worker starts a job within a few Redis round trips of taking it.
ORPHAN_GRACE = 2.0

#: Seconds the thread listening for RQ's commands (``rq`` suspend, stop-job) waits for
#: one before it looks whether the worker is stopping. RQ's own is 60, and redis-py
#: (8.2 on) waits for that thread when the worker stops.
PUBSUB_WAKE = 1.0


class JobKeepingWorker(SimpleWorker):
    """RQ's ``SimpleWorker``, remembering the jobs it took until RQ is done with them.

    RQ takes a job off the queue and then talks to Redis again (a heartbeat) before it
    records the job as started; when Redis goes away in between, the job is in neither
    place for RQ's worker to see. This one knows it took it.

    It runs Kaneda's jobs only, and loads no object from Redis (see :mod:`kaneda_rq.trust`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JobSerializer)
        kwargs.setdefault("job_class", KanedaJob)
        super().__init__(*args, **kwargs)
        #: Ids of the jobs taken off the queue and not yet finished, failed or requeued.
        self.held: list[str] = []
        #: Whether to look for jobs lost between queue and worker before the next take.
        self.sweep_due = True
        held = self.held
        worker = self

        class RecordingQueue(self.queue_class):  # type: ignore[misc, name-defined]
            @classmethod
            def dequeue_any(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    if worker.sweep_due:
                        give_back_orphans(worker.queues[0], exclude=held)
                        worker.sweep_due = False
                    result = super().dequeue_any(*args, **kwargs)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    # Redis may have moved a job for us and lost the answer; RQ retries.
                    worker.sweep_due = True
                    raise
                if result is not None:
                    held.append(result[0].id)
                return result

        self.queue_class = RecordingQueue

    def dequeue_job_and_maintain_ttl(self, *args: Any, **kwargs: Any) -> Any:
        result = super().dequeue_job_and_maintain_ttl(*args, **kwargs)
        # RQ retries on a connection error after it took a job (asking Redis its version),
        # then takes another: the first would wait for RQ's maintenance. Give it back now.
        taken = result[0].id if result is not None else None
        for job_id in [job_id for job_id in self.held if job_id != taken]:
            give_back(self.queues[0], job_id)
            self.held.remove(job_id)
        return result

    def execute_job(self, job: Job, queue: Queue) -> None:
        super().execute_job(job, queue)
        if job.id in self.held:  # finished, failed or requeued by RQ itself
            self.held.remove(job.id)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """RQ's logging of a failed job, but for poison: the handler logged it once."""
        if isinstance(exc_info[1], PoisonMessage):
            return
        super().handle_exception(job, *exc_info)

    def subscribe(self) -> None:
        """Listen for RQ's commands to this worker, as RQ does, waking every PUBSUB_WAKE s.

        RQ's listening thread waits up to 60 s for a message, and redis-py's
        ``PubSubWorkerThread.stop()`` (8.2 on) waits for it: a worker asked to stop
        (SIGTERM) took up to a minute to exit, longer than ``docker stop`` or Kubernetes
        wait before they kill it.
        """
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_WAKE, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def request_stop(self, signum: int, frame: Any) -> None:
        """RQ's warm shutdown (SIGTERM, SIGINT); the job at hand stops waiting for a store
        that is down, and is put back at once (see ``MessageHandler.stop_waiting``)."""
        handler = current_handler()
        if handler is not None:
            handler.stop_waiting()
        exit_unless_stopped_within(STOP_GRACE, "Redis")  # RQ's stop talks to Redis
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    @property
    def stop_requested(self) -> bool:
        """Whether the worker stopped because it was asked to (SIGTERM, SIGINT)."""
        # RQ notes the request (its date) even when it stops at once, being idle.
        return bool(getattr(self, "_stop_requested", False)) or (
            getattr(self, "_shutdown_requested_date", None) is not None
        )


def run_simple_worker(redis_url: str, queue_name: str, handler: MessageHandler) -> None:
    """Run RQ's worker on ``queue_name`` until asked to stop; outlive Redis outages."""
    stop = threading.Event()
    delay = 0.5
    held: list[str] = []
    outage = _Outage(redis_url)
    while True:
        # No socket timeout: the worker blocks in Redis while it waits for jobs.
        connection = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
        worker: JobKeepingWorker | None = None
        try:
            connection.ping()
            outage.ended()
            queue = Queue(
                queue_name, connection=connection, serializer=JobSerializer, job_class=KanedaJob
            )
            for job_id in held:
                give_back(queue, job_id)
            held = []
            worker = JobKeepingWorker(
                [queue], connection=connection, maintenance_interval=MAINTENANCE_INTERVAL
            )
            worker.work(with_scheduler=False, logging_level="WARNING")  # RQ's signal handlers
            problem = "RQ's worker quit"
            delay = 0.5
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            if isinstance(error, redis.exceptions.AuthenticationError):
                raise
            problem = ""
            outage.failed(error)
        except redis.exceptions.OutOfMemoryError as error:
            # RQ's worker writes as it registers and as it takes a job: a full Redis
            # refuses it until there is room (producers keep their batches meanwhile).
            problem = (
                f"Redis is over its maxmemory ({error}): RQ's worker cannot register or "
                "take jobs. Raise maxmemory or free memory on it"
            )
        finally:
            connection.close()
        if worker is not None:
            if worker.stop_requested:
                return
            held += worker.held
        _stop_on_signals(stop)  # RQ's handlers, left behind, belong to the worker that quit
        if problem:
            log.warning(
                "Kaneda RQ worker: %s at %s; starting again in %.1fs",
                problem,
                redact_url(redis_url),
                delay,
            )
        if stop.wait(delay):
            return
        delay = min(10.0, delay * 2)


class _Outage:
    """Logs that Redis went away once, every REPEAT_AFTER seconds while it stays away,
    and once when it answers again (not once per attempt to reconnect)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.since: float | None = None
        self.logged = 0.0

    def failed(self, error: BaseException) -> None:
        now = time.monotonic()
        where = redis_address(self.redis_url)
        reason = redact_text(str(error), urlsplit(self.redis_url).password).rstrip(".")
        if self.since is None:
            self.since = self.logged = now
            log.warning(
                "Kaneda RQ worker: Redis is not reachable at %s (%s). Check that redis-server "
                "runs there and that this machine can reach it; trying again with backoff, "
                "logged once until it answers.",
                where,
                reason,
            )
        elif now - self.logged >= REPEAT_AFTER:
            self.logged = now
            log.warning(
                "Kaneda RQ worker: Redis at %s still not reachable after %.0f s (%s).",
                where,
                now - self.since,
                reason,
            )

    def ended(self) -> None:
        if self.since is not None:
            log.warning(
                "Kaneda RQ worker: Redis answers again at %s, after %.1f s; taking jobs.",
                redis_address(self.redis_url),
                time.monotonic() - self.since,
            )
            self.since = None


def _stop_on_signals(stop: threading.Event) -> None:
    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)


def give_back_orphans(queue: Queue, *, exclude: list[str], grace: float = ORPHAN_GRACE) -> None:
    """Give back the jobs taken off ``queue`` that no worker started within ``grace``."""
    seen = _unstarted(queue, exclude)
    if not seen:
        return
    time.sleep(grace)
    for job_id in seen & _unstarted(queue, exclude):
        give_back(queue, job_id)


def _unstarted(queue: Queue, exclude: list[str]) -> set[str]:
    taken = set(queue.intermediate_queue.get_job_ids()) - set(exclude)
    return {job_id for job_id in taken if job_id not in queue.started_job_registry}


def give_back(queue: Queue, job_id: str) -> None:
    """Put the job a lost worker held back in its queue, unless RQ finished with it."""
    job = queue.fetch_job(job_id)
    if job is None or job.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED):
        return
    queue.intermediate_queue.remove(job_id)
    queue.started_job_registry.remove_executions(job)
    queue.enqueue_job(job, at_front=True)
    log.warning("Kaneda RQ worker: gave back job %s, held when Redis went away", job_id)
