"""kaneda 1.0's workers: the Celery task, the RQ job and the ZeroMQ worker command.

``celery -A kaneda.tasks.celery worker`` runs the task ``kaneda.tasks.celery.report``,
``rq worker kaneda`` runs the job ``kaneda.tasks.rq.report``, and ``zmqworker
--connection_url tcp://...`` (or :func:`zmq_task`) the ZeroMQ worker; each stores into
the backend of the settings module (``BACKEND = ...``), as in kaneda 1.0. They come
from the plugins kaneda-celery, kaneda-rq and kaneda-zmq.
"""

from __future__ import annotations

from typing import Any

__all__ = ["zmq_task"]


def __getattr__(attribute: str) -> Any:
    if attribute == "zmq_task":
        from .zmq import zmq_task

        return zmq_task
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
