"""kaneda 1.0's ``kaneda.backends.logger``: the built-in logger backend, 1.0's lines."""

from . import LoggerBackend

__all__ = ["LoggerBackend"]
