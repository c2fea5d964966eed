"""InfluxDB 1.x backend for Kaneda: ``connect("influxdb://user:pw@host:8086/db")``."""

from .backend import InfluxBackend

__all__ = ["InfluxBackend"]
