"""MongoDB backend for Kaneda: ``connect("mongodb://host:27017/db?collection_name=metrics")``."""

from .backend import MongoBackend

__all__ = ["MongoBackend"]
