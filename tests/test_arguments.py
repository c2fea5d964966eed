"""Constructor arguments are checked at construction, for every backend, with advice."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kaneda_core import ConfigurationError, Metrics, RetryPolicy, create_backend, load_backend
from kaneda_core.config import backend_from_settings

# name -> (required arguments, {parameter: what it must be})
SPEC: dict[str, tuple[dict[str, Any], dict[str, tuple[type, ...]]]] = {
    "influxdb": (
        {"database": "metrics"},
        {
            "database": (str,),
            "connection_url": (str, type(None)),
            "host": (str, type(None)),
            "port": (int, type(None)),
            "username": (str, type(None)),
            "password": (str, type(None)),
            "timeout": (int, float, type(None)),  # None: the default, as kaneda 1.0 allowed
            "verify_ssl": (bool,),
        },
    ),
    "mongodb": (
        {"db_name": "metrics", "collection_name": "m"},
        {
            "db_name": (str,),
            "collection_name": (str,),
            "connection_url": (str, type(None)),
            "host": (str, type(None)),
            "port": (int, type(None)),
            "timeout": (int,),
            "time_series": (bool,),
            "granularity": (str,),
        },
    ),
    "elasticsearch": (
        {"index_name": "metrics", "app_name": "web"},
        {
            "index_name": (str,),
            "app_name": (str,),
            "port": (int, type(None)),
            "user": (str, type(None)),
            "password": (str, type(None)),
            "timeout": (int, float, type(None)),
            "verify_certs": (bool,),
            "ca_certs": (str, type(None)),
        },
    ),
    "rethinkdb": (
        {"db": "metrics"},
        {
            "db": (str,),
            "host": (str, type(None)),
            "port": (int, type(None)),
            "user": (str, type(None)),
            "password": (str, type(None)),
            "timeout": (int, float, type(None)),
        },
    ),
    "logger": ({}, {"filename": (str, os.PathLike)}),
}

CASES = [(name, parameter) for name, (_, types) in SPEC.items() for parameter in sorted(types)]

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def is_wrong(value: object, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool not in types
    return not isinstance(value, types)


@pytest.mark.parametrize(("name", "parameter"), CASES)
@settings(max_examples=25, deadline=None)
@given(value=ANY_VALUE)
def test_a_wrong_type_is_refused_at_construction_naming_the_parameter(
    name: str, parameter: str, value: object
) -> None:
    required, types = SPEC[name]
    cls = load_backend(name)
    arguments = {**required, parameter: value}
    if not is_wrong(value, types[parameter]):
        return  # a right type: other tests prove construction works
    with pytest.raises(ConfigurationError) as caught:
        cls(**arguments)
    message = str(caught.value)
    assert parameter in message
    if "password" not in parameter:
        assert repr(value)[:20] in message or type(value).__name__ in message


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: load_backend("influxdb")("app", timeout="fast"), "timeout must be a number"),
        (lambda: load_backend("influxdb")("app", port=True), "port must be an int or None"),
        (lambda: load_backend("mongodb")("db", "m", port="27017"), "got '27017' (str)"),
        (lambda: load_backend("mongodb")("db", "m", port=70000), "from 1 to 65535"),
        (lambda: load_backend("rethinkdb")("db", timeout=0), "timeout must be above zero"),
        (
            lambda: load_backend("elasticsearch")("k", "web", connection_url="localhost:9200"),
            "connection_url must start with http:// or https://, got 'localhost:9200'",
        ),
        (
            lambda: load_backend("elasticsearch")("k", "web", host="https://h:92x"),
            "not a number from 1 to 65535",
        ),
    ],
)
def test_each_refusal_names_what_it_got_and_an_example_that_works(
    build: Any, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()
    message = str(caught.value)
    assert expected in message
    assert "For example" in message and "://" in message


def test_a_password_of_the_wrong_type_is_not_shown() -> None:
    with pytest.raises(ConfigurationError, match=r"password must be a string or None, got \*\*\*"):
        load_backend("rethinkdb")("db", password=12345678)


def test_a_connection_url_in_an_error_has_its_password_masked() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_backend("elasticsearch")("k", "web", connection_url="ftp://u:qz7xk9@h:9200")
    assert "qz7xk9" not in str(caught.value) and "ftp://u:***@h:9200" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        ("influxdb", "needs database"),
        ("mongodb", "needs db_name, collection_name"),
        ("elasticsearch", "needs index_name, app_name"),
        ("rethinkdb", "needs db"),
    ],
)
def test_a_backend_by_name_without_its_required_arguments_says_what_it_needs(
    name: str, needs: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Metrics(name)
    message = str(caught.value)
    assert needs in message
    assert f"create_backend({name!r}" in message
    assert f"{name}://" in message or "+https://" in message  # an example URL


def test_an_unknown_argument_suggests_the_nearest_parameter() -> None:
    with pytest.raises(
        ConfigurationError, match=r"takes no argument 'databse'\. Did you mean 'database'"
    ):
        create_backend("influxdb", databse="metrics")


def test_settings_without_a_required_parameter_say_what_is_missing() -> None:
    class Settings:
        INFLUX_HOST = "localhost"

    with pytest.raises(ConfigurationError, match="needs database"):
        backend_from_settings("kaneda.backends.InfluxBackend", Settings())


def test_right_arguments_still_construct() -> None:
    backend = create_backend("influxdb", database="app", host="localhost", port=8086, timeout=1)
    assert repr(backend) == "<InfluxBackend localhost:8086/app>"
    backend.close()


# -- every backend: the refusal names the class, the parameter, what it got, what works ----


@pytest.mark.parametrize(
    ("name", "arguments", "parameter", "got"),
    [
        ("rq", {"timeout": "fast"}, "timeout", "'fast'"),
        ("rq", {"timeout": -1}, "timeout", "-1"),
        ("rq", {"job_timeout": True}, "job_timeout", "True"),
        ("rq", {"retries": -1}, "retries", "-1"),
        ("rq", {"queue_name": ""}, "queue_name", "''"),
        ("rq", {"redis_url": "localhost:6379"}, "redis_url", "'localhost:6379'"),
        ("rq", {"redis_url": 6379}, "redis_url", "6379"),
        ("rq", {"assign_ids": "no"}, "assign_ids", "'no'"),
        ("celery", {"timeout": "fast"}, "timeout", "'fast'"),
        ("celery", {"visibility_timeout": 0}, "visibility_timeout", "0"),
        ("celery", {"broker": "localhost:6379"}, "broker", "'localhost:6379'"),
        ("celery", {"queue_name": 5}, "queue_name", "5"),
        ("zmq", {"timeout": -1}, "timeout", "-1"),
        ("zmq", {"timeout": "30"}, "timeout", "'30'"),
        ("zmq", {"connection_url": "localhost:5555"}, "connection_url", "'localhost:5555'"),
        ("influxdb", {"database": ""}, "database", "''"),
        ("influxdb", {"database": "m", "part_size": 0}, "part_size", "0"),
        ("influxdb", {"database": "m", "timeout": float("inf")}, "timeout", "inf"),
        ("mongodb", {"db_name": "", "collection_name": "m"}, "db_name", "''"),
        ("mongodb", {"db_name": "d", "collection_name": "m", "client": "x"}, "client", "'x'"),
        ("elasticsearch", {"index_name": "", "app_name": "web"}, "index_name", "''"),
        ("elasticsearch", {"index_name": "k", "app_name": "w", "timeout": 1e300}, "timeout", ""),
        ("rethinkdb", {"db": "d", "connection": "x"}, "connection", "'x'"),
        ("rethinkdb", {"db": "d", "timeout": float("inf")}, "timeout", "inf"),
        ("logger", {"logger": 5}, "logger", "5"),
    ],
)
def test_every_backend_refuses_a_bad_argument_naming_it_with_an_example(
    name: str, arguments: dict[str, Any], parameter: str, got: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_backend(name, **arguments)
    message = str(caught.value)
    assert parameter in message and got in message
    assert type(load_backend(name)).__name__ in message or load_backend(name).__name__ in message
    assert "For example" in message and ("://" in message or "=" in message)


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("rq", {"redis_url": "unix:///run/redis.sock", "timeout": 2, "retries": 0}),
        ("rq", {"redis_url": "rediss://:pw@h:6380/1"}),
        ("celery", {"broker": "amqp://u:pw@h:5672//", "timeout": 1}),
        ("celery", {"broker": "memory://"}),
        ("zmq", {"connection_url": "ipc:///tmp/kaneda.sock", "timeout": 0.5}),
        ("logger", {"logger": "app.metrics"}),
    ],
)
def test_queue_and_logger_arguments_that_work_still_construct(
    name: str, arguments: dict[str, Any]
) -> None:
    create_backend(name, **arguments).close()


def test_the_logger_takes_any_object_with_info_as_kaneda_1_did() -> None:
    import logging

    adapter = logging.LoggerAdapter(logging.getLogger("app.metrics"), {"service": "shop"})
    create_backend("logger", logger=adapter).close()


# -- the options of Metrics itself -----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 10.0}, "batch_size"),
        ({"max_buffer": True}, "max_buffer"),
        ({"max_buffer_bytes": -1}, "max_buffer_bytes"),
        ({"batching": "no"}, "batching"),
        ({"aggregate": 1}, "aggregate"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"flush_interval": float("inf")}, "flush_interval"),
        ({"block_timeout": float("nan")}, "block_timeout"),
        ({"exit_timeout": True}, "exit_timeout"),
        ({"overflow": "drop"}, "overflow"),
        ({"buffer_path": 5}, "buffer_path"),
        ({"buffer_path": ""}, "buffer_path"),
        ({"buffer_path": "/tmp/a\0b.sqlite"}, "buffer_path"),
        ({"retry": 3}, "retry"),
        ({"retry": RetryPolicy(attempts=0)}, "retry.attempts"),
        ({"retry": RetryPolicy(initial_delay=-1)}, "retry.initial_delay"),
        ({"retry": RetryPolicy(multiplier=0.5)}, "retry.multiplier"),
        ({"aggregate": True, "percentiles": (50, 200)}, "percentiles"),
        ({"percentiles": (50, 90)}, "percentiles"),
    ],
)
def test_metrics_options_are_checked_naming_the_option_and_a_value_that_works(
    options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Metrics("memory", **options)
    message = str(refused.value)
    assert message.startswith(named) or f"{named}=" in message, message
    assert "for example" in message or "add aggregate=True" in message, message


def test_metrics_options_that_work_are_accepted() -> None:
    metrics = Metrics(
        "memory",
        batch_size=1,
        max_buffer=1,
        max_buffer_bytes=1 << 20,
        flush_interval=0.5,
        block_timeout=0,
        exit_timeout=0,
        overflow="block",
        retry=RetryPolicy(attempts=1, initial_delay=0, jitter=0),
        aggregate=True,
        percentiles=[50, 99.9],
    )
    metrics.close()
