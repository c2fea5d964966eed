"""Celery queue for Kaneda: ``connect("celery+redis://localhost:6379/0")`` or ``celery+amqp://``.

Deliver with ``kaneda worker celery+redis://... --to BACKEND_URL``, or with Celery's own
worker: ``celery -A kaneda_celery.worker -b redis://... worker -Q kaneda``.
"""

from .backend import CeleryBackend
from .legacy import CeleryQueue

__all__ = ["CeleryBackend", "CeleryQueue"]
