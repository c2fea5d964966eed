"""The RQ jobs: ``deliver`` (a batch) and the verdict that ends every job.

A job returns once the backend has the batch's metrics. Otherwise it raises: when the
backend could not take them now, RQ runs the job again (it stays in the queue, however
long the outage); when the message can never be delivered (a poison message), the job
goes to RQ's failed job registry without another try, where ``rq info`` shows it and
``rq requeue`` can bring it back. Neither blocks the queue.
"""

from __future__ import annotations

from kaneda_core.errors import KanedaError
from kaneda_core.worker import Outcome, Verdict, current_handler


class BatchNotStored(KanedaError):
    """The backend could not take the job's metrics now; RQ runs the job again."""


class PoisonMessage(KanedaError):
    """The job's message can never be delivered; RQ moves it to its failed job registry."""


def deliver(message: str) -> int:
    """Deliver one batch message; returns how many metrics the backend stored."""
    return conclude(current_handler().handle(message))


def conclude(outcome: Outcome) -> int:
    """End the running job as ``outcome`` says: return, run again, or fail for good."""
    from rq import get_current_job

    if outcome.verdict is Verdict.STORED:
        return outcome.metrics - outcome.refused
    job = get_current_job()
    if outcome.verdict is Verdict.RETRY:
        if job is not None:  # RQ takes one off when it requeues: the job keeps its count
            job.retries_left = (job.retries_left or 0) + 1
        raise BatchNotStored(outcome.reason)
    if job is not None:
        job.retries_left = 0
    raise PoisonMessage(outcome.reason)
