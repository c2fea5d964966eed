"""``memory``: keeps every metric in a list, for tests and for looking at what was reported."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..backend import Backend
from ..model import Metric


class MemoryBackend(Backend):
    """Stores metrics in :attr:`metrics`, a list of :class:`Metric`, in delivery order."""

    settings_namespace = "MEMORY"

    def __init__(self) -> None:
        self.metrics: list[Metric] = []
        self.batches = 0
        self._lock = threading.Lock()

    def send(self, batch: Sequence[Metric]) -> None:
        """Append the batch to :attr:`metrics`."""
        with self._lock:
            self.metrics.extend(batch)
            self.batches += 1

    def after_fork(self) -> None:
        """A lock of its own (the parent's may be held); the stored metrics stay."""
        self._lock = threading.Lock()

    def clear(self) -> None:
        """Forget everything stored so far."""
        with self._lock:
            self.metrics.clear()
            self.batches = 0

    def __repr__(self) -> str:
        return f"<MemoryBackend {len(self.metrics)} metrics>"
