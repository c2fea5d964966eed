"""``django_kaneda.metrics`` from Django's settings: kaneda 1.0's, and the 2.0 additions."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import django_kaneda
import pytest
from django.test import override_settings
from django_kaneda import LazyMetrics

from kaneda.exceptions import SettingsError, UnexistingKanedaClass
from kaneda_core import ConfigurationError

# kaneda 1.0 settings: no KANEDA_URL, no options (the conftest sets both for the others).
V1 = {"KANEDA_URL": None, "KANEDA_OPTIONS": None}
RECORDING = "kaneda_test_project.backends.RecordingBackend"


def build(**settings: Any) -> Any:
    """A new LazyMetrics, set up under ``settings``."""
    with override_settings(**{**V1, **settings}):
        metrics = LazyMetrics()
        metrics.backend  # noqa: B018 - first use builds it
    return metrics


def test_the_module_level_metrics_is_lazy() -> None:
    lazy = LazyMetrics()
    from django.utils.functional import empty

    assert lazy._wrapped is empty  # nothing built by import or construction
    with override_settings(**V1, KANEDA_BACKEND=RECORDING, KANEDA_RECORDING_HOST="h"):
        lazy.gauge("answer", 42)
    assert lazy._wrapped is not empty
    assert isinstance(django_kaneda.metrics, LazyMetrics)


def test_kaneda_backend_with_its_namespaced_settings_reports_in_the_callers_thread() -> None:
    metrics = build(
        KANEDA_BACKEND=RECORDING, KANEDA_RECORDING_HOST="stats.internal", KANEDA_RECORDING_PORT=1
    )
    backend = metrics.backend
    assert (type(backend).__name__, backend.host, backend.port) == (
        "RecordingBackend",
        "stats.internal",
        1,
    )
    metrics.gauge("answer", 42)
    assert [m.value for m in backend.metrics] == [42]  # stored before the call returned
    assert "sync" in repr(metrics)


def test_kaneda_backend_by_its_1_0_path_gets_1_0_defaults() -> None:
    metrics = build(KANEDA_BACKEND="kaneda.backends.InfluxBackend", KANEDA_INFLUX_HOST="127.0.0.1")
    backend = metrics.backend
    assert type(backend).__name__ == "InfluxBackend"
    assert backend.database == "kaneda"  # 1.0's KANEDA_INFLUX_DATABASE default
    assert backend.client._timeout == 300  # what 1.0's Django code passed
    metrics.close()


def test_debug_mode_logs_to_the_named_logger(caplog: pytest.LogCaptureFixture) -> None:
    metrics = build(KANEDA_DEBUG=True, KANEDA_LOGGER="kaneda.demo", KANEDA_BACKEND=RECORDING)
    assert type(metrics.backend).__name__ == "LoggerBackend"  # debug wins, as in 1.0
    with caplog.at_level(logging.INFO, logger="kaneda.demo"):
        metrics.increment("user_profile.views")
    # kaneda 1.0's record: its payload dict, logged as the message
    [line] = [r.msg for r in caplog.records if r.name == "kaneda.demo"]
    assert isinstance(line, dict)
    assert line["name"] == "user_profile.views" and line["metric"] == "counter"


def test_debug_mode_logs_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "kaneda.log"
    metrics = build(KANEDA_DEBUG=True, KANEDA_LOGGER_FILENAME=str(target))
    metrics.gauge("queue.depth", 3)
    metrics.close()
    # kaneda 1.0's line: asctime - kaneda.backends.logger - {payload}
    _, name, payload = target.read_text().strip().split(" - ", 2)
    assert name == "kaneda.backends.logger"
    assert ast.literal_eval(payload)["value"] == 3


@pytest.mark.parametrize(
    ("text", "logs"),
    [("False", False), ("false", False), ("0", False), ("", False), ("no", False),
     ("True", True), (" true ", True), ("1", True), ("yes", True)],
)  # fmt: skip
def test_debug_read_from_the_environment_is_read_as_a_flag(text: str, logs: bool) -> None:
    # KANEDA_DEBUG = os.environ.get("KANEDA_DEBUG", "False"): "False" is non-empty text.
    metrics = build(KANEDA_DEBUG=text, KANEDA_BACKEND=RECORDING, KANEDA_RECORDING_HOST="h")
    assert (type(metrics.backend).__name__ == "LoggerBackend") is logs


@pytest.mark.parametrize("value", ["maybe", "Flase", 2.5, ["True"]])
def test_debug_neither_yes_nor_no_is_refused_naming_the_setting(value: Any) -> None:
    with pytest.raises(SettingsError, match="KANEDA_DEBUG") as raised:
        build(KANEDA_DEBUG=value, KANEDA_BACKEND=RECORDING)
    assert repr(value) in str(raised.value)


def test_debug_is_off_unless_set() -> None:
    from django_kaneda import settings as legacy

    with override_settings(**V1):
        assert legacy.DEBUG is False
        assert legacy.INFLUX_TIMEOUT == legacy.RETHINK_TIMEOUT == 300  # 1.0's code
        assert legacy.RQ_REDIS_URL is None and legacy.RQ_QUEUE_NAME == "kaneda"
        assert legacy.MONGO_DB_NAME == "kaneda"
    with override_settings(KANEDA_INFLUX_TIMEOUT=0.3):
        assert legacy.INFLUX_TIMEOUT == 0.3
    with pytest.raises(AttributeError):
        legacy.NOT_A_1_0_SETTING  # noqa: B018


def test_kaneda_url_batches_with_kaneda_options(tmp_path: Path) -> None:
    buffer = tmp_path / "kaneda.sqlite"
    metrics = build(KANEDA_URL="memory://", KANEDA_OPTIONS={"buffer_path": str(buffer)})
    assert "batching" in repr(metrics)
    metrics.increment("signups")
    assert metrics.flush(timeout=5) == 0
    assert [m.name for m in metrics.backend.metrics] == ["signups"]
    assert buffer.exists()
    metrics.close()


def test_kaneda_options_can_make_1_0_settings_batch() -> None:
    metrics = build(
        KANEDA_BACKEND=RECORDING, KANEDA_RECORDING_HOST="h", KANEDA_OPTIONS={"batching": True}
    )
    assert "batching" in repr(metrics)
    metrics.close()


def test_the_kaneda_url_environment_variable_is_the_last_resort(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KANEDA_URL", "memory://")
    metrics = build()
    assert type(metrics.backend).__name__ == "MemoryBackend"
    metrics.close()


def test_nothing_configured_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KANEDA_URL", raising=False)
    with pytest.raises(SettingsError) as raised:
        build()
    message = str(raised.value)
    assert message.startswith("You need to set KANEDA_BACKEND or KANEDA_QUEUE on settings.py")
    assert "KANEDA_URL" in message


def test_url_and_backend_together_is_refused_naming_both() -> None:
    with pytest.raises(SettingsError, match="KANEDA_URL and KANEDA_BACKEND"):
        build(KANEDA_URL="memory://", KANEDA_BACKEND=RECORDING)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"batchsize": 10}, "'batchsize'"),
        ({"batch_size": 0}, "KANEDA_OPTIONS: batch_size"),
        ({"buffer_path": "/tmp/x.sqlite", "batching": False}, "KANEDA_OPTIONS: buffer_path"),
        (["batch_size", 10], "KANEDA_OPTIONS must be a dict"),
    ],
)
def test_bad_kaneda_options_are_named(options: Any, named: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build(KANEDA_URL="memory://", KANEDA_OPTIONS=options)
    assert named in str(raised.value)


def test_a_class_path_that_does_not_import_keeps_1_0s_message() -> None:
    with pytest.raises(UnexistingKanedaClass) as raised:
        build(KANEDA_BACKEND="kaneda_test_project.backends.NoSuchBackend")
    assert str(raised.value).startswith("The selected KANEDA_BACKEND class does not exists")
    assert "NoSuchBackend" in str(raised.value)


def test_a_setting_the_class_does_not_take_is_named_without_its_value() -> None:
    with pytest.raises(SettingsError) as raised:
        build(
            KANEDA_BACKEND=RECORDING,
            KANEDA_RECORDING_HOST="h",
            KANEDA_RECORDING_PASWORD="s3cret",  # a typo
        )
    message = str(raised.value)
    assert "KANEDA_RECORDING_PASWORD" in message and "KANEDA_RECORDING_PASSWORD" in message
    assert "s3cret" not in message


def test_a_missing_required_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="needs the setting KANEDA_RECORDING_HOST"):
        build(KANEDA_BACKEND=RECORDING)


def test_a_password_in_kaneda_url_never_shows_in_an_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        build(KANEDA_URL="nosuchbackend://user:s3cret@host:1/db")
    assert "s3cret" not in str(raised.value)


def test_kaneda_queue_is_built_from_its_namespace_and_receives_the_metrics() -> None:
    metrics = build(
        KANEDA_QUEUE="kaneda_test_project.queues.ForwardingQueue",
        KANEDA_TESTQUEUE_REDIS_URL="redis://127.0.0.1:6379/3",
        KANEDA_BACKEND=RECORDING,  # 1.0 let the queue win when both were set
        KANEDA_RECORDING_HOST="h",
    )
    queue = metrics.backend
    assert type(queue).__name__ == "ForwardingQueue"
    assert (queue.redis_url, queue.queue_name) == ("redis://127.0.0.1:6379/3", "kaneda")
    metrics.increment("jobs.done")
    assert [m.name for m in queue.forwarded] == ["jobs.done"]


def test_a_1_0_queue_object_is_handed_to_kaneda_metrics_as_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kaneda

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> str:
        calls.append((args, kwargs))
        return "the Metrics kaneda built"

    monkeypatch.setattr(kaneda, "Metrics", record)
    with override_settings(
        **V1,
        KANEDA_QUEUE="kaneda_test_project.queues.ReportingQueue",
        KANEDA_OLDQUEUE_CONNECTION_URL="tcp://127.0.0.1:5555",
    ):
        from django_kaneda.conf import read_configuration

        assert read_configuration().build_metrics() == "the Metrics kaneda built"
    [(args, kwargs)] = calls
    queue = kwargs.pop("queue")
    assert (type(queue).__name__, queue.connection_url, queue.timeout) == (
        "ReportingQueue",
        "tcp://127.0.0.1:5555",
        300,
    )
    assert args == () and kwargs == {"batching": False}


@pytest.mark.parametrize(
    ("path", "settings", "class_name"),
    [
        (
            "kaneda.queues.CeleryQueue",
            {"KANEDA_CELERY_BROKER": "redis://127.0.0.1:1/0"},
            "CeleryQueue",
        ),
        ("kaneda.queues.RQQueue", {"KANEDA_RQ_REDIS_URL": "redis://127.0.0.1:1/0"}, "RQQueue"),
    ],
)
def test_kaneda_queue_builds_kaneda_1_0s_queue_classes(
    path: str, settings: dict[str, Any], class_name: str
) -> None:
    metrics = build(KANEDA_QUEUE=path, **settings)  # nothing is sent: no broker needed
    assert type(metrics.queue).__name__ == class_name
    assert metrics.backend is metrics.queue
    metrics.close()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"KANEDA_DEBUG": True, "KANEDA_LOGGER": 42}, "KANEDA_LOGGER"),
        ({"KANEDA_DEBUG": True, "KANEDA_LOGGER_FILENAME": 42}, "KANEDA_LOGGER_FILENAME"),
        ({"KANEDA_URL": "nosuchbackend"}, "KANEDA_URL"),
        ({"KANEDA_URL": "influxdb://localhost:notaport/db"}, "KANEDA_URL"),
        (
            {"KANEDA_BACKEND": "kaneda.backends.InfluxBackend", "KANEDA_INFLUX_TIMEOUT": "abc"},
            "KANEDA_INFLUX_TIMEOUT",
        ),
        (
            {"KANEDA_BACKEND": "kaneda.backends.InfluxBackend", "KANEDA_INFLUX_PORT": "8086"},
            "KANEDA_INFLUX_PORT",
        ),
        ({"KANEDA_QUEUE": "kaneda.queues.RQQueue", "KANEDA_RQ_REDIS_URL": "kaneda"}, "KANEDA_RQ"),
        ({"KANEDA_BACKEND": "collections.OrderedDict"}, "KANEDA_BACKEND"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(settings: dict[str, Any], named: str) -> None:
    with pytest.raises((ConfigurationError, TypeError, ValueError)) as raised:
        build(**settings)
    assert named in str(raised.value)


def test_a_bad_value_keeps_the_type_of_error_the_class_raised() -> None:
    from kaneda.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="KANEDA_INFLUX_CLIENT"):
        build(KANEDA_BACKEND="kaneda.backends.InfluxBackend", KANEDA_INFLUX_CLIENT="a string")


def test_a_password_setting_never_shows_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        build(
            KANEDA_BACKEND="kaneda.backends.InfluxBackend",
            KANEDA_INFLUX_PASSWORD="s3cret",
            KANEDA_INFLUX_PORT="not a port",
        )
    assert "KANEDA_INFLUX_PORT" in str(raised.value) and "s3cret" not in str(raised.value)


def test_the_logger_backend_by_class_path_logs_to_stderr_or_its_file(tmp_path: Path) -> None:
    # KANEDA_LOGGER_FILENAME is the LOGGER namespace's FILENAME: the same file as in debug mode.
    metrics = build(KANEDA_BACKEND="kaneda.backends.LoggerBackend")
    assert type(metrics.backend).__name__ == "LoggerBackend"
    target = tmp_path / "metrics.log"
    metrics = build(
        KANEDA_BACKEND="kaneda.backends.LoggerBackend", KANEDA_LOGGER_FILENAME=str(target)
    )
    metrics.increment("signups")
    metrics.close()
    assert "signups" in target.read_text()


def test_rq_defaults_are_the_local_redis_and_the_kaneda_queue() -> None:
    # What a working 1.0 setup used: redis-py then read 1.0's 'kaneda' as the local Redis,
    # and `rqworker kaneda` served the documented queue.
    metrics = build(KANEDA_QUEUE="kaneda.queues.RQQueue")  # nothing is sent: no Redis needed
    queue = metrics.queue.queue
    connection = queue.connection.connection_pool.connection_kwargs
    assert queue.name == "kaneda"
    assert (connection.get("host", "localhost"), connection.get("port", 6379)) == (
        "localhost",
        6379,
    )
    assert connection.get("db", 0) == 0
    metrics.close()
