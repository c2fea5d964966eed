"""The Celery app of a Kaneda queue: its broker, queue, tasks and settings."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_shutting_down

from kaneda_core.errors import KanedaError
from kaneda_core.worker import STOP_GRACE, current_handler, exit_unless_stopped_within

from .tasks import register_tasks


def make_app(
    broker: str | None = None,
    queue_name: str = "kaneda",
    *,
    timeout: float = 5.0,
    visibility_timeout: float = 60.0,
    transport_options: dict[str, Any] | None = None,
) -> Celery:
    """A Celery app on ``broker`` (``redis://...``, ``amqp://...``) with Kaneda's tasks.

    Messages are persistent and, on RabbitMQ, confirmed by the broker before a send
    returns. On Redis, a message whose worker died comes back after
    ``visibility_timeout`` seconds.
    """
    app = Celery("kaneda", broker=broker, set_as_current=False)
    options = {
        # Redis: a message whose worker died comes back after visibility_timeout; look
        # for such messages every 10 s (kombu's default looks every 100 s).
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        # RabbitMQ: a send returns once the broker has the message.
        "confirm_publish": True,
        # A send fails at once when the broker is down: Kaneda's delivery retries it.
        "max_retries": 0,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        **(transport_options or {}),
    }
    app.conf.update(
        task_default_queue=queue_name,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_connection_timeout=timeout,
        broker_connection_retry_on_startup=True,
        broker_transport_options=options,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    register_tasks(app)
    app.steps["worker"].add(WakeEverySecond)
    # Celery's warm shutdown: the task at hand stops waiting for a store that is down.
    worker_shutting_down.connect(_stop_waiting, weak=False, dispatch_uid="kaneda-stop-waiting")
    return app


def _stop_waiting(**_signal: Any) -> None:
    """The worker is shutting down: a message whose delivery has not settled goes back."""
    handler = current_handler()
    if handler is not None:
        handler.stop_waiting()
    # Celery's warm shutdown cancels its consumers at the broker, which may not answer.
    exit_unless_stopped_within(STOP_GRACE, "the broker")


class WakeEverySecond(bootsteps.StartStopStep):  # type: ignore[misc]
    """Wakes the worker's event loop every second, so that SIGTERM stops it within one.

    Without a timer due, Celery's loop sleeps up to 10 s on RabbitMQ before it sees
    that it was asked to stop.
    """

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        if getattr(worker, "hub", None) is not None:
            worker.hub.call_repeatedly(1.0, _nothing)


def _nothing() -> None:
    """A timer that only wakes the loop."""


def run_worker(app: Celery, queue_name: str) -> None:
    """Consume ``queue_name`` with Celery's worker until SIGTERM or SIGINT.

    Each worker has a node name of its own (``kaneda-<pid>@host``): with Celery's default,
    ``celery@host``, a second worker on one host found the first's remote-control queue
    on RabbitMQ locked (RESOURCE_LOCKED) and stopped at once. A worker that stops on an
    error raises, so that ``kaneda worker`` exits non-zero and a supervisor restarts it.
    """
    code = app.worker_main(
        [
            "worker",
            "--pool=solo",
            f"--queues={queue_name}",
            f"--hostname=kaneda-{os.getpid()}@%h",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    if code:
        raise KanedaError(
            f"Celery's worker stopped on an error (exit status {code}); its log above says why"
        )
