"""Shared fixtures for the core tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kaneda_core.plugins import get_plugin_manager


class Recorder:
    """A hook plugin that records what ``kaneda_batch_failed`` was told."""

    def __init__(self) -> None:
        self.failures: list[tuple[list[object], BaseException]] = []

    from kaneda_core.hookspecs import hookimpl

    @hookimpl
    def kaneda_batch_failed(
        self, metrics: list[object], error: BaseException, backend: object
    ) -> None:
        self.failures.append((list(metrics), error))


@pytest.fixture
def failures() -> Iterator[Recorder]:
    """Registers a recorder of failed batches for the duration of a test."""
    recorder = Recorder()
    manager = get_plugin_manager()
    manager.register(recorder)
    yield recorder
    manager.unregister(recorder)


@pytest.fixture
def plugin() -> Iterator[object]:
    """Register hook implementations for one test: ``plugin.register(obj)``."""
    manager = get_plugin_manager()
    registered: list[object] = []

    class Registrar:
        def register(self, obj: object) -> None:
            manager.register(obj)
            registered.append(obj)

    yield Registrar()
    for obj in registered:
        manager.unregister(obj)
