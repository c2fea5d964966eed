"""A backend that remembers the arguments the settings gave it."""

from __future__ import annotations

from collections.abc import Sequence

from kaneda_core import Backend, Metric


class RecordingBackend(Backend):
    """Stores metrics in a list; ``host``, ``port`` and ``password`` come from settings."""

    settings_namespace = "RECORDING"

    def __init__(self, host: str, port: int = 9999, password: str | None = None) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.metrics: list[Metric] = []

    def send(self, batch: Sequence[Metric]) -> None:
        self.metrics.extend(batch)
