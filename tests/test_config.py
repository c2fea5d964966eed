"""connect(), create_backend(), KANEDA_URL and the settings module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaneda_core import ConfigurationError, Metrics, connect, create_backend
from kaneda_core.backends import LoggerBackend, MemoryBackend
from kaneda_core.config import backend_name
from kaneda_core.redact import redact_url


@pytest.fixture
def settings_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write a settings module: ``settings_module('name', 'BACKEND = ...')``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("KANEDA_URL", raising=False)
    written: list[str] = []

    def write(name: str, body: str) -> None:
        (tmp_path / f"{name}.py").write_text(body)
        written.append(name)

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("influxdb://u:p@h:8086/db", "influxdb"),
        ("https+influxdb://h/db", "influxdb"),
        ("elasticsearch+https://h:9200/", "elasticsearch"),
        ("mongodb+srv://cluster/db", "mongodb"),
        ("logger:///var/log/m.jsonl", "logger"),
        ("MEMORY://", "memory"),
    ],
)
def test_the_scheme_names_the_backend(url: str, name: str) -> None:
    assert backend_name(url) == name


def test_connect_returns_metrics_with_options() -> None:
    with connect("memory://", batching=False) as metrics:
        metrics.increment("x")
        assert len(metrics.backend.metrics) == 1  # type: ignore[attr-defined]


def test_connect_logger_url_writes_to_the_path(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    with connect(f"logger://{path}") as metrics:
        metrics.gauge("g", 2)
    assert '"name":"g"' in path.read_text()


def test_create_backend_by_name_with_arguments(tmp_path: Path) -> None:
    backend = create_backend("logger", filename=str(tmp_path / "x.jsonl"))
    assert isinstance(backend, LoggerBackend) and backend.filename.endswith("x.jsonl")


def test_url_query_options_are_converted_and_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown option 'colour'.*accepted"):
        create_backend("memory://?colour=red")


def test_not_a_url() -> None:
    with pytest.raises(ConfigurationError, match="not a Kaneda URL"):
        create_backend("://nothing")


def test_kaneda_url_configures_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANEDA_URL", "memory://")
    assert isinstance(Metrics().backend, MemoryBackend)


def test_settings_module_configures_metrics(
    settings_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_module(
        "kaneda_test_settings",
        "BACKEND = 'kaneda.backends.LoggerBackend'\n"
        f"LOGGER_FILENAME = {str(tmp_path / 's.jsonl')!r}\n",
    )
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "kaneda_test_settings")
    metrics = Metrics()
    assert isinstance(metrics.backend, LoggerBackend)
    assert metrics.backend.filename == str(tmp_path / "s.jsonl")


def test_settings_module_may_name_a_backend(
    settings_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_module("kaneda_named_settings", "BACKEND = 'memory'\n")
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "kaneda_named_settings")
    assert isinstance(Metrics().backend, MemoryBackend)


@pytest.mark.parametrize(
    ("backend", "what"),
    [
        ("'kaneda.backends'", "a module"),
        ("'collections.OrderedDict'", "collections.OrderedDict"),
        ("'os.path.join'", "a function"),
        ("'kaneda_core.backend.Backend'", "the abstract class kaneda_core.backend.Backend"),
        ("__import__('collections').OrderedDict", "collections.OrderedDict"),
    ],
)
def test_a_settings_backend_that_is_no_backend_class_is_refused_naming_it(
    settings_module: Any, monkeypatch: pytest.MonkeyPatch, backend: str, what: str
) -> None:
    settings_module("kaneda_not_a_backend_settings", f"BACKEND = {backend}\n")
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "kaneda_not_a_backend_settings")
    with pytest.raises(ConfigurationError) as caught:
        Metrics()
    message = str(caught.value)
    assert message.startswith("BACKEND = ") and what in message, message
    assert "not a backend class" in message and "kaneda_core.Backend" in message, message


def test_kaneda_url_wins_over_settings(
    settings_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_module("kaneda_loser_settings", "BACKEND = 'kaneda.backends.LoggerBackend'\n")
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "kaneda_loser_settings")
    monkeypatch.setenv("KANEDA_URL", "memory://")
    assert isinstance(Metrics().backend, MemoryBackend)


def test_nothing_configured_explains_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KANEDA_URL", raising=False)
    monkeypatch.delenv("KANEDA_SETTINGS_MODULE", raising=False)
    sys.modules.pop("kanedasettings", None)
    with pytest.raises(ConfigurationError) as caught:
        Metrics()
    message = str(caught.value)
    assert "KANEDA_URL" in message and "kanedasettings" in message and "BACKEND" in message


def test_a_named_settings_module_that_is_missing_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KANEDA_URL", raising=False)
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "no_such_settings_module")
    with pytest.raises(ConfigurationError, match="no_such_settings_module"):
        Metrics()


@pytest.mark.parametrize(
    "url",
    [
        "influxdb://admin:s3cr3t-pw@db.example:8086/metrics",
        "elasticsearch+https://elastic:s3cr3t-pw@[::1]:9200/?index_name=k",
    ],
)
def test_redact_url_hides_the_password(url: str) -> None:
    redacted = redact_url(url)
    assert "s3cr3t-pw" not in redacted and "***" in redacted
    assert "8086" in redacted or "9200" in redacted


def test_secrets_in_a_url_never_reach_an_error_message() -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_backend("memory://user:s3cr3t-pw@host/?bad=1")
    assert "s3cr3t-pw" not in str(caught.value)
