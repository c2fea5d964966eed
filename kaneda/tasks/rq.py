"""kaneda 1.0's RQ job ``kaneda.tasks.rq.report``: run ``rq worker kaneda``.

The job stores into the backend of the settings module, as in kaneda 1.0.
"""

from kaneda.queues import plugin_module

report = plugin_module("kaneda_rq.legacy", "rq", "kaneda.tasks.rq").report

__all__ = ["report"]
