"""Plugins and backends that misuse the contract, as third-party code does."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kaneda_core import Backend, InvalidMetric, Metric, Metrics
from kaneda_core.backends import MemoryBackend
from kaneda_core.hookspecs import hookimpl
from kaneda_core.plugins import get_plugin_manager


class Refusing(Backend):
    """Refuses every batch for good (a revoked token)."""

    def send(self, batch: Sequence[Metric]) -> None:
        raise RuntimeError("401 unauthorized")


def failures_counted_through(metrics: Metrics, plugin: Any) -> int:
    """Failed deliveries in one second, a failure hook counting each through ``metrics``."""

    class CountFailures:  # what the hook's docs suggest: count them
        @hookimpl
        def kaneda_batch_failed(self, metrics: object, error: object, backend: object) -> None:
            counted.increment("kaneda.delivery_failures")

    counted = metrics
    plugin.register(CountFailures())
    metrics.gauge("a", 1)
    time.sleep(1.0)
    failed = metrics.stats().failed
    metrics.close(1)
    return failed


def test_a_failure_hook_that_reports_through_the_same_metrics_does_not_spin(
    plugin: Any,
) -> None:
    failed = failures_counted_through(Metrics(Refusing(), flush_interval=0.2), plugin)
    # One round per flush interval, each failing the one metric the last round's hook made.
    assert 1 <= failed <= 10, failed


def test_a_send_that_consumes_its_batch_is_counted_as_it_stored() -> None:
    class Consuming(MemoryBackend):
        def send(self, batch: Sequence[Metric]) -> None:
            assert isinstance(batch, list)
            while batch:
                self.metrics.append(batch.pop())

    backend = Consuming()
    metrics = Metrics(backend)
    for i in range(10):
        metrics.gauge(f"g{i}", i)
    metrics.close(5)
    assert len(backend.metrics) == 10
    assert metrics.stats().sent == 10 and metrics.stats().queued == 0


def test_a_bug_in_a_backends_check_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Buggy(MemoryBackend):
        limits: dict[str, float] = {}

        def check(self, metric: Metric) -> None:
            if metric.value == "refused":
                raise InvalidMetric("value 'refused' refused")
            self.limits["max"]  # a KeyError: the bug

    backend = Buggy()
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics(backend)
        metrics.gauge("g", 1)
        metrics.increment("c")
        metrics.event("e", "text")
        with pytest.raises(InvalidMetric):
            metrics.event("e", "refused")  # its own InvalidMetric still goes to the caller
        metrics.close(5)
    assert [m.name for m in backend.metrics] == ["g", "c", "e"]
    assert len([r for r in caplog.records if "Buggy.check raised KeyError" in r.message]) == 1


def test_only_false_itself_drops_a_metric_in_a_filter(plugin: Any) -> None:
    class Zero:
        @hookimpl
        def kaneda_filter_metric(self, metric: Metric) -> Any:
            return 0 if metric.name == "zero" else (False if metric.name == "no" else None)

    plugin.register(Zero())
    backend = MemoryBackend()
    with Metrics(backend) as metrics:
        for name in ("zero", "no", "yes"):
            metrics.gauge(name, 1)
    assert sorted(m.name for m in backend.metrics) == ["yes", "zero"]
    assert metrics.stats().filtered == 1


def test_a_filter_registered_after_metrics_was_made_applies(plugin: Any) -> None:
    backend = MemoryBackend()
    metrics = Metrics(backend)
    metrics.gauge("before", 1)
    metrics.flush(5)

    class NoDebug:
        @hookimpl
        def kaneda_filter_metric(self, metric: Metric) -> bool:
            return not metric.name.startswith("debug.")

    plugin.register(NoDebug())
    metrics.gauge("debug.noise", 1)
    metrics.gauge("app.load", 1)
    metrics.close(5)
    assert [m.name for m in backend.metrics] == ["before", "app.load"]
    get_plugin_manager()  # the manager is the one the fixture registered with


def test_kaneda_send_masks_the_urls_password_in_a_backends_own_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import cli, config

    class Leaky(Backend):
        password = ""

        @classmethod
        def from_url(cls, url: str, **options: Any) -> Leaky:
            backend = cls()
            backend.password = url.split(":")[2].split("@")[0]
            return backend

        def send(self, batch: Sequence[Metric]) -> None:
            raise RuntimeError(f"auth failed for password {self.password}")

        def close(self) -> None:
            raise RuntimeError("close failed")

    monkeypatch.setattr(config, "load_backend", lambda name: Leaky)
    assert cli.main(["send", "leaky://bob:S3CRETpw@h", "gauge", "g", "1"]) == 1
    said = capsys.readouterr().err
    assert "S3CRETpw" not in said and "auth failed for password ***" in said, said
    assert "closing the backend failed: RuntimeError: close failed" in said


def test_with_a_disk_buffer_too_a_failure_hook_reporting_back_does_not_spin(
    plugin: Any, tmp_path: Path
) -> None:
    metrics = Metrics(Refusing(), flush_interval=0.2, buffer_path=tmp_path / "b.sqlite")
    failed = failures_counted_through(metrics, plugin)
    assert 1 <= failed <= 10, failed
