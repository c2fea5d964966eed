"""kaneda 1.0's ``kaneda.backends.elasticsearch``: the ``ElasticsearchBackend`` of its plugin."""

from . import plugin_class

ElasticsearchBackend = plugin_class("ElasticsearchBackend")

__all__ = ["ElasticsearchBackend"]
