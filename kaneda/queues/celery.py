"""kaneda 1.0's ``kaneda.queues.celery``: the ``CeleryQueue`` of its plugin."""

from . import plugin_class

CeleryQueue = plugin_class("CeleryQueue")

__all__ = ["CeleryQueue"]
