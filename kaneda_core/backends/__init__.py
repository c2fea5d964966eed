"""The backends built into kaneda-core, registered like any plugin's."""

from .logger import LoggerBackend
from .memory import MemoryBackend

__all__ = ["LoggerBackend", "MemoryBackend"]
