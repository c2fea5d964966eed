"""Queue-like classes built from KANEDA_QUEUE, kaneda 1.0's way (settings_namespace)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kaneda_core import Backend, Metric


class ForwardingQueue(Backend):
    """A queue as Kaneda 2 sees one: a backend that forwards each batch (here, to a list)."""

    settings_namespace = "TESTQUEUE"

    def __init__(self, redis_url: str | None = None, queue_name: str = "kaneda") -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.forwarded: list[Metric] = []

    def send(self, batch: Sequence[Metric]) -> None:
        self.forwarded.extend(batch)


class ReportingQueue:
    """A kaneda 1.0 queue: ``report(name, metric, value, tags, id_)`` and nothing else."""

    settings_namespace = "OLDQUEUE"

    def __init__(self, connection_url: str, timeout: int = 300) -> None:
        self.connection_url = connection_url
        self.timeout = timeout
        self.reports: list[tuple[Any, ...]] = []

    def report(self, name: str, metric: str, value: Any, tags: Any, id_: Any) -> None:
        self.reports.append((name, metric, value, tags, id_))
