"""kaneda 1.0's ``kaneda.queues.zmq``: the ``ZMQQueue`` of its plugin."""

from . import plugin_class

ZMQQueue = plugin_class("ZMQQueue")

__all__ = ["ZMQQueue"]
