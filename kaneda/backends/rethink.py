"""kaneda 1.0's ``kaneda.backends.rethink``: the ``RethinkBackend`` of its plugin."""

from . import plugin_class

RethinkBackend = plugin_class("RethinkBackend")

__all__ = ["RethinkBackend"]
