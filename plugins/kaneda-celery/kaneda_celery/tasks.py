"""The Celery tasks that deliver queued metrics, and the verdict that ends each one.

``kaneda.deliver`` takes one batch message; ``kaneda.tasks.celery.report`` one kaneda
1.0 call. Both are acknowledged late: only once the backend has the metrics. When the
backend cannot take them now, the message goes back to its queue. A message that can
never be delivered (a poison message) is moved to the queue ``<queue>.dead`` on the same
broker, where it waits for someone to look at it, and the worker carries on.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from kaneda_core.worker import Outcome, Verdict, current_handler

#: The task every batch runs as.
TASK = "kaneda.deliver"
#: The task kaneda 1.0 sent for every metric.
LEGACY_TASK = "kaneda.tasks.celery.report"
#: Where poison messages go: the queue they came from, with this suffix.
DEAD_SUFFIX = ".dead"

#: Task options: acknowledge after the task, and give the message back if the worker dies.
TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}


def register_tasks(app: Celery) -> None:
    """Register ``kaneda.deliver`` and ``kaneda.tasks.celery.report`` on ``app``."""
    app.task(name=TASK, **TASK_OPTIONS)(deliver)
    app.task(name=LEGACY_TASK, **TASK_OPTIONS)(report)


def deliver(task: Task, *args: Any, **kwargs: Any) -> int:
    """Deliver one batch message; returns how many metrics the backend stored.

    Any arguments are taken, so that a message called with the wrong ones reaches
    Kaneda (Celery would raise ``TypeError`` and acknowledge it) and is moved aside.
    """
    handler = current_handler()
    if len(args) == 1 and not kwargs:
        return conclude(task, handler.handle(args[0]))
    if not args and list(kwargs) == ["message"]:
        return conclude(task, handler.handle(kwargs["message"]))
    reason = f"{TASK} takes one argument, the batch message; got {_arguments(args, kwargs)}"
    return conclude(task, handler.reject(reason))


def report(task: Task, *args: Any, **kwargs: Any) -> int:
    """Deliver one kaneda 1.0 call (stored at the time it arrives, as kaneda 1.0 did).

    ``(name, metric, value, tags, id_=None)``, by position or name; a call that does
    not fit is moved aside.
    """
    from kaneda.queues import worker_backend

    handler = current_handler(worker_backend)
    try:
        call = _legacy_call(*args, **kwargs)
    except TypeError:
        reason = (
            f"{LEGACY_TASK} takes (name, metric, value, tags, id_=None); "
            f"got {_arguments(args, kwargs)}"
        )
        return conclude(task, handler.reject(reason))
    # The task's id is the same each time the broker delivers it (a worker killed
    # before it acknowledged): the call's id, so that stores keying by id keep one copy.
    # Celery keeps no time for a message: it is stored at the time it arrives.
    return conclude(task, handler.handle_legacy(*call, origin=task.request.id))


def _legacy_call(
    name: Any, metric: Any, value: Any, tags: Any, id_: Any = None
) -> tuple[Any, Any, Any, Any, Any]:
    return name, metric, value, tags, id_


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    text = ", ".join([*map(repr, args), *(f"{key}={value!r}" for key, value in kwargs.items())])
    text = f"({text})"
    return text if len(text) <= 200 else text[:200] + "...)"


def conclude(task: Task, outcome: Outcome) -> int:
    """End the running task as ``outcome`` says: acknowledge, requeue, or move aside."""
    if outcome.verdict is Verdict.STORED:
        return outcome.metrics - outcome.refused
    if outcome.verdict is Verdict.RETRY:
        raise Reject(outcome.reason, requeue=True)
    move_aside(task)
    raise Reject(outcome.reason, requeue=False)


def move_aside(task: Task) -> None:
    """Publish the running task's message again, unchanged, to ``<its queue>.dead``."""
    request = task.request
    delivery = request.delivery_info or {}
    source = delivery.get("routing_key") or task.app.conf.task_default_queue
    task.app.send_task(
        task.name,
        args=request.args,
        kwargs=request.kwargs,
        queue=f"{source}{DEAD_SUFFIX}",
        task_id=request.id,
    )
