"""Logging delivery trouble once per incident, with counts that agree with ``stats()``.

An outage of a minute means hundreds of retries of dozens of batches; a log line for
each buries the one line that matters. Here an outage is logged when it starts, every
``REPEAT_AFTER`` seconds while it lasts, and when delivery works again. Drops are logged
as running totals (the same number ``stats().dropped`` holds) when they start, while
they go on, and when they stop. Permanent failures are logged at once, and an identical
message that repeats is folded into one line per ``REPEAT_AFTER`` seconds with a count.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("kaneda")

#: Seconds between two log lines about the same ongoing trouble.
REPEAT_AFTER = 60.0
_MAX_KEYS = 100


class IncidentLog:
    """What one delivery (one backend) logs about its failures."""

    def __init__(self, backend_name: str) -> None:
        self.backend_name = backend_name
        self._outage_since: float | None = None
        self._outage_logged = 0.0
        self._drops_logged = 0
        self._drops_logged_at = 0.0
        self._repeats: dict[str, list[float]] = {}

    # -- transient failures: one line when an outage starts, one when it ends ------------

    def transient(self, error: str, metrics: int, retry_in: float | None) -> None:
        """A send failed for a reason that may pass; ``retry_in`` is None when not retried."""
        now = time.monotonic()
        then = "retrying with backoff" if retry_in is not None else "keeping them for later"
        if self._outage_since is None:
            self._outage_since = self._outage_logged = now
            log.warning(
                "Kaneda: cannot deliver %d metrics to %s (%s); %s. Logged once until "
                "delivery works again.",
                metrics,
                self.backend_name,
                error,
                then,
            )
        elif now - self._outage_logged >= REPEAT_AFTER:
            self._outage_logged = now
            log.warning(
                "Kaneda: still cannot deliver to %s after %.0f s (%s); %s.",
                self.backend_name,
                now - self._outage_since,
                error,
                then,
            )

    def delivered(self) -> None:
        """A send succeeded: ends an outage, if there was one."""
        if self._outage_since is not None:
            log.warning(
                "Kaneda: delivering to %s again, after %.1f s of failures.",
                self.backend_name,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None

    # -- drops: running totals -------------------------------------------------------

    def dropped(self, total: int, reason: str, *, final: bool = False) -> None:
        """``total`` metrics were dropped so far (``stats().dropped``) because ``reason``.

        Logged when drops start, at most every ``REPEAT_AFTER`` seconds while they go
        on, and (``final``) once they stopped, so the last line holds the final total.
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
        key = f"{what}: {error}"
        due, seen = self._due(key, metrics, now)
        if not due:
            return
        if seen is not None and seen[1]:
            log.error(
                "Kaneda: %d more batches (%d metrics) %s to %s in the last %.0f s: %s",
                int(seen[1]),
                int(seen[2]),
                what,
                self.backend_name,
                now - seen[0],
                error,
            )
        log.error("Kaneda: %d metrics %s to %s: %s", metrics, what, self.backend_name, error)
        self._logged(key, now)

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
        key = f"hook {hook} of {plugin}: {type(error).__name__}: {error}"
        due, seen = self._due(key, metrics, now)
        if not due:
            return
        since = f" ({int(seen[2])} more metrics since the last line)" if seen and seen[2] else ""
        log.error(
            "Kaneda: %s hook of plugin %r raised for %d metrics%s; %s: %s: %s",
            hook,
            plugin,
            metrics,
            since,
            then,
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__) if seen is None else None,
        )
        self._logged(key, now)

    def _due(self, key: str, metrics: int, now: float) -> tuple[bool, list[float] | None]:
        """Whether the message ``key`` is due a line now, and its record (logged at, lines
        held back, metrics held back); one held back is counted in its record."""
        seen = self._repeats.get(key)
        if seen is not None and now - seen[0] < REPEAT_AFTER:
            seen[1] += 1
            seen[2] += metrics
            return False, seen
        return True, seen

    def _logged(self, key: str, now: float) -> None:
        """The message ``key`` was logged at ``now``: hold its repeats back from there."""
        if len(self._repeats) >= _MAX_KEYS:
            self._repeats.clear()
        self._repeats[key] = [now, 0, 0]
