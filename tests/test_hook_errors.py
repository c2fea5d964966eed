"""A hook that raises is logged and ignored: it never stops a Metrics from being created."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from kaneda_core import Backend, Metrics, connect
from kaneda_core.hookspecs import hookimpl


class RegionTags:
    """docs/hooks.md's default tags, in a process where REGION is not set."""

    @hookimpl
    def kaneda_default_tags(self, backend: Backend) -> dict[str, str]:
        return {"service": "shop", "region": os.environ["REGION"]}


class ReleaseTags:
    @hookimpl
    def kaneda_default_tags(self, backend: Backend) -> dict[str, str]:
        return {"release": "2.4.1"}


def test_a_default_tags_hook_that_raises_is_logged_and_left_out(
    plugin: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REGION", raising=False)
    plugin.register(ReleaseTags())
    plugin.register(RegionTags())
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = connect("memory://", batching=False)
    metrics.increment("http.requests", tags={"route": "/"})
    [metric] = metrics.backend.metrics  # type: ignore[attr-defined]
    assert metric.tags == {"release": "2.4.1", "route": "/"}
    [record] = [r for r in caplog.records if "kaneda_default_tags" in r.getMessage()]
    assert "left out" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError


def test_the_same_hook_works_once_its_variable_is_set(
    plugin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGION", "eu-west-1")
    plugin.register(RegionTags())
    metrics = Metrics("memory", batching=False)
    metrics.gauge("g", 1)
    assert metrics.backend.metrics[0].tags == {"service": "shop", "region": "eu-west-1"}  # type: ignore[attr-defined]


class BadTags:
    def __init__(self, tags: object) -> None:
        self.tags = tags

    @hookimpl
    def kaneda_default_tags(self, backend: Backend) -> object:
        return self.tags


@pytest.mark.parametrize("bad", [{"region": None}, ["region:eu"], "eu", {"": "x"}])
def test_a_default_tags_hook_returning_bad_tags_is_logged_and_left_out(
    plugin: Any, caplog: pytest.LogCaptureFixture, bad: object
) -> None:
    plugin.register(ReleaseTags())
    plugin.register(BadTags(bad))
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics("memory", batching=False)
    metrics.increment("x", tags={"route": "/"})
    assert metrics.backend.metrics[0].tags == {"release": "2.4.1", "route": "/"}  # type: ignore[attr-defined]
    [record] = [r for r in caplog.records if "kaneda_default_tags" in r.getMessage()]
    assert "left out" in record.getMessage()


class BrokenFilter:
    @hookimpl
    def kaneda_filter_metric(self, metric: Any) -> bool:
        raise RuntimeError("broken filter")


class HealthFilter:
    @hookimpl
    def kaneda_filter_metric(self, metric: Any) -> bool:
        return metric.name != "health"


def test_a_filter_that_raises_keeps_the_metrics_says_so_once_and_leaves_the_others_their_say(
    plugin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plugin.register(HealthFilter())
    plugin.register(BrokenFilter())
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics("memory", batch_size=1000)
        for _ in range(500):
            metrics.increment("requests")
            metrics.increment("health")
        metrics.flush(5)
    names = [metric.name for metric in metrics.backend.metrics]  # type: ignore[attr-defined]
    assert names == ["requests"] * 500  # kept despite the broken filter; health filtered
    assert metrics.stats().filtered == 500
    lines = [r for r in caplog.records if "kaneda_filter_metric" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "broken filter" in lines[0].getMessage() and "kept" in lines[0].getMessage()
    metrics.close()


class BrokenFailureHook:
    @hookimpl
    def kaneda_batch_failed(self, metrics: Any, error: Any, backend: Any) -> None:
        raise RuntimeError("broken failure hook")


class FailureRecorder:
    def __init__(self) -> None:
        self.told: list[Any] = []

    @hookimpl
    def kaneda_batch_failed(self, metrics: Any) -> None:
        self.told.extend(metrics)


class Refusing(Backend):
    def send(self, batch: Any) -> None:
        raise ValueError("refused for good")


def test_a_failure_hook_that_raises_does_not_keep_the_others_from_being_told(
    plugin: Any, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = FailureRecorder()
    plugin.register(recorder)
    plugin.register(BrokenFailureHook())
    with caplog.at_level(logging.ERROR, logger="kaneda"):
        metrics = Metrics(Refusing(), batching=False)
        metrics.gauge("g", 1)
    assert [metric.name for metric in recorder.told] == ["g"]
    assert any("broken failure hook" in r.getMessage() for r in caplog.records)
