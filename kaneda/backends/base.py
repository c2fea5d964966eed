"""kaneda 1.0's ``BaseBackend``: implement ``report`` and you have a backend."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, ClassVar

from kaneda_core.backend import Backend
from kaneda_core.errors import DeliveryError
from kaneda_core.model import Metric


class BaseBackend(Backend):
    """Base class for backend reporting storage, as in kaneda 1.0.

    Subclass it and implement :meth:`report`; Kaneda delivers a batch by calling
    ``report`` once per metric, in order. ``settings_namespace`` is the prefix of the
    backend's parameters in a settings module.
    """

    settings_namespace: ClassVar[str | None] = None

    def report(self, name: str, metric: str, value: Any, tags: Any, id_: Any = None) -> Any:
        """Store one metric. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement report()")

    def send(self, batch: Sequence[Metric]) -> list[Any]:
        """Deliver ``batch`` through :meth:`report`, one metric at a time, in order.

        Returns what each ``report`` returned (``kaneda.Metrics`` hands it to the
        caller, as 1.0 did). If ``report`` raises, the metrics from that one on are
        reported as failed (and retried when the error is a network error).
        """
        answers = []
        for index, item in enumerate(batch):
            # 1.0 backends may mutate what they are given: hand them copies.
            value = dict(item.value) if isinstance(item.value, dict) else item.value
            tags = item.tags.copy() if item.tags else None
            try:
                answers.append(self.report(item.name, item.kind, value, tags, item.id))
            except Exception as error:
                raise DeliveryError(
                    f"{type(self).__name__}.report failed: {type(error).__name__}: {error}",
                    retryable=self.is_retryable(error),
                    metrics=batch[index:],
                ) from error
        return answers

    def _get_host_name(self) -> str:
        return socket.gethostname()

    def _get_payload(self, name: str, value: Any, tags: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"host": self._get_host_name(), "name": name}
        if isinstance(value, dict):
            payload.update(value)
        else:
            payload["value"] = value
        if tags:
            payload["tags"] = tags
        return payload
