"""An example third-party Kaneda plugin: a CSV backend and hook implementations."""

from .backend import CsvBackend

__all__ = ["CsvBackend"]
