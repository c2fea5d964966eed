"""Typos get advice: the nearest installed name, a missing scheme, any letter case."""

from __future__ import annotations

import pytest

from kaneda_core import BackendNotFound, ConfigurationError, Metrics, connect, create_backend
from kaneda_core.backends import LoggerBackend, MemoryBackend


@pytest.mark.parametrize(
    ("url", "suggested"),
    [
        ("influxd://localhost:8086/metrics", "influxdb"),
        ("mongdb://localhost/metrics", "mongodb"),
        ("elastisearch://localhost:9200/", "elasticsearch"),
        ("memroy://", "memory"),
    ],
)
def test_a_misspelt_scheme_suggests_the_nearest_name(url: str, suggested: str) -> None:
    with pytest.raises(BackendNotFound) as caught:
        connect(url)
    assert f"Did you mean {suggested!r}?" in str(caught.value)


def test_a_name_far_from_any_gets_no_suggestion_but_the_list() -> None:
    with pytest.raises(BackendNotFound) as caught:
        create_backend("zzzz")
    assert "Did you mean" not in str(caught.value)
    assert "installed: " in str(caught.value) and "memory" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "advice"),
    [
        ("localhost:8086", "has no backend name in front"),
        ("localhost:8086/metrics", "has no backend name in front"),
        ("logger:metrics.jsonl", "is missing '//' after 'logger:'"),
        ("memory:", "is missing '//' after 'memory:'"),
        ("/var/log/metrics.jsonl", "is neither a backend name nor a URL"),
    ],
)
def test_a_missing_scheme_is_named_as_such(text: str, advice: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Metrics(text)
    message = str(caught.value)
    assert advice in message
    assert "://" in message  # an example of what works


def test_logger_without_slashes_shows_the_logger_example() -> None:
    with pytest.raises(ConfigurationError, match=r"logger:///var/log/metrics\.jsonl"):
        connect("logger:metrics.jsonl")


@pytest.mark.parametrize("name", ["InfluxDB", "INFLUXDB", "influxDB"])
def test_names_match_in_any_case_as_urls_do(name: str) -> None:
    by_name = create_backend(name, database="m")
    by_url = create_backend(f"{name}://localhost:8086/m")
    assert type(by_name) is type(by_url)
    assert type(by_name).__name__ == "InfluxBackend"
    by_name.close()
    by_url.close()


def test_metrics_by_a_capitalised_built_in_name() -> None:
    assert isinstance(Metrics("Memory").backend, MemoryBackend)
    assert isinstance(create_backend("LOGGER"), LoggerBackend)
