"""kaneda 1.0's Celery task ``kaneda.tasks.celery.report``.

Run it with ``celery -A kaneda.tasks.celery worker``. The app reads the
``celeryconfig`` module when there is one, as in kaneda 1.0; the task stores into the
backend of the settings module.
"""

from kaneda.queues import plugin_module

_legacy = plugin_module("kaneda_celery.legacy", "celery", "kaneda.tasks.celery")

app = _legacy.legacy_app()
report = app.tasks[_legacy.LEGACY_TASK]

__all__ = ["app", "report"]
