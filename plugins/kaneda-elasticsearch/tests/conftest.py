"""Fixtures: a fake Elasticsearch on a loopback port, or the real one when given."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_elasticsearch import FakeElasticsearch


@pytest.fixture
def fake_es() -> Iterator[FakeElasticsearch]:
    """A local HTTP server speaking the Elasticsearch endpoints the plugin uses."""
    server = FakeElasticsearch()
    yield server
    server.stop()


class _Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[list[object], BaseException]] = []

    from kaneda_core.hookspecs import hookimpl

    @hookimpl
    def kaneda_batch_failed(self, metrics: object, error: BaseException, backend: object) -> None:
        self.seen.append((list(metrics), error))  # type: ignore[call-overload]


@pytest.fixture
def failures() -> Iterator[_Failures]:
    """Records what the kaneda_batch_failed hook is told."""
    from kaneda_core.plugins import get_plugin_manager

    recorder = _Failures()
    get_plugin_manager().register(recorder)
    yield recorder
    get_plugin_manager().unregister(recorder)
