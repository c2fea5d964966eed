"""kaneda 1.0's ``kaneda.queues.rq``: the ``RQQueue`` of its plugin."""

from . import plugin_class

RQQueue = plugin_class("RQQueue")

__all__ = ["RQQueue"]
