"""RethinkDB backend for Kaneda: ``connect("rethinkdb://host:28015/db?table_name=metrics")``."""

from .backend import RethinkBackend

__all__ = ["RethinkBackend"]
