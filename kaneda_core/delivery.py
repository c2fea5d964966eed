"""Turning queued calls into metrics, handing them to the backend, and what happens on failure.

Shared by both dispatchers: filtering hooks, retries with backoff, counting, logging
and the failure hook live here once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import DeliveryError, KanedaError
from .model import Metric, host_name

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("kaneda")

#: What a reporting call queues: (name, kind, value, tags, id, time in ns). A metric
#: forwarded from another process (``Metrics.forward``) adds its host as a 7th field.
Item = tuple[str, str, Any, Any, Any, int]


class RetryPolicy(NamedTuple):
    """How often and how patiently a batch that failed for a transient reason is retried.

    Delays grow as ``initial_delay * multiplier ** n`` up to ``max_delay``, each with up
    to ``jitter`` of itself added at random so that many processes do not retry in step.
    """

    attempts: int = 8
    initial_delay: float = 0.2
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, retry: int) -> float:
        """Seconds to wait before the ``retry``-th retry (1 for the first)."""
        import random

        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1))
        return float(base * (1 + self.jitter * random.random()))


class Stats:
    """Counts of what happened to the metrics a ``Metrics`` accepted.

    ``sent``: stored by the backend. ``failed``: given up on after retries, or refused.
    ``dropped``: discarded because the buffer was full. ``filtered``: dropped by a
    ``kaneda_filter_metric`` hook. ``retried``: metric re-sends. ``queued``: waiting now.
    """

    __slots__ = ("dropped", "failed", "filtered", "queued", "retried", "sent")

    def __init__(
        self,
        sent: int = 0,
        failed: int = 0,
        dropped: int = 0,
        filtered: int = 0,
        retried: int = 0,
        queued: int = 0,
    ) -> None:
        self.sent = sent
        self.failed = failed
        self.dropped = dropped
        self.filtered = filtered
        self.retried = retried
        self.queued = queued

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in _STAT_NAMES}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stats) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        counters = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"Stats({counters})"


_STAT_NAMES = ("sent", "failed", "dropped", "filtered", "retried", "queued")


class Delivery:
    """Delivers lists of queued items to one backend, with hooks, retries and counting."""

    def __init__(self, backend: Backend, retry: RetryPolicy | None = None) -> None:
        from .plugins import get_plugin_manager, implements

        self.backend = backend
        self.retry = retry or RetryPolicy()
        self.stats = Stats()
        self._lock = threading.Lock()
        hook = get_plugin_manager().hook
        self._filter = hook.kaneda_filter_metric if implements("kaneda_filter_metric") else None
        self._failed_hook = hook.kaneda_batch_failed

    def to_metrics(self, items: Sequence[Item]) -> list[Metric]:
        """The metric records for queued items, host and timestamp filled in."""
        host = host_name()
        # tuple.__new__ skips NamedTuple's Python-level __new__: the worker builds
        # every metric, so this halves its cost per metric.
        new = tuple.__new__
        cls = Metric
        stamp = datetime.fromtimestamp
        utc = timezone.utc
        try:
            return [
                new(cls, (n, k, v, t, stamp(ns // 1000 / 1e6, utc), host, i, ns))
                for n, k, v, t, i, ns in items
            ]
        except ValueError:
            pass
        # Forwarded metrics carry a 7th field: the host they were reported on.
        try:
            return [  # type: ignore[misc]
                new(cls, (n, k, v, t, stamp(ns // 1000 / 1e6, utc), h, i, ns))
                for n, k, v, t, i, ns, h in items
            ]
        except ValueError:  # both kinds in one batch
            metrics = []
            for item in items:
                fields: tuple[Any, ...] = item
                n, k, v, t, i, ns = fields[:6]
                origin = fields[6] if len(fields) > 6 else host
                metrics.append(new(cls, (n, k, v, t, stamp(ns // 1000 / 1e6, utc), origin, i, ns)))
            return metrics

    def deliver(
        self,
        items: Sequence[Item],
        *,
        retry: bool,
        stop: threading.Event | None = None,
        keep_transient: bool = False,
    ) -> bool:
        """Send ``items`` as one batch; retry transient failures when ``retry`` is true.

        ``stop``, once set, ends the waiting between retries early. Metrics that still
        fail for a transient reason after the retries (or at ``stop``) fail for good,
        unless ``keep_transient`` is set: then this returns False and the caller keeps
        the items to send again later (the disk buffer does). Otherwise it returns True:
        the batch is settled. Never raises: failures are logged, counted and passed to
        the ``kaneda_batch_failed`` hook.
        """
        metrics = self.to_metrics(items)
        if self._filter is not None:
            metrics = self._apply_filter(metrics)
        attempt = 1
        pending: Sequence[Metric] = metrics
        while pending:
            try:
                self.backend.send(pending)
            except Exception as error:  # noqa: BLE001 - a backend failure must not escape
                failed, retryable = self._classify(error, pending)
                rejected = getattr(error, "rejected", ())
                if rejected:
                    self.fail(rejected, error)
                self.count(sent=len(pending) - len(failed) - len(rejected))
                stopping = stop is not None and stop.is_set()
                if retry and retryable and attempt < self.retry.attempts and not stopping:
                    delay = self.retry.delay(attempt)
                    log.warning(
                        "Kaneda: %d metrics not delivered to %s (%s); retry %d in %.2fs",
                        len(failed),
                        type(self.backend).__name__,
                        self.describe(error),
                        attempt,
                        delay,
                    )
                    self.count(retried=len(failed))
                    attempt += 1
                    pending = failed
                    if stop is None or not stop.wait(delay):
                        continue
                if retryable and keep_transient:
                    log.warning(
                        "Kaneda: %d metrics kept for later: %s", len(failed), self.describe(error)
                    )
                    return False
                self.fail(failed, error)
                return True
            else:
                self.count(sent=len(pending))
                return True
        return True

    def _apply_filter(self, metrics: list[Metric]) -> list[Metric]:
        assert self._filter is not None
        kept = []
        for metric in metrics:
            try:
                verdicts = self._filter(metric=metric)
            except Exception as error:  # noqa: BLE001 - a broken hook must not lose metrics
                log.error("Kaneda: kaneda_filter_metric hook failed, keeping the metric: %s", error)
                verdicts = []
            if False in verdicts:
                continue
            kept.append(metric)
        self.count(filtered=len(metrics) - len(kept))
        return kept

    def _classify(
        self, error: Exception, pending: Sequence[Metric]
    ) -> tuple[Sequence[Metric], bool]:
        if isinstance(error, DeliveryError):
            failed = error.metrics if error.metrics is not None else pending
            return failed, error.retryable
        return pending, self.backend.is_retryable(error)

    def fail(self, metrics: Sequence[Metric], error: BaseException) -> None:
        """Count ``metrics`` as failed for good, log it, and tell the failure hook."""
        if metrics:
            self.count(failed=len(metrics))
            self.report_loss(metrics, error, "not delivered")

    def report_loss(self, metrics: Sequence[Metric], error: BaseException, what: str) -> None:
        """Log that ``metrics`` were lost (``what`` happened) and tell the failure hook."""
        log.error(
            "Kaneda: %d metrics %s to %s: %s",
            len(metrics),
            what,
            type(self.backend).__name__,
            self.describe(error),
        )
        try:
            self._failed_hook(metrics=list(metrics), error=error, backend=self.backend)
        except Exception as hook_error:  # noqa: BLE001 - a broken hook must not stop delivery
            log.error("Kaneda: kaneda_batch_failed hook failed: %s", hook_error)

    def describe(self, error: BaseException) -> str:
        """A one-line account of ``error``, with the backend's secrets masked."""
        text = f"{type(error).__name__}: {error}"
        return self.backend.redact(text)

    def count(self, **increments: int) -> None:
        """Add to the counters, safely from any thread."""
        with self._lock:
            for name, amount in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + amount)


class BufferFull(KanedaError):
    """Metrics were dropped because the buffer was full (passed to the failure hook)."""
