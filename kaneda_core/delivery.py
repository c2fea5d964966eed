"""Turning queued calls into metrics, handing them to the backend, and what happens on failure.

Shared by both dispatchers: filtering hooks, retries with backoff, counting, logging
and the failure hook live here once.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import plugins
from .backend import sends_records
from .errors import DeliveryError, KanedaError
from .fork_gate import gate
from .forking import track_delivery
from .incidents import IncidentLog
from .model import Metric
from .sharing import use_of

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger("kaneda")

#: What a reporting call queues: a plain tuple of a :class:`Metric`'s fields, (name,
#: kind, value, tags, None, host, id, stamped time in ns), or a Metric. The worker wraps
#: a batch of them as Metric records in one C-level pass (see Delivery.to_metrics).
Item = tuple[str, str, Any, Any, Any, str, Any, int]


#: The longest account of an error that is logged, in characters.
MAX_DESCRIPTION = 2000

#: A Metric holding an item's fields (tuple.__new__ copies them: no Python code runs).
_as_metric = functools.partial(tuple.__new__, Metric)


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
    ``dropped``: discarded because the buffer was full (or reported after ``close()``).
    ``filtered``: dropped by a ``kaneda_filter_metric`` hook. ``retried``: metric
    re-sends. ``queued``: waiting now. ``unreadable``: rows of a disk buffer that could
    not be read back and were moved aside. ``folded``: calls folded into aggregated
    points (``aggregate=True``), which ``sent`` then counts as points. ``folded_lost``:
    of those calls, the ones whose points failed or were dropped (each such point counts
    one in ``failed`` or ``dropped``).
    """

    __slots__ = (
        "dropped",
        "failed",
        "filtered",
        "folded",
        "folded_lost",
        "queued",
        "retried",
        "sent",
        "unreadable",
    )

    def __init__(
        self,
        sent: int = 0,
        failed: int = 0,
        dropped: int = 0,
        filtered: int = 0,
        retried: int = 0,
        queued: int = 0,
        unreadable: int = 0,
        folded: int = 0,
        folded_lost: int = 0,
    ) -> None:
        self.sent = sent
        self.failed = failed
        self.dropped = dropped
        self.filtered = filtered
        self.retried = retried
        self.queued = queued
        self.unreadable = unreadable
        self.folded = folded
        self.folded_lost = folded_lost

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return {name: getattr(self, name) for name in _STAT_NAMES}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stats) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        counters = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"Stats({counters})"


_STAT_NAMES = (
    "sent",
    "failed",
    "dropped",
    "filtered",
    "retried",
    "queued",
    "unreadable",
    "folded",
    "folded_lost",
)


class Delivery:
    """Delivers lists of queued items to one backend, with hooks, retries and counting."""

    def __init__(self, backend: Backend, retry: RetryPolicy | None = None) -> None:
        # (plugins, imported with this module: a Metrics made in a __del__ at the
        # interpreter's exit, when nothing can be imported any more, is made all the same)
        implements = plugins.implements
        self.backend = backend
        self.retry = retry or RetryPolicy()
        self.stats = Stats()
        # Reentrant: a signal handler that reports while this thread counts must not wait
        # on itself.
        self._lock = threading.RLock()
        self._counting = False
        self._deferred_counts: deque[dict[str, int]] = deque()
        #: Counts the counts of metrics a caller held (count_settled): a reader that sees
        #: it unchanged across reading the counters and the dispatcher's queue read both
        #: at one instant (Metrics.stats).
        self.changes = 0
        self.incidents = IncidentLog(type(backend).__name__)
        #: Taken around each send and the close: other Metrics may use this backend too.
        self.use = use_of(backend)
        #: Whether the Metrics made the backend (from a URL or a name): then it is closed
        #: when the application lets go of the Metrics unclosed; one it passed in, which
        #: it may share, is left open.
        self.owns_backend = False
        self._filter = implements("kaneda_filter_metric")
        self._plugins_seen = plugins.changes
        self._hears_losses = implements("kaneda_batch_failed")
        self._hearers_seen = plugins.changes
        self._sends_records = sends_records(backend)
        #: With aggregation: how many calls lost points carried (Aggregator.lost).
        self.calls_lost: Callable[[Sequence[Any]], int] | None = None
        track_delivery(self)

    def _after_fork_in_child(self) -> None:
        # A child counts what it does itself, from zero, under locks of its own.
        self.stats = Stats()
        self._lock = threading.RLock()
        self._counting = False
        self._deferred_counts = deque()
        self.incidents = IncidentLog(self.incidents.backend_name)
        self.use = use_of(self.backend)

    def to_metrics(self, items: Sequence[Any]) -> list[Metric]:
        """The metric records of queued items (plain tuples of a Metric's fields, or Metrics).

        The calls queue the record's fields themselves, host and stamped time included,
        so making the records is one C-level pass: no Python code runs per metric.
        """
        return list(map(_as_metric, items))

    def deliver(
        self,
        items: Sequence[Any],
        *,
        retry: bool,
        stop: threading.Event | None = None,
        keep_transient: bool = False,
        keep_at_shutdown: bool = False,
        answers: list[Any] | None = None,
        while_waiting: Callable[[], bool] | None = None,
        settled: Callable[[int], None] | None = None,
        wait_step: Callable[[], float] | None = None,
    ) -> list[int]:
        """Send ``items`` as one batch; retry transient failures when ``retry`` is true.

        ``stop``, once set, ends the waiting between retries early. ``while_waiting`` is
        called about every :data:`WAIT_STEP` seconds of that waiting; while it returns
        True (the caller's buffer is filling: a long wait would end in drops) a wait
        lasts :data:`HURRIED_WAIT` seconds at most. A batch refused for
        what some of its metrics hold (an encoding error, a malformed point) is sent in
        halves until the bad metrics are isolated: the good ones are stored, the bad
        ones fail. Metrics that still fail for a transient reason after the retries (or
        at ``stop``) fail for good, unless ``keep_transient`` is set: then their
        positions in ``items`` are returned and the caller keeps them to send later
        (the disk buffer does). With ``keep_at_shutdown`` (or ``keep_transient``),
        metrics that failed because the interpreter is exiting (see :func:`at_shutdown`)
        are kept at once, without retries: a retry from this thread fails the same way,
        and the caller hands them to one that can still send. Never raises: failures
        are logged, counted and passed
        to the ``kaneda_batch_failed`` hook. With ``answers``, what the backend's
        ``send`` returned is appended to it for each part that was stored. ``settled``
        is called with each number of ``items`` counted sent, failed or filtered, under
        the counters' lock: the caller stops counting them as queued at the same instant.
        ``wait_step`` says how long until ``while_waiting`` is to be called next, when
        that is sooner than :data:`WAIT_STEP` (an aggregating caller's next interval:
        emitted on time while a batch waits).
        """
        if self._plugins_seen != plugins.changes:  # a plugin registered or removed since
            self._plugins_seen = plugins.changes
            self._filter = plugins.implements("kaneda_filter_metric")
        if self._filter:
            built = self.to_metrics(items)
            metrics = self._apply_filter(built, settled)
        else:
            # What was queued, as it is, where the backend takes records.
            built = metrics = list(items) if self._sends_records else self.to_metrics(items)
        kept: list[Metric] = []
        # Parts still to send, each with its attempt number; a refused part is halved.
        parts: list[tuple[Sequence[Metric], int]] = [(metrics, 1)] if metrics else []
        while parts:
            pending, attempt = parts.pop()
            try:
                # A copy: a send that consumes its list (pops what it wrote) must not
                # change what is counted, retried or halved here.
                with self.use:
                    answer = self.backend.send(list(pending))
            except Exception as error:  # noqa: BLE001 - a backend failure must not escape
                failed, retryable, isolate = self._classify(error, pending)
                rejected = getattr(error, "rejected", ())
                if rejected:
                    self.fail(rejected, error, settled)
                self.count_settled(settled, sent=len(pending) - len(failed) - len(rejected))
                if (keep_at_shutdown or keep_transient) and at_shutdown(error):
                    self.incidents.transient(self.describe(error), len(failed), None)
                    kept.extend(failed)
                    continue
                if not retryable:
                    if isolate and len(failed) > 1:
                        half = len(failed) // 2
                        parts += [(failed[half:], attempt), (failed[:half], attempt)]
                    else:
                        self.fail(failed, error, settled)
                    continue
                stopping = stop is not None and stop.is_set()
                if retry and attempt < self.retry.attempts and not stopping:
                    delay = self.retry.delay(attempt)
                    self.incidents.transient(self.describe(error), len(failed), delay)
                    self.count(retried=len(failed))
                    with gate.stepped_out():  # a fork need not wait for a backoff
                        waited_out = _wait(delay, stop, while_waiting, wait_step)
                    if waited_out:
                        parts.append((failed, attempt + 1))
                        continue
                if keep_transient:
                    self.incidents.transient(self.describe(error), len(failed), None)
                    kept.extend(failed)
                    continue
                self.fail(failed, error, settled)
            else:
                if settled is None:  # (a call level less: the sync path's every call)
                    self.count(sent=len(pending))
                else:
                    self.count_settled(settled, sent=len(pending))
                self.incidents.delivered()
                if answers is not None:
                    answers.append(answer)
        if not kept:
            return []
        position = {id(metric): index for index, metric in enumerate(built)}  # from items[i]
        return sorted(position[id(metric)] for metric in kept)

    def _apply_filter(
        self, metrics: list[Metric], settled: Callable[[int], None] | None
    ) -> list[Metric]:
        # Each plugin's filter on its own: one that raises keeps the metric (a broken
        # hook must not lose metrics) and leaves the other filters their say.
        filters = [
            (plugin, function, "metric" in arguments)
            for plugin, function, arguments in plugins.implementations("kaneda_filter_metric")
        ]
        failures: dict[str, list[Any]] = {}
        kept = []
        for metric in metrics:
            for plugin, function, takes_metric in filters:
                try:
                    verdict = function(metric=metric) if takes_metric else function()
                except Exception as error:  # noqa: BLE001 - logged below, once
                    failures.setdefault(plugin, [0, error])[0] += 1
                    continue
                if verdict is False:  # only False itself: a 0 or an odd object keeps it
                    break
            else:
                kept.append(metric)
        for plugin, (count, first) in failures.items():
            self.incidents.hook_failed(
                "kaneda_filter_metric", plugin, count, first, "the metrics were kept"
            )
        self.count_settled(settled, filtered=len(metrics) - len(kept))
        return kept

    def _classify(
        self, error: Exception, pending: Sequence[Metric]
    ) -> tuple[Sequence[Metric], bool, bool]:
        """(the metrics that failed, whether a retry may help, whether halving may help)."""
        if at_shutdown(error):
            # Not the metrics' fault: sent from another thread, or by the next process
            # from a disk buffer, they may still be stored.
            failed = getattr(error, "metrics", None)
            return (pending if failed is None else failed), True, False
        if isinstance(error, DeliveryError):
            failed = error.metrics if error.metrics is not None else pending
            return failed, error.retryable, error.isolate
        retryable = self.backend.is_retryable(error)
        # An unexpected, permanent exception (an encoding error, say) may come from one
        # metric of the batch: halving finds it.
        return pending, retryable, not retryable

    def fail(
        self,
        metrics: Sequence[Metric],
        error: BaseException,
        settled: Callable[[int], None] | None = None,
    ) -> None:
        """Count ``metrics`` as failed for good, log it, and tell the failure hook.

        ``settled`` as for :meth:`deliver`: counted failed, they are no longer queued
        while the hook takes its time.
        """
        if metrics:
            if self.calls_lost is not None:
                lost = self.calls_lost(metrics)
                if lost:
                    self.count(folded_lost=lost)  # (not metrics: nothing settles them)
            self.count_settled(settled, failed=len(metrics))
            self.report_loss(metrics, error, "not delivered")

    def report_loss(self, metrics: Sequence[Metric], error: BaseException, what: str) -> None:
        """Log that ``metrics`` were lost (``what`` happened) and tell the failure hook."""
        self.incidents.permanent(len(metrics), what, self.describe(error))
        self.tell_hook(metrics, error)

    def tell_hook(self, metrics: Sequence[Metric], error: BaseException) -> None:
        """Pass lost ``metrics`` to each ``kaneda_batch_failed`` hook; their errors are logged.

        Each plugin's hook is called on its own: one that raises does not keep the
        others from being told.
        """
        arguments = {"metrics": self.to_metrics(metrics), "error": error, "backend": self.backend}
        for plugin, function, names in plugins.implementations("kaneda_batch_failed"):
            try:
                function(**{name: arguments[name] for name in names if name in arguments})
            except Exception as hook_error:  # noqa: BLE001 - a broken hook must not stop delivery
                self.incidents.hook_failed(
                    "kaneda_batch_failed", plugin, len(metrics), hook_error, "ignored"
                )

    def hears_losses(self) -> bool:
        """Whether a ``kaneda_batch_failed`` hook would be told of lost metrics.

        Looked up again after a plugin is registered or removed. Without one, metrics
        dropped for a full buffer need not be kept until the worker reports them.
        """
        if self._hearers_seen != plugins.changes:
            self._hearers_seen = plugins.changes
            self._hears_losses = plugins.implements("kaneda_batch_failed")
        return self._hears_losses

    def describe(self, error: BaseException) -> str:
        """A one-line account of ``error``, with the backend's secrets masked, shortened.

        A server may quote what it refused (InfluxDB quotes the line): a large metric
        would make a log line, and a key of the incident log, of megabytes.
        """
        text = f"{type(error).__name__}: {error}"
        try:
            text = self.backend.redact(text)
        except Exception:  # noqa: BLE001 - a broken redact must not leak the text either
            return type(error).__name__
        if len(text) > MAX_DESCRIPTION:
            more = len(text) - MAX_DESCRIPTION
            text = f"{text[:MAX_DESCRIPTION]}... ({more} more characters)"
        return text

    def count(self, **increments: int) -> None:
        """Add to the counters, safely from any thread and from a signal handler.

        A signal handler that reports while its thread is halfway through an update
        must not let that update overwrite its own: its increments wait in a queue that
        the interrupted update applies when it is done.
        """
        with self._lock:
            if self._counting:
                self._deferred_counts.append(increments)
                return
            self._counting = True
            try:
                self._apply(increments)
            finally:
                self._counting = False
            while self._deferred_counts:
                self._counting = True
                try:
                    self._apply(self._deferred_counts.popleft())
                finally:
                    self._counting = False

    def count_settled(self, settled: Callable[[int], None] | None, **outcomes: int) -> None:
        """:meth:`count` metrics a caller holds, and tell it (``settled``) under the same lock.

        So a reader of the counters and of the caller's queue (``stats()``) sees each
        metric in one place: queued, or counted.
        """
        if settled is None:
            self.count(**outcomes)
            return
        with self._lock:
            self.count(**outcomes)
            self.changes += 1
            settled(sum(outcomes.values()))

    def _apply(self, increments: dict[str, int]) -> None:
        stats = self.stats
        for name, amount in increments.items():
            setattr(stats, name, getattr(stats, name) + amount)

    def snapshot(self) -> Stats:
        """A copy of the counters."""
        with self._lock:
            return Stats(**self.stats.as_dict())


#: What a client library raises when it needs a new thread, an atexit callback or an
#: executor once the interpreter's shutdown began (threading's _shutdown ran): gevent's
#: hub in a thread started before the monkey-patch, a driver's thread pool.
_SHUTDOWN_ERRORS = (
    "can't register atexit after shutdown",
    "cannot schedule new futures after interpreter shutdown",
    "cannot schedule new futures after shutdown",
    "can't create new thread at interpreter shutdown",
)


def at_shutdown(error: BaseException) -> bool:
    """Whether ``error`` came of the interpreter exiting, not of the metrics or the store.

    The interpreter finalizing, or one of the errors above, as raised or wrapped by a
    backend (kaneda-influx's DeliveryError quotes it), here or in its causes.
    """
    if sys.is_finalizing():
        return True
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 8:
        try:
            text = str(current)
        except Exception:  # noqa: BLE001 - an exception whose __str__ raises
            text = ""
        if any(phrase in text for phrase in _SHUTDOWN_ERRORS):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


class BufferFull(KanedaError):
    """Metrics were dropped because the buffer was full (passed to the failure hook)."""


#: How often a wait between retries looks at the caller's buffer (``while_waiting``):
#: often enough to say drops within a second, seldom enough that a thousand workers
#: waiting out an outage cost little (at 0.1 s they took 43 % of a core).
WAIT_STEP = 1.0
#: The longest wait between retries while the caller's buffer is full.
HURRIED_WAIT = 1.0


def _wait(
    delay: float,
    stop: threading.Event | None,
    while_waiting: Callable[[], bool] | None,
    wait_step: Callable[[], float] | None = None,
) -> bool:
    """Wait ``delay`` seconds before a retry; False when ``stop`` was set meanwhile."""
    if while_waiting is None:
        return stop is None or not stop.wait(delay)
    started = time.monotonic()
    end = started + delay
    while True:
        if while_waiting():
            end = min(end, started + HURRIED_WAIT)
        remaining = end - time.monotonic()
        if remaining <= 0:
            return True
        step = min(remaining, WAIT_STEP if wait_step is None else min(WAIT_STEP, wait_step()))
        if stop is None:
            time.sleep(step)
        elif stop.wait(step):
            return False
