"""kaneda 1.0's ``kaneda.backends.logger``: the built-in logger backend."""

from kaneda_core.backends.logger import LoggerBackend

__all__ = ["LoggerBackend"]
