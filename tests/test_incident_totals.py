"""Every metric counted failed for good is in the log's totals: the repeats of a message
held back (folded into a count) are logged when delivery works again, and at close."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from types import SimpleNamespace

import pytest

from kaneda_core import Backend, DeliveryError, Metric, Metrics, RetryPolicy
from kaneda_core.incidents import IncidentLog

ONCE = RetryPolicy(attempts=1)
SECRET = "s3cret-token"


class Flaky(Backend):
    """Refuses every batch for good while ``down`` (or each ``every``-th one); stores
    the others. Its error quotes a secret that ``redact`` masks."""

    def __init__(self, *, every: int = 0) -> None:
        self.down = True
        self.every = every
        self.sends = 0
        self.stored: list[Metric] = []
        self.lock = threading.Lock()

    def send(self, batch: Sequence[Metric]) -> None:
        with self.lock:
            self.sends += 1
            failing = self.sends % self.every == 1 if self.every else self.down
        if failing:
            raise DeliveryError(f"refused with token={SECRET}", retryable=False)
        self.stored.extend(batch)

    def redact(self, text: str) -> str:
        return text.replace(SECRET, "***")


def not_delivered_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "kaneda" and r.levelno == logging.ERROR and "not delivered" in r.getMessage()
    ]


def logged_total(caplog: pytest.LogCaptureFixture) -> int:
    """The metrics the ERROR lines say were not delivered, first lines and totals."""
    pattern = re.compile(r"Kaneda: (?:\d+ more batches \()?(\d+) metrics\)? not delivered")
    return sum(
        int(found.group(1))
        for line in not_delivered_lines(caplog)
        if (found := pattern.match(line))
    )


def test_the_total_of_an_outage_is_logged_when_delivery_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Flaky()
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(backend, batch_size=10, flush_interval=0.01, retry=ONCE)
        for i in range(500):  # fifty batches, each refused for good
            metrics.gauge("g", i)
        assert metrics.flush(5) == 0
        failed = metrics.stats().failed
        assert failed == 500
        backend.down = False
        metrics.gauge("g", -1)
        assert metrics.flush(5) == 0
        # Before close: the first successful send logged the total held back.
        assert logged_total(caplog) == failed == metrics.stats().failed
        lines = not_delivered_lines(caplog)
        metrics.close(5)
    assert len(lines) == 2, lines  # the first failure, and the total: not one per batch
    assert "until delivery worked again" in lines[-1], lines
    assert SECRET not in caplog.text
    assert "token=***" in lines[-1]
    assert len(backend.stored) == 1


def test_the_total_held_back_at_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    backend = Flaky()
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(backend, batch_size=10, flush_interval=0.01, retry=ONCE)
        for i in range(300):
            metrics.gauge("g", i)
        metrics.close(5)  # the store never came back: the failures of the last round too
    failed = metrics.stats().failed
    assert failed == 300
    assert logged_total(caplog) == failed
    lines = not_delivered_lines(caplog)
    assert len(lines) == 2, lines
    assert "before close" in lines[-1], lines
    assert SECRET not in caplog.text


def test_the_total_held_back_at_close_is_logged_without_batching(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Flaky()
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(backend, batching=False, retry=ONCE)
        for i in range(40):
            metrics.gauge("g", i)
        assert metrics.stats().failed == 40
        metrics.close(5)
    assert logged_total(caplog) == metrics.stats().failed == 40
    assert len(not_delivered_lines(caplog)) == 2
    assert SECRET not in caplog.text


def test_failures_between_successes_stay_rate_limited_and_are_all_told_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Flaky(every=3)  # one batch in three refused, the others stored
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(backend, batching=False, retry=ONCE)
        for i in range(300):
            metrics.gauge("g", i)
        failed = metrics.stats().failed
        assert failed == 100
        # One line when they start, one total at the first success after a run of
        # them; the rest wait (REPEAT_AFTER): not a line per failed batch.
        assert len(not_delivered_lines(caplog)) <= 3, not_delivered_lines(caplog)
        metrics.close(5)
    assert logged_total(caplog) == failed == metrics.stats().failed
    assert len(not_delivered_lines(caplog)) <= 4, not_delivered_lines(caplog)


def test_a_total_held_back_past_repeat_after_is_logged_at_the_next_success(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kaneda_core.incidents as incidents

    clock = [1000.0]
    monkeypatch.setattr(incidents, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    log = IncidentLog("Store")
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        log.permanent(10, "not delivered", "E: refused")
        log.delivered()
        log.permanent(10, "not delivered", "E: refused")  # after a success: held back
        log.permanent(10, "not delivered", "E: refused")
        log.delivered()  # within REPEAT_AFTER of the last line, after a success: waits
        assert logged_total(caplog) == 10
        clock[0] += incidents.REPEAT_AFTER
        log.delivered()  # the window is over: told, without waiting for the error again
        assert logged_total(caplog) == 30
        log.delivered()
        log.close()
    assert logged_total(caplog) == 30
    assert len(not_delivered_lines(caplog)) == 2


def test_close_logs_every_total_held_back_and_holds_nothing_back_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = IncidentLog("Store")
    boom = ValueError("broken")
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        for _ in range(5):
            log.permanent(3, "not delivered", "E: one")
            log.permanent(2, "not delivered", "E: two")
            log.hook_failed("kaneda_batch_failed", "p", 4, boom, "ignored")
        assert logged_total(caplog) == 5
        log.close()
        assert logged_total(caplog) == 25
        hook_lines = [r.getMessage() for r in caplog.records if "hook of plugin" in r.getMessage()]
        assert len(hook_lines) == 2 and "16 more metrics" in hook_lines[-1], hook_lines
        log.permanent(7, "not delivered", "E: one")  # a straggler after close: told at once
        assert logged_total(caplog) == 32
        log.close()
    assert logged_total(caplog) == 32


def test_totals_held_back_are_logged_before_their_messages_are_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kaneda_core.incidents import _MAX_KEYS

    log = IncidentLog("Store")
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        for i in range(_MAX_KEYS):  # each message logged once, and once held back
            # Told apart by letters: numbers are what one message's repeats vary in.
            kind = chr(ord("a") + i % 26) + chr(ord("a") + i // 26)
            log.permanent(1, "not delivered", f"E: kind {kind}")
            log.permanent(2, "not delivered", f"E: kind {kind}")
        assert logged_total(caplog) == _MAX_KEYS
        log.permanent(1, "not delivered", "E: one too many")  # room made for it
        assert logged_total(caplog) == 3 * _MAX_KEYS + 1
