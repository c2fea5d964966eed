"""kaneda 1.0's ``kaneda.backends.mongodb``: the ``MongoBackend`` of its plugin."""

from . import plugin_class

MongoBackend = plugin_class("MongoBackend")

__all__ = ["MongoBackend"]
