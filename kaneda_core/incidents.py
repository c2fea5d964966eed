"""Logging delivery trouble once per incident, with counts that agree with ``stats()``.

An outage of a minute means hundreds of retries of dozens of batches; a log line for
each buries the one line that matters. Here an outage is logged when it starts, every
``REPEAT_AFTER`` seconds while it lasts, and when delivery works again. Drops are logged
as running totals (the same number ``stats().dropped`` holds) when they start, while
they go on, and when they stop. Permanent failures are logged at once, and a message
that repeats (alike but for quoted text and numbers: a server that names each refused
value) is folded into one line per ``REPEAT_AFTER`` seconds with a count;
the count held back is logged too when delivery works again after them, and at close, so
that the totals in the log add up to ``stats().failed``.
"""

from __future__ import annotations

import logging
import re
import threading
import time

log = logging.getLogger("kaneda")

#: Seconds between two log lines about the same ongoing trouble.
REPEAT_AFTER = 60.0
_MAX_KEYS = 100
_LOST = "lost"  # metrics lost for good
_HOOK = "hook"  # a hook that raised


#: What differs between two messages of one kind: quoted text, numbers.
_VARYING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\d+')


def _shape(message: str) -> str:
    """``message`` without what varies from one metric to the next (the value a server
    quotes, a count): a refusal that names each metric's value repeats in this shape."""
    return _VARYING.sub("_", message)


def _unsaid(outages: int, before: str) -> str:
    """Words for ``outages`` short outages not logged one by one, or nothing."""
    if not outages:
        return ""
    some = "1 more outage" if outages == 1 else f"{outages} more outages"
    return (
        f"{before}{some} since the last line about one (an outage that begins within "
        f"{REPEAT_AFTER:.0f} s of such a line is logged only if it lasts that long)"
    )


class _Record:
    """A message of the log: when it was last logged, and its repeats held back since."""

    __slots__ = ("at", "batches", "kind", "metrics", "parts", "successes")

    def __init__(self, kind: str, parts: tuple[str, ...]) -> None:
        self.kind = kind
        self.parts = parts  # what a line about its total says (see _log_total)
        self.at = 0.0
        self.batches = 0
        self.metrics = 0
        self.successes = 0  # the log's count of sends that worked, when it was logged


#: A total held back: the message's record, batches, metrics, and since when.
_Total = tuple[_Record, int, int, float]


class IncidentLog:
    """What one delivery (one backend) logs about its failures."""

    def __init__(self, backend_name: str) -> None:
        self.backend_name = backend_name
        self._outage_since: float | None = None
        self._outage_logged = 0.0
        # When a line last said an outage (began, or goes on), whether the one going on
        # is unsaid (it began within REPEAT_AFTER of that line), and how many were.
        self._outage_said = -REPEAT_AFTER
        self._outage_quiet = False
        self._outages_unsaid = 0
        self._drops_logged = 0
        self._drops_logged_at = 0.0
        self._repeats: dict[str, _Record] = {}
        self._held: set[str] = set()  # the messages with repeats held back
        self._successes = 0  # sends that worked
        self._closed = False
        # The worker's failures and close()'s (its give-up) may come at once. Reentrant:
        # a signal handler may log while its thread does. Never held while logging.
        self._lock = threading.RLock()

    # -- transient failures: one line when an outage starts, one when it ends ------------

    def transient(self, error: str, metrics: int, retry_in: float | None) -> None:
        """A send failed for a reason that may pass; ``retry_in`` is None when not retried."""
        now = time.monotonic()
        then = "retrying with backoff" if retry_in is not None else "keeping them for later"
        if self._outage_since is None:
            self._outage_since = self._outage_logged = now
            if now - self._outage_said < REPEAT_AFTER:
                # A store failing on and off: this outage is said only if it lasts, and
                # counted in the next line that starts one (or at close).
                self._outage_quiet = True
                self._outages_unsaid += 1
                return
            unsaid, self._outages_unsaid = self._outages_unsaid, 0
            self._outage_quiet = False
            self._outage_said = now
            log.warning(
                "Kaneda: cannot deliver %d metrics to %s (%s); %s. Logged once until "
                "delivery works again.%s",
                metrics,
                self.backend_name,
                error,
                then,
                _unsaid(unsaid, " "),
            )
        elif now - self._outage_logged >= REPEAT_AFTER:
            self._outage_logged = self._outage_said = now
            if self._outage_quiet:  # said now: it lasts
                self._outage_quiet = False
                self._outages_unsaid -= 1
            log.warning(
                "Kaneda: still cannot deliver to %s after %.0f s (%s); %s.",
                self.backend_name,
                now - self._outage_since,
                error,
                then,
            )

    def delivered(self) -> None:
        """A send succeeded: ends an outage, if there was one, and logs the totals of
        failures for good held back that it ends (see ``_after_success``)."""
        if self._held:
            self._after_success(time.monotonic())
        self._successes += 1
        if self._outage_since is not None:
            if not self._outage_quiet:
                log.warning(
                    "Kaneda: delivering to %s again, after %.1f s of failures.",
                    self.backend_name,
                    time.monotonic() - self._outage_since,
                )
            self._outage_since = None

    # -- drops: running totals -------------------------------------------------------

    def dropped(self, total: int, reason: str, *, final: bool = False) -> None:
        """``total`` metrics were dropped so far (``stats().dropped``) because ``reason``.

        Logged when drops start and at most every ``REPEAT_AFTER`` seconds after, so
        that the last line, at the latest ``REPEAT_AFTER`` after drops stop (at once if
        ``final``: at close), holds the final total.
        """
        if total <= self._drops_logged:
            return
        now = time.monotonic()
        first = self._drops_logged == 0
        if not (first or final or now - self._drops_logged_at >= REPEAT_AFTER):
            return
        log.warning(
            "Kaneda: %s; %d metrics dropped so far (stats().dropped).",
            reason,
            total,
        )
        self._drops_logged = total
        self._drops_logged_at = now

    def drops_pending(self, total: int) -> bool:
        """Whether drops happened since the last line about them."""
        return total > self._drops_logged

    # -- permanent failures: each message once per REPEAT_AFTER, with a count ------------

    def permanent(self, metrics: int, what: str, error: str) -> None:
        """``metrics`` metrics were lost for good (``what`` happened to them)."""
        now = time.monotonic()
        due = self._due(f"{what}: {_shape(error)}", _LOST, (what, error), metrics, now)
        if due is None:
            return
        _first, own, others = due
        self._log_totals(others, now, "")
        if own is not None:
            self._log_total(own, now, "")
        log.error("Kaneda: %d metrics %s to %s: %s", metrics, what, self.backend_name, error)

    # -- hooks that raise: each failure once per REPEAT_AFTER, with a count ----------------

    def hook_failed(
        self, hook: str, plugin: str, metrics: int, error: BaseException, then: str
    ) -> None:
        """``plugin``'s ``hook`` raised ``error`` for ``metrics`` metrics; Kaneda did ``then``.

        A broken hook fails the same way for every metric: logged with its traceback
        when it starts, then once per ``REPEAT_AFTER`` seconds with a count, not once
        per metric.
        """
        now = time.monotonic()
        text = f"{type(error).__name__}: {error}"
        key = f"hook {hook} of {plugin}: {text}"
        due = self._due(key, _HOOK, (hook, plugin, then, text), metrics, now)
        if due is None:
            return
        first, own, others = due
        self._log_totals(others, now, "")
        since = f" ({own[2]} more metrics since the last line)" if own is not None else ""
        log.error(
            "Kaneda: %s hook of plugin %r raised for %d metrics%s; %s: %s: %s",
            hook,
            plugin,
            metrics,
            since,
            then,
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__) if first else None,
        )

    # -- the totals held back: told when delivery works again, and at close ---------------

    def close(self) -> None:
        """Kaneda is closing: log every total still held back (the final ones); from now
        on each failure is logged at once, none is held back for a line that would never
        come."""
        now = time.monotonic()
        with self._lock:
            self._closed = True
            totals = [self._take(key, now, self._successes) for key in list(self._held)]
            unsaid, self._outages_unsaid = self._outages_unsaid, 0
        self._log_totals(totals, now, ", before close")
        if unsaid:
            log.warning(
                "Kaneda: delivery to %s failed on and off: %s",
                self.backend_name,
                _unsaid(unsaid, ""),
            )

    def _after_success(self, now: float) -> None:
        """Log the totals a send that worked ends: the failures for good held back since
        their last line with no success between (an outage of them), and any held back
        for ``REPEAT_AFTER`` already.

        A failure between successes (one bad batch in a few) stays held back until then:
        a line each time a send works would be a line per batch.
        """
        with self._lock:
            successes = self._successes
            ended, due = [], []
            for key in list(self._held):
                record = self._repeats[key]
                if record.kind == _LOST and record.successes == successes:
                    ended.append(self._take(key, now, successes + 1))
                elif now - record.at >= REPEAT_AFTER:
                    due.append(self._take(key, now, successes + 1))
        self._log_totals(ended, now, ", until delivery worked again")
        self._log_totals(due, now, "")

    def _due(
        self, key: str, kind: str, parts: tuple[str, ...], metrics: int, now: float
    ) -> tuple[bool, _Total | None, list[_Total]] | None:
        """None when the message ``key`` is held back (counted in its record); else it is
        logged now: (whether it is new, the total held back since its last line, the
        totals of other messages forgotten to make room), and its record starts anew."""
        with self._lock:
            record = self._repeats.get(key)
            if record is not None and not self._closed and now - record.at < REPEAT_AFTER:
                record.batches += 1
                record.metrics += metrics
                self._held.add(key)
                return None
            first, own, others = record is None, None, []
            if record is None:
                if len(self._repeats) >= _MAX_KEYS:
                    # Their totals are told before they are forgotten.
                    others = [self._take(held, now, self._successes) for held in list(self._held)]
                    self._repeats.clear()
                record = self._repeats[key] = _Record(kind, parts)
            elif record.batches:
                own = self._take(key, now, self._successes)
            record.parts = parts
            record.at = now
            record.successes = self._successes
            return first, own, others

    def _take(self, key: str, now: float, successes: int) -> _Total:
        """The total held back for ``key`` (its record, batches, metrics, since when),
        taken out of its record: logged at ``now``, with ``successes`` sends seen."""
        record = self._repeats[key]
        total = (record, record.batches, record.metrics, record.at)
        record.batches = record.metrics = 0
        record.at = now
        record.successes = successes
        self._held.discard(key)
        return total

    def _log_totals(self, totals: list[_Total], now: float, when: str) -> None:
        for total in totals:
            self._log_total(total, now, when)

    def _log_total(self, total: _Total, now: float, when: str) -> None:
        record, batches, metrics, since = total
        if record.kind == _LOST:
            what, error = record.parts
            log.error(
                "Kaneda: %d more batches (%d metrics) %s to %s in the last %.1f s%s: %s",
                batches,
                metrics,
                what,
                self.backend_name,
                now - since,
                when,
                error,
            )
        else:
            hook, plugin, then, error = record.parts
            log.error(
                "Kaneda: %s hook of plugin %r raised for %d more metrics in the last %.1f s%s;"
                " %s: %s",
                hook,
                plugin,
                metrics,
                now - since,
                when,
                then,
                error,
            )


class SharedIncidentLog(IncidentLog):
    """One log for the failures of many deliveries to one kind of backend (the Metrics
    an application let go of, closed by Kaneda's closer): a repeated failure is one line
    per ``REPEAT_AFTER`` seconds for all of them, not a line each."""

    def close(self) -> None:
        """Ignored: one delivery's close; the totals held back are told by :meth:`end`."""

    def end(self) -> None:
        """Log every total still held back (the process exits)."""
        IncidentLog.close(self)
