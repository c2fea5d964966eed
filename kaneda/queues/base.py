"""kaneda 1.0's ``BaseQueue``: implement ``report`` and you have a queue."""

from __future__ import annotations

from ..backends.base import BaseBackend


class BaseQueue(BaseBackend):
    """Base class for queues, as in kaneda 1.0.

    A queue hands each metric to a broker for a worker to store. Subclass it and
    implement ``report(name, metric, value, tags, id_)``; pass an instance as
    ``Metrics(queue=...)``. ``settings_namespace`` is the prefix of the queue's
    parameters in a settings module (``RQ`` reads ``RQ_REDIS_URL`` ...).
    """
