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


@pytest.mark.parametrize(
    ("text", "advice", "example"),
    [
        ("influxdb//localhost:8086/db", "is missing ':' after 'influxdb'", "influxdb://localhost"),
        ("influxdb:/localhost:8086/db", "is missing '//' after 'influxdb:'", "influxdb://"),
        ("localhost:8086/db", "has no backend name in front", "influxdb://localhost:8086/db "),
        ("127.0.0.1:8086", "has no backend name in front", "influxdb://127.0.0.1:8086/metrics"),
    ],
)
def test_a_malformed_scheme_is_named_with_the_url_it_should_be(
    text: str, advice: str, example: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        connect(text)
    message = str(caught.value) + " "
    assert advice in message
    assert example in message


@pytest.mark.parametrize("url", ["http://localhost:8086/db", "https://localhost:9200/"])
def test_a_transport_alone_is_not_taken_for_a_backend_name(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        connect(url)
    message = str(caught.value)
    assert "names no backend" in message
    assert "https+influxdb://" in message and "elasticsearch+https://" in message


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("redis://localhost:6379/0", "rq://localhost:6379/0"),
        ("amqp://guest:pw@localhost:5672//", "celery+amqp://guest:***@localhost:5672//"),
        ("tcp://localhost:5555", "zmq+tcp://localhost:5555"),
        ("es://localhost:9200/", "elasticsearch://localhost:9200/"),
    ],
)
def test_a_broker_or_server_scheme_points_to_the_backend_that_speaks_it(
    url: str, advice: str
) -> None:
    with pytest.raises(BackendNotFound) as caught:
        connect(url)
    assert advice in str(caught.value)
    assert "pw@" not in str(caught.value)


@pytest.mark.parametrize("text", [" memory", "memory ", "memory://\n", " Memory:// "])
def test_surrounding_whitespace_is_ignored(text: str) -> None:
    assert isinstance(Metrics(text).backend, MemoryBackend)


@pytest.mark.parametrize(
    "path",
    [
        "kaneda.backends.influxbackend",
        "kaneda.backends.INFLUXBACKEND",
        "kaneda_influx.influxbackend",
        "Kaneda.Backends.InfluxBackend",
    ],
)
def test_a_settings_class_path_matches_in_any_case(path: str) -> None:
    from kaneda_core.config import backend_from_settings

    class Settings:
        INFLUX_DATABASE = "app"

    backend = backend_from_settings(path, Settings())
    assert type(backend).__name__ == "InfluxBackend"
    backend.close()


@pytest.mark.parametrize(
    ("path", "advice"),
    [
        ("kaneda.backend.InfluxBackend", "kaneda.backends.InfluxBackend"),
        ("kaneda.backends.InfluxDBBackend", "kaneda.backends.InfluxBackend"),
        ("kaneda.backends.Influx", "kaneda.backends.InfluxBackend"),
        ("no_such_package.Backend", "no module named 'no_such_package'"),
    ],
)
def test_a_wrong_settings_class_path_says_what_exists(path: str, advice: str) -> None:
    from kaneda_core.config import backend_from_settings

    class Settings:
        INFLUX_DATABASE = "app"

    with pytest.raises(ConfigurationError) as caught:
        backend_from_settings(path, Settings())
    message = str(caught.value)
    assert path in message and advice in message


def test_settings_are_the_names_in_the_namespace_s_case_as_in_kaneda_1() -> None:
    from kaneda_core.config import backend_from_settings

    class Settings:
        INFLUX_DATABASE = "app"
        INFLUX_PORT = 8087
        influx_client = object()  # a module's own helper, not a setting

    backend = backend_from_settings("InfluxDB", Settings())
    assert repr(backend) == "<InfluxBackend localhost:8087/app>"
    backend.close()


def test_an_unknown_setting_is_named_with_the_nearest_one() -> None:
    from kaneda_core.config import backend_from_settings

    class Settings:
        INFLUX_DATABASE = "app"
        INFLUX_HOSTNAME = "db.internal"

    with pytest.raises(ConfigurationError) as caught:
        backend_from_settings("kaneda.backends.InfluxBackend", Settings())
    message = str(caught.value)
    assert "INFLUX_HOSTNAME" in message and "Did you mean INFLUX_HOST?" in message


def test_kaneda_url_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANEDA_URL", "MEMORY://")
    assert isinstance(Metrics().backend, MemoryBackend)


def test_install_advice_leads_with_the_command_that_works_from_a_clone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kaneda_core import registry

    monkeypatch.setattr(registry, "_entry_points", lambda: {})
    with pytest.raises(BackendNotFound) as caught:
        registry.load_backend("influxdb-missing-test")
    advice = registry.install_advice("influxdb")
    assert "Install it with: pip install . ./plugins/kaneda-influx at the root of a clone" in advice
    assert "pip install kaneda-influx once it is published" in advice
    assert "installed: none" in str(caught.value)


def test_numbers_read_from_the_environment_into_settings_work_as_in_kaneda_1() -> None:
    from kaneda_core.config import backend_from_settings

    class Settings:
        INFLUX_DATABASE = "app"
        INFLUX_PORT = "8087"  # INFLUX_PORT = os.environ["INFLUX_PORT"]
        INFLUX_TIMEOUT = "1.5"

    backend = backend_from_settings("kaneda.backends.InfluxBackend", Settings())
    assert repr(backend) == "<InfluxBackend localhost:8087/app>"
    backend.close()

    class Wrong:
        INFLUX_DATABASE = "app"
        INFLUX_PORT = "eighty"

    with pytest.raises(ConfigurationError, match="port must be an int or None, got 'eighty'"):
        backend_from_settings("kaneda.backends.InfluxBackend", Wrong())


@pytest.mark.parametrize(
    ("option", "advice"),
    [("batchsize", "Did you mean 'batch_size'?"), ("timeout", "go in the URL's query")],
)
def test_connect_refuses_an_option_metrics_does_not_take(option: str, advice: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        connect("memory://", **{option: 5})
    assert f"no option {option!r}" in str(caught.value) and advice in str(caught.value)


def test_a_class_path_suggestion_is_a_class_not_a_submodule() -> None:
    import kaneda.backends.influxdb  # noqa: F401 - a submodule, now an attribute too
    from kaneda_core.config import backend_from_settings

    with pytest.raises(ConfigurationError, match=r"Did you mean 'kaneda\.backends\.InfluxBackend'"):
        backend_from_settings("kaneda.backends.Influx", object())
