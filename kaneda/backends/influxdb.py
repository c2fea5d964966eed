"""kaneda 1.0's ``kaneda.backends.influxdb``: the ``InfluxBackend`` of its plugin."""

from . import plugin_class

InfluxBackend = plugin_class("InfluxBackend")

__all__ = ["InfluxBackend"]
