"""kaneda 1.0 code, unchanged, on kaneda-core: BaseBackend.report, Metrics, utils, settings."""

from __future__ import annotations

import sys
import threading
import time
import types
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import kaneda
import kaneda_core
from kaneda import Metrics
from kaneda.backends import BaseBackend, LoggerBackend
from kaneda.exceptions import ImproperlyConfigured, SettingsError, UnexistingKanedaClass
from kaneda.queues import BaseQueue
from kaneda.utils import (
    get_backend,
    get_kaneda_objects,
    get_object_from_settings,
    get_settings,
    import_class,
)
from kaneda_core import KanedaError

RECORDING = Path(__file__).parent / "kaneda1" / "recording_backend"


class DummyBackend(BaseBackend):
    """kaneda 1.0's own test backend, as its users wrote theirs."""

    settings_namespace = "DUMMY"

    def __init__(self, prefix: str = "", fail_on: str | None = None) -> None:
        self.prefix = prefix
        self.fail_on = fail_on
        self.reported_data: dict[str, Any] = {}
        self.calls: list[tuple[Any, ...]] = []

    def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
        if name == self.fail_on:
            raise ValueError(f"cannot store {name}")
        payload = self._get_payload(name, value, tags)
        payload["metric"] = metric
        self.reported_data[name] = payload
        self.calls.append((name, metric, value, tags, id_, threading.current_thread().name))


def settings_module(**values: Any) -> types.ModuleType:
    module = types.ModuleType("kanedasettings_for_test")
    for key, value in values.items():
        setattr(module, key, value)
    return module


# -- BaseBackend -----------------------------------------------------------------------


def test_payload_of_a_simple_value_is_1_0s() -> None:
    backend = DummyBackend()
    with mock.patch("socket.gethostname", return_value="test"):
        backend.report(name="test.simple", metric="simple_payload", value=1, tags=None)
    assert backend.reported_data["test.simple"] == {
        "name": "test.simple",
        "metric": "simple_payload",
        "value": 1,
        "host": "test",
    }


def test_payload_of_a_dict_value_merges_its_keys_and_keeps_list_tags() -> None:
    backend = DummyBackend()
    with mock.patch("socket.gethostname", return_value="test"):
        backend.report(
            name="test.structured",
            metric="structured_payload",
            value={"val0": 1, "val2": "str", "val3": [1, 2]},
            tags=["tag1", "tags2"],
        )
    assert backend.reported_data["test.structured"] == {
        "name": "test.structured",
        "metric": "structured_payload",
        "val0": 1,
        "val2": "str",
        "val3": [1, 2],
        "host": "test",
        "tags": ["tag1", "tags2"],
    }


def test_host_name_is_asked_when_called_so_patching_works() -> None:
    backend = DummyBackend()
    with mock.patch("socket.gethostname", return_value="first"):
        assert backend._get_host_name() == "first"
    with mock.patch("socket.gethostname", return_value="second"):
        assert backend._get_payload("n", 1, None)["host"] == "second"


def test_a_backend_without_report_says_so() -> None:
    class Incomplete(BaseBackend):
        pass

    with pytest.raises(NotImplementedError, match="Incomplete must implement report"):
        Incomplete().report("n", "gauge", 1, None)


def test_kaneda_metrics_reports_before_the_call_returns_in_the_callers_thread() -> None:
    backend = DummyBackend()
    metrics = Metrics(backend=backend)
    metrics.gauge("users.notifications", 13, tags=["new_message", "follow_request"])
    assert backend.calls == [
        (
            "users.notifications",
            "gauge",
            13,
            ["new_message", "follow_request"],
            None,
            threading.current_thread().name,
        ),
    ]
    metrics.increment("user.profile.views")
    metrics.decrement("hotel.occupation")
    metrics.timing("hotel.availability.request_time", 4)
    metrics.event("user.signup", "New user registered")
    metrics.custom("hotel.response_data", metric="xml", value={"status": "ok"}, id_="2B75D750")
    assert [c[:5] for c in backend.calls[1:]] == [
        ("user.profile.views", "counter", 1, None, None),
        ("hotel.occupation", "counter", -1, None, None),
        ("hotel.availability.request_time", "timing", 4, None, None),
        ("user.signup", "event", "New user registered", None, None),
        ("hotel.response_data", "xml", {"status": "ok"}, None, "2B75D750"),
    ]


def test_batching_on_demand_calls_report_once_per_metric_in_order_in_the_worker() -> None:
    backend = DummyBackend()
    metrics = Metrics(backend=backend, batching=True, flush_interval=60)
    for i in range(50):
        metrics.gauge(f"g{i}", i)
    assert backend.calls == []  # queued, not yet reported
    assert metrics.flush(10) == 0
    assert [c[0] for c in backend.calls] == [f"g{i}" for i in range(50)]
    assert {c[5] for c in backend.calls} == {"kaneda-worker"}
    metrics.close()


def test_kaneda_core_metrics_batches_a_1_0_backend() -> None:
    backend = DummyBackend()
    with kaneda_core.Metrics(backend, batch_size=10) as metrics:
        for i in range(25):
            metrics.increment("c", tags={"i": str(i)})
    assert [c[3] for c in backend.calls] == [{"i": str(i)} for i in range(25)]


def test_a_failing_report_is_handled_like_any_backend_failure(
    failures: Any, caplog: pytest.LogCaptureFixture
) -> None:
    backend = DummyBackend(fail_on="bad")
    metrics = Metrics(backend=backend)
    metrics.gauge("good", 1)
    metrics.gauge("bad", 2)  # must not raise
    metrics.gauge("after", 3)
    assert [c[0] for c in backend.calls] == ["good", "after"]
    stats = metrics.stats()
    assert (stats.sent, stats.failed) == (2, 1)
    [(lost, error)] = failures.failures
    assert [m.name for m in lost] == ["bad"] and "cannot store bad" in str(error)
    assert "cannot store bad" in caplog.text


def test_a_bool_gauge_or_timing_reaches_a_1_0_backend_as_given() -> None:
    backend = DummyBackend()
    metrics = Metrics(backend=backend)
    metrics.gauge("maintenance.on", True, tags={"site": "eu"})
    metrics.timing("cache.hit", False)
    assert [c[:4] for c in backend.calls] == [
        ("maintenance.on", "gauge", True, {"site": "eu"}),
        ("cache.hit", "timing", False, None),
    ]


def test_a_bool_gauge_is_refused_where_it_would_not_be_stored_as_1_0_stored_it() -> None:
    class DummyQueue(BaseQueue):
        def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
            raise AssertionError("a bool must not reach a queue: its workers refuse it")

    # This version's layout, and a queue (this version's workers validate numbers).
    for metrics in (
        Metrics(backend=LoggerBackend(layout="kaneda2")),
        Metrics(queue=DummyQueue()),
        Metrics(backend=DummyBackend(), batching=True, aggregate=True),
    ):
        with pytest.raises(kaneda_core.InvalidMetric, match="must be a number"):
            metrics.gauge("maintenance.on", True)
        with pytest.raises(kaneda_core.InvalidMetric, match="must be a number"):
            metrics.timing("cache.hit", False)
        metrics.close()


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "message"),
    [
        ("gauge", ["queue.size", None], {}, "value must be a number"),
        ("event", ["deploy", None], {}, "must be a string"),
        ("custom", ["c", "kind", {"a": None}], {}, r"value\['a'\] must be"),
        ("gauge", ["g", 1], {"tags": {"user": None}}, r"tags\['user'\] must be"),
        ("gauge", ["", 1], {}, "name must be a non-empty string"),
        ("gauge", [123, 1], {}, "name must be a non-empty string"),
        ("gauge", ["g", 1], {"tags": {1: "x"}}, "tag keys must be non-empty strings"),
        ("custom", ["c", "kind", 1], {"id_": ""}, "id_ must be a non-empty string"),
    ],
)
def test_what_1_0_passed_on_and_kaneda_refuses_at_the_call(
    method: str, args: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    # kaneda 1.0 handed any of these to its backend (see the migration guide).
    backend = DummyBackend()
    with pytest.raises(kaneda_core.InvalidMetric, match=message):
        getattr(Metrics(backend=backend), method)(*args, **kwargs)
    assert backend.calls == []


def test_a_backend_may_mutate_what_it_is_given_without_harm() -> None:
    class Mutating(BaseBackend):
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
            tags["host"] = "mutated"  # kaneda 1.0's InfluxBackend did this
            value["name"] = name
            self.seen.append((tags, value))

    backend = Mutating()
    memory = kaneda_core.Metrics("memory", batching=False)
    tags, value = {"k": "v"}, {"a": 1}
    Metrics(backend=backend).custom("n", "kind", value, tags=tags)
    memory.custom("n", "kind", value, tags=tags)
    assert tags == {"k": "v"} and value == {"a": 1}


# -- Metrics from settings, queues ----------------------------------------------------


def test_metrics_without_arguments_reads_the_settings_module() -> None:
    settings = settings_module(BACKEND=DummyBackend, DUMMY_PREFIX="app.")
    with mock.patch("kaneda.utils.get_settings", return_value=settings):
        metrics = Metrics()
    assert isinstance(metrics.backend, DummyBackend) and metrics.backend.prefix == "app."


def test_metrics_without_settings_gives_1_0s_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "no_such_kaneda_settings")
    with pytest.raises(SettingsError, match=r"^Define backend or queue settings"):
        Metrics()


def test_a_queue_that_is_not_a_queue_is_refused_clearly() -> None:
    with pytest.raises(KanedaError, match=r"queue must be a Kaneda queue.*got <object"):
        Metrics(queue=object())


def test_queue_in_settings_builds_the_queue_from_its_namespace() -> None:
    class DummyQueue(BaseQueue):
        settings_namespace = "DUMMYQ"

        def __init__(self, queue_name: str = "") -> None:
            self.queue_name = queue_name
            self.reported: list[tuple[Any, ...]] = []

        def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
            self.reported.append((name, metric, value, tags, id_))

    settings = settings_module(QUEUE=DummyQueue, DUMMYQ_QUEUE_NAME="metrics")
    with mock.patch("kaneda.utils.get_settings", return_value=settings):
        backend, queue = get_kaneda_objects()
        metrics = Metrics()
    assert backend is None and isinstance(queue, DummyQueue) and queue.queue_name == "metrics"
    assert metrics.queue is not None and metrics.queue.queue_name == "metrics"  # type: ignore[attr-defined]
    metrics.gauge("g", 3)
    assert metrics.queue.reported == [("g", "gauge", 3, None, None)]  # type: ignore[attr-defined]


def test_a_backend_wins_over_a_queue_as_in_kaneda_1() -> None:
    backend = DummyBackend()
    queue = DummyBackend()
    metrics = Metrics(backend=backend, queue=queue)
    metrics.increment("hits")
    assert metrics.queue is None and len(backend.calls) == 1 and queue.calls == []


def test_a_queue_class_whose_plugin_is_missing_gives_install_advice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kaneda.queues

    monkeypatch.setitem(
        kaneda.queues.PLUGIN_CLASSES, "RQQueue", ("kaneda_rq_not_installed.legacy", "rq")
    )
    with pytest.raises(
        ImportError,
        match=r"not installed\. Install it with: pip install \. \./plugins/kaneda-rq at the root",
    ):
        kaneda.queues.RQQueue  # noqa: B018
    settings = settings_module(QUEUE="kaneda.queues.RQQueue")
    with (
        mock.patch("kaneda.utils.get_settings", return_value=settings),
        pytest.raises(UnexistingKanedaClass, match="pip install kaneda-rq"),
    ):
        get_kaneda_objects()


def test_kaneda_1_task_modules_name_the_plugin_to_install() -> None:
    from kaneda.queues import plugin_module

    with pytest.raises(ImportError, match=r"kaneda.tasks.rq is provided by a plugin that is not"):
        plugin_module("kaneda_rq_not_installed.legacy", "rq", "kaneda.tasks.rq")
    assert plugin_module("kaneda_rq.legacy", "rq", "kaneda.tasks.rq").report is not None


# -- utils and exceptions -------------------------------------------------------------


def test_import_class_returns_callables_and_resolves_paths() -> None:
    assert import_class(DummyBackend) is DummyBackend
    assert import_class("kaneda.backends.LoggerBackend") is LoggerBackend
    assert import_class("kaneda_core.backends.memory.MemoryBackend").__name__ == "MemoryBackend"


def test_import_class_of_an_installed_plugin_is_its_kaneda1_subclass() -> None:
    from kaneda_influx import InfluxBackend

    face = import_class("kaneda.backends.InfluxBackend")
    assert issubclass(face, InfluxBackend) and face.__name__ == "InfluxBackend"
    assert import_class("kaneda.backends.influxdb.InfluxBackend") is face
    assert kaneda.backends.InfluxBackend is face  # one class, whichever the path
    assert face(database="m", host="127.0.0.1", port=1).layout.name == "kaneda1"
    assert face(database="m", port=1, layout="kaneda2").layout.name == "kaneda2"
    assert InfluxBackend(database="m").layout.name == "kaneda2"


def test_get_object_from_settings_builds_from_namespaced_settings() -> None:
    settings = settings_module(DUMMY_PREFIX="p.", DUMMY_FAIL_ON="x", OTHER_THING=1)
    backend = get_object_from_settings(DummyBackend, settings)
    assert (backend.prefix, backend.fail_on) == ("p.", "x")


def test_get_object_from_settings_with_an_unexisting_class() -> None:
    with pytest.raises(UnexistingKanedaClass, match="does not exists"):
        get_object_from_settings("kaneda.backends.NopeBackend", settings_module())


@pytest.mark.parametrize(
    "path", ["kaneda.backends.loggerbackend", "Kaneda.Backends.LoggerBackend", " logger "]
)
def test_a_settings_backend_in_any_case_or_by_name_is_found_as_by_kaneda_core(
    path: str, tmp_path: Path
) -> None:
    settings = settings_module(BACKEND=path, LOGGER_FILENAME=str(tmp_path / "m.jsonl"))
    with mock.patch("kaneda.utils.get_settings", return_value=settings):
        metrics = Metrics()
    assert type(metrics.backend).__name__ == "LoggerBackend"
    metrics.close()


@pytest.mark.parametrize(
    ("setting", "path", "advice"),
    [
        (
            "BACKEND",
            "kaneda.backends.LogerBackend",
            "Did you mean 'kaneda.backends.LoggerBackend'?",
        ),
        (
            "BACKEND",
            "kaneda.backend.LoggerBackend",
            "Did you mean 'kaneda.backends.LoggerBackend'?",
        ),
        ("BACKEND", "kaneda", "No Kaneda backend named 'kaneda'"),
        ("BACKEND", "", "''"),
        ("BACKEND", "kaneda.backends", "names a module (kaneda.backends), not a backend class"),
        ("QUEUE", "kaneda.queues.RQQueu", "QUEUE = 'kaneda.queues.RQQueu'"),
    ],
)
def test_a_wrong_settings_class_path_keeps_1_0s_error_and_says_what_exists(
    setting: str, path: str, advice: str
) -> None:
    settings = settings_module(**{setting: path})
    with (
        mock.patch("kaneda.utils.get_settings", return_value=settings),
        pytest.raises(UnexistingKanedaClass) as caught,
    ):
        Metrics()
    message = str(caught.value)
    assert message.startswith("The selected BACKEND or QUEUE class does not exists."), message
    assert advice in message, message


def test_import_class_finds_a_class_in_any_case_and_names_a_wrong_path() -> None:
    assert import_class("kaneda.backends.loggerbackend") is LoggerBackend
    advice = r"Did you mean 'kaneda\.backends\.LoggerBackend'"
    with pytest.raises(UnexistingKanedaClass, match=advice):
        import_class("kaneda.backends.LogerBackend")
    with pytest.raises(ImportError, match="'kaneda'"):
        import_class("kaneda")


@pytest.mark.parametrize("function", [get_backend, get_kaneda_objects])
@pytest.mark.parametrize(("settings", "first_word"), [(None, "Define"), (settings_module(), "You")])
def test_retrieval_functions_with_1_0s_errors(
    function: Any, settings: Any, first_word: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if settings is None:
        monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "no_such_kaneda_settings")
        with pytest.raises(SettingsError) as caught:
            function()
    else:
        with (
            mock.patch("kaneda.utils.get_settings", return_value=settings),
            pytest.raises(SettingsError) as caught,
        ):
            function()
    assert str(caught.value).startswith(first_word)


def test_get_settings_imports_the_named_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_kaneda_settings.py").write_text("BACKEND = 'kaneda.backends.LoggerBackend'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "my_kaneda_settings")
    assert get_settings().BACKEND == "kaneda.backends.LoggerBackend"
    assert isinstance(get_backend(), LoggerBackend)
    sys.modules.pop("my_kaneda_settings", None)


def test_exceptions_are_1_0s_and_kaneda_errors() -> None:
    assert issubclass(ImproperlyConfigured, ImportError)
    assert issubclass(UnexistingKanedaClass, ImportError)
    for error in (ImproperlyConfigured, UnexistingKanedaClass, SettingsError):
        assert issubclass(error, KanedaError)


@pytest.mark.parametrize(
    ("class_name", "namespace"),
    [
        ("InfluxBackend", "INFLUX"),
        ("LoggerBackend", "LOGGER"),
        ("ElasticsearchBackend", "ELASTIC"),
        ("MongoBackend", "MONGO"),
        ("RethinkBackend", "RETHINK"),
    ],
)
def test_classes_keep_1_0s_settings_namespace(class_name: str, namespace: str) -> None:
    assert getattr(kaneda.backends, class_name).settings_namespace == namespace


# -- missing plugins ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "distribution"),
    [
        ("ElasticsearchBackend", "kaneda-elasticsearch"),
        ("MongoBackend", "kaneda-mongo"),
        ("RethinkBackend", "kaneda-rethink"),
        ("InfluxBackend", "kaneda-influx"),
    ],
)
def test_a_missing_plugin_gives_install_advice(
    class_name: str, distribution: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import registry

    name = kaneda.backends.PLUGIN_CLASSES[class_name]

    def missing(wanted: str) -> Any:
        if wanted == name:
            raise kaneda_core.BackendNotFound(f"No Kaneda backend named {wanted!r}.")
        return registry.load_backend(wanted)

    monkeypatch.setattr(registry, "load_backend", missing)
    with pytest.raises(ImportError, match=f"pip install {distribution}"):
        exec(f"from kaneda.backends import {class_name}", {})
    with pytest.raises(UnexistingKanedaClass, match=f"pip install {distribution}"):
        get_object_from_settings(f"kaneda.backends.{class_name}", settings_module())


# -- timed ----------------------------------------------------------------------------


def test_timed_keeps_1_0s_conventions() -> None:
    backend = DummyBackend()
    metrics = Metrics(backend=backend)

    @metrics.timed(use_ms=True)
    def perform_request(params: Any) -> str:
        time.sleep(0.01)
        return "ok"

    assert perform_request({}) == "ok"
    with metrics.timed("request.response_time"):
        pass
    (first, second) = backend.calls
    assert first[0] == f"{__name__}.perform_request" and type(first[2]) is int
    assert first[2] >= 10
    assert second[0] == "request.response_time" and isinstance(second[2], float)


# -- a 1.0-style backend published by a third party ----------------------------------


@pytest.fixture(scope="module")
def recording_installed(install_distribution: Any) -> None:
    install_distribution("kaneda1-recording-backend", RECORDING)


def test_a_published_1_0_backend_loads_by_name_and_by_settings(
    recording_installed: None,
) -> None:
    cls = kaneda_core.load_backend("recording")
    assert issubclass(cls, BaseBackend)
    cls.reported.clear()
    with kaneda_core.connect("recording://?label=web") as metrics:
        metrics.event("deploy", "v2", tags={"env": "prod"})
    [(thread, payload)] = cls.reported
    assert thread == "kaneda-worker"
    assert payload["name"] == "deploy" and payload["value"] == "v2"
    assert payload["tags"] == {"env": "prod"} and payload["metric"] == "event"
    settings = settings_module(BACKEND="kaneda1_recording.RecordingBackend", RECORDING_LABEL="x")
    assert get_object_from_settings(settings.BACKEND, settings).label == "x"


def test_importing_kaneda_leaves_lost_metrics_said_on_stderr() -> None:
    """kaneda 1.0 put a NullHandler on the "kaneda" logger, where Kaneda says what it could
    not deliver: with no logging configured, every loss became silent."""
    import subprocess

    code = (
        "import kaneda\n"
        "from kaneda_core import Metrics\n"
        "m = Metrics('logger:///nonexistent/dir/x.log', batching=False)\n"
        "m.gauge('g', 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "not delivered" in done.stderr, done.stderr
