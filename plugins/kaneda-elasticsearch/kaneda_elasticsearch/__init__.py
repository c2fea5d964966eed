"""Elasticsearch backend for Kaneda: ``connect("elasticsearch+https://host:9200/?index_name=k&app_name=web")``."""

from .backend import ElasticsearchBackend

__all__ = ["ElasticsearchBackend"]
