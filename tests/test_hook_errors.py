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
