"""Django configured once for these tests (a small project in kaneda_test_project/)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import django  # noqa: E402 - after the project folder is on sys.path
from django.conf import settings  # noqa: E402

# What every test starts from; tests change it with django.test.override_settings.
TEST_SETTINGS: dict[str, Any] = {
    "SECRET_KEY": "kaneda-tests-only",
    "DEBUG": False,
    "ALLOWED_HOSTS": ["testserver"],
    "ROOT_URLCONF": "kaneda_test_project.urls",
    "INSTALLED_APPS": ["django_kaneda"],
    "MIDDLEWARE": ["django_kaneda.middleware.MetricsMiddleware"],
    "DATABASES": {},
    "USE_TZ": True,
    "LOGGING_CONFIG": None,
    "KANEDA_URL": "memory://",
    "KANEDA_OPTIONS": {"batching": False},  # stored before the response returns
}

if not settings.configured:
    settings.configure(**TEST_SETTINGS)
    django.setup()

INFLUX_TESTS = HERE.parents[1] / "kaneda-influx" / "tests"


@pytest.fixture
def fresh_metrics() -> Iterator[Any]:
    """A new ``django_kaneda.metrics``, built from the settings of this test, closed after."""
    import django_kaneda

    lazy = django_kaneda.LazyMetrics()
    # Set by hand: monkeypatch.setattr looks at the value (isinstance), which would build
    # the lazy object now, from the settings before the test changes them.
    saved = django_kaneda.metrics
    django_kaneda.metrics = lazy
    try:
        yield lazy
    finally:
        django_kaneda.metrics = saved
        if lazy._wrapped is not django.utils.functional.empty:
            lazy.close()


@pytest.fixture(scope="session")
def influx_server() -> Iterator[Any]:
    """One influxd for this folder's server run, on free loopback ports, deleted after."""
    sys.path.insert(0, str(INFLUX_TESTS))
    from influx_server import InfluxServer

    server = InfluxServer()
    server.start()
    yield server
    server.destroy()
