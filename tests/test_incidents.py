"""Trouble is logged once per incident, and the numbers in the log are the stats' numbers."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence

import pytest

from kaneda_core import Metric, Metrics, RetryPolicy
from kaneda_core.backends import MemoryBackend

FAST = RetryPolicy(attempts=3, initial_delay=0.005, max_delay=0.01)


class Switchable(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def send(self, batch: Sequence[Metric]) -> None:
        if self.down:
            raise ConnectionRefusedError("refused by 127.0.0.1:9")
        super().send(batch)


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Switchable()
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(backend, batch_size=10, flush_interval=0.01, retry=FAST)
        for i in range(500):  # fifty batches, each retried: a hundred and fifty failures
            metrics.gauge("g", i)
            time.sleep(0.0002)
        metrics.flush(2)
        backend.down = False
        metrics.gauge("g", -1)
        metrics.flush(5)
        metrics.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "kaneda"]
    assert len([line for line in lines if "cannot deliver" in line]) == 1, lines
    assert len([line for line in lines if "delivering to" in line]) == 1, lines
    assert "refused by 127.0.0.1:9" in next(line for line in lines if "cannot deliver" in line)
    # Permanent losses (retries exhausted) are folded into one line per message, too.
    assert len([line for line in lines if "not delivered" in line]) <= 2, lines


def test_the_drop_count_in_the_log_is_the_one_in_stats(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()

    class Stuck(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            gate.wait(10)
            super().send(batch)

    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(Stuck(), max_buffer=10, batch_size=1000, flush_interval=0.01)
        metrics.gauge("first", 0)
        time.sleep(0.1)  # the worker is now stuck in send with that one metric
        for i in range(100):
            metrics.gauge("g", i)
        time.sleep(0.2)  # the worker would have logged by now, were it free: it is not
        gate.set()
        metrics.flush(5)
        dropped = metrics.stats().dropped
        metrics.close()
    assert dropped == 90
    counts = [
        int(found.group(1))
        for r in caplog.records
        if (found := re.search(r"(\d+) metrics dropped so far", r.getMessage()))
    ]
    assert counts and counts[-1] == dropped, counts


def test_drops_after_the_last_line_about_them_are_told_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Drops go on after the first line (repeated at most every REPEAT_AFTER), and close()
    # comes before the worker's next round: close still logs the final total.
    sending = threading.Semaphore(0)
    proceed = threading.Semaphore(0)

    class Stuck(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            sending.release()
            proceed.acquire(timeout=10)
            super().send(batch)

    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(Stuck(), max_buffer=10, flush_interval=60)
        metrics.gauge("first", 0)
        metrics.flush(0)
        assert sending.acquire(timeout=5)  # the worker is in send with it
        for i in range(30):  # ten queued, twenty dropped
            metrics.gauge("g", i)
        proceed.release()
        assert sending.acquire(timeout=5)  # the ten
        proceed.release()
        while "dropped so far" not in caplog.text:  # its next round says so
            time.sleep(0.001)
        metrics.gauge("h", 0)
        metrics.flush(0)
        assert sending.acquire(timeout=5)
        for i in range(50):  # ten queued, forty more dropped, within REPEAT_AFTER
            metrics.gauge("h", i)
        closing = threading.Thread(target=metrics.close, args=(5,))
        closing.start()
        while not metrics._dispatcher._closed:  # type: ignore[attr-defined]
            time.sleep(0.001)
        for _ in range(3):
            proceed.release()
        closing.join(10)
    counts = [
        int(found.group(1))
        for r in caplog.records
        if (found := re.search(r"(\d+) metrics dropped so far", r.getMessage()))
    ]
    assert len(counts) >= 2 and counts[-1] == metrics.stats().dropped, counts


def test_a_huge_error_message_is_logged_shortened(caplog: pytest.LogCaptureFixture) -> None:
    """A server that quotes the line it refused (InfluxDB does) quotes a 1 MB event whole."""
    from kaneda_core import DeliveryError

    class Quoting(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            raise DeliveryError(f"unable to parse '{'y' * 1_000_000}'", retryable=False)

    metrics = Metrics(Quoting(), batching=False)
    metrics.event("dump", "y")
    assert metrics.stats().failed == 1
    assert 0 < len(caplog.text) < 5_000 and "more characters" in caplog.text


def test_a_refusal_that_names_each_value_is_folded_like_one_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server naming the refused value and a count (InfluxDB past max-values-per-tag)
    says something new for each metric: still one incident, not a line per metric."""
    from kaneda_core import DeliveryError

    class Limited(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            value = batch[0].tags["user"]
            raise DeliveryError(
                f'partial write: max-values-per-tag limit exceeded (100/100): tag="user" '
                f'value="{value}" dropped=1',
                retryable=False,
            )

    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics(Limited(), batching=False)
        for i in range(2000):
            metrics.increment("logins", tags={"user": f"u{i}"})
        metrics.close()
    assert metrics.stats().failed == 2000
    lines = [r.getMessage() for r in caplog.records if r.name == "kaneda"]
    assert len(lines) <= 3, lines[:5]
    told = sum(int(n) for n in re.findall(r"\((\d+) metrics\)", "\n".join(lines)))
    assert 1 + told == 2000  # the first line's metric, and the totals held back


def test_a_store_that_fails_on_and_off_is_not_a_pair_of_lines_per_swing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server alternating between answering and not (a flapping load balancer) logged
    "cannot deliver" and "delivering again" at each swing: 60 lines in 40 s."""
    from kaneda_core import incidents
    from kaneda_core.incidents import REPEAT_AFTER, IncidentLog

    now = [1000.0]
    monkeypatch.setattr(incidents.time, "monotonic", lambda: now[0])
    log = IncidentLog("Flapping")
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        for _ in range(30):  # a swing every 1.5 s
            log.transient("ConnectionResetError: reset", 100, 0.5)
            now[0] += 0.5
            log.delivered()
            now[0] += 1.0
        assert len(caplog.records) == 2  # the first outage and its end
        now[0] += REPEAT_AFTER
        log.transient("ConnectionResetError: reset", 100, 0.5)  # a minute on: said again
        log.delivered()
        lines = [record.getMessage() for record in caplog.records]
        assert len(lines) == 4 and "29 more outages" in lines[2], lines
        log.transient("ConnectionResetError: reset", 100, 0.5)  # within the minute: quiet,
        now[0] += REPEAT_AFTER  # unless it lasts
        log.transient("ConnectionResetError: reset", 100, 0.5)
        log.delivered()
        lines = [record.getMessage() for record in caplog.records]
        assert "still cannot deliver" in lines[4] and "delivering to Flapping again" in lines[5]
        log.transient("ConnectionResetError: reset", 100, 0.5)
        log.delivered()
        log.close()  # swings not said one by one are said at close
        assert "1 more outage" in caplog.records[-1].getMessage()


def test_drops_in_bursts_through_an_outage_are_a_line_per_repeat_after_not_per_pause(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traffic comes in bursts: a pause between two is no end of the drops. A line each
    pause was about one a second, 4,000 an hour of outage."""
    from kaneda_core import incidents

    monkeypatch.setattr(incidents, "REPEAT_AFTER", 1.0)
    backend = Switchable()
    slow = RetryPolicy(attempts=1000, initial_delay=0.05, max_delay=0.05)
    with caplog.at_level(logging.WARNING, logger="kaneda"):
        metrics = Metrics(backend, max_buffer=20, flush_interval=0.01, retry=slow)
        started = time.monotonic()
        while time.monotonic() - started < 2.5:  # bursts of 50, pauses of 0.1 s
            for i in range(50):
                metrics.gauge("g", i)
            time.sleep(0.1)
        metrics.close(0.5)
    counts = [
        int(found.group(1))
        for r in caplog.records
        if (found := re.search(r"(\d+) metrics dropped so far", r.getMessage()))
    ]
    # The first, one a second after (REPEAT_AFTER), and the final total at close.
    assert 2 <= len(counts) <= 5, counts
    assert counts[-1] == metrics.stats().dropped, counts
