"""Celery's own worker for Kaneda's tasks.

``kaneda worker celery+redis://...`` runs it in its process (solo pool: one task at a
time, each delivered and acknowledged before the next). For ``celery worker``, this
module is the app: ``celery -A kaneda_celery.worker -b redis://localhost:6379/0 worker
-Q kaneda --pool solo`` with ``KANEDA_URL`` naming the backend.
"""

from __future__ import annotations

from .app import make_app

#: The app for ``celery -A kaneda_celery.worker worker`` (broker from ``-b`` or
#: ``CELERY_BROKER_URL``).
app = make_app()
