"""Shared fixtures for the core tests."""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


def install_once(distribution: str, path: Path, *, editable: bool = False) -> None:
    """pip-install the distribution at ``path`` into this environment unless it is there.

    Afterwards the registry finds its entry points (it rescans plugins installed after
    its first lookup) and the hook plugin manager is rebuilt on next use.
    """
    try:
        importlib.metadata.distribution(distribution)
        return
    except importlib.metadata.PackageNotFoundError:
        pass
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    command += ["-e", str(path)] if editable else [str(path)]
    subprocess.run(command, check=True, timeout=300)
    importlib.invalidate_caches()
    from kaneda_core import plugins

    plugins._manager = None


@pytest.fixture(scope="session")
def install_distribution() -> object:
    """:func:`install_once`, for tests that install a distribution of their own."""
    return install_once
