"""Metrics.forward and the message handler every queue worker delivers through."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kaneda_core import (
    Backend,
    ConfigurationError,
    DeliveryError,
    InvalidMetric,
    Metric,
    Metrics,
    RetryPolicy,
)
from kaneda_core.backends import MemoryBackend
from kaneda_core.cli import main
from kaneda_core.hookspecs import hookimpl
from kaneda_core.message import encode_batch
from kaneda_core.model import timestamp_from_ns
from kaneda_core.worker import (
    MessageHandler,
    Verdict,
    current_handler,
    install_handler,
    kaneda1_url,
    load_queue_backend,
)

ONE_TRY = RetryPolicy(attempts=1)
PAST_NS = 1_600_000_000_123_456_789


def produced(
    name: str, *, host: str = "app-7", id_: str | None = "m-1", ns: int = PAST_NS
) -> Metric:
    """A metric as another process reported it: its own host, time and id."""
    return Metric(name, "gauge", 3.5, {"zone": "eu"}, timestamp_from_ns(ns), host, id_, ns)


class RefusingBackend(MemoryBackend):
    """Refuses for good the metrics named ``refused``; fails for now those named ``down``."""

    def send(self, batch: Sequence[Metric]) -> None:
        refused = [m for m in batch if m.name == "refused"]
        down = [m for m in batch if m.name == "down"]
        super().send([m for m in batch if m.name not in ("refused", "down")])
        if down:
            raise DeliveryError("store unavailable", retryable=True, metrics=down, rejected=refused)
        if refused:
            raise DeliveryError("field type conflict", retryable=False, metrics=refused)


class StrictBackend(MemoryBackend):
    """Refuses, at the call, metrics whose value is not an int."""

    def check(self, metric: Metric) -> None:
        if type(metric.value) is not int:
            raise InvalidMetric(f"value must be an int here, got {metric.value!r}")


# -- Metrics.forward ----------------------------------------------------------------


def test_forward_keeps_the_host_time_and_id_of_the_reporting_process() -> None:
    metrics = Metrics("memory")
    metrics.forward([produced("queue.depth"), produced("other", id_=None)])
    assert metrics.flush(5) == 0
    stored = metrics.backend.metrics  # type: ignore[attr-defined]
    assert stored == [produced("queue.depth"), produced("other", id_=None)]
    assert stored[0].timestamp == datetime(2020, 9, 13, 12, 26, 40, 123456, tzinfo=timezone.utc)


def test_forward_keeps_the_host_through_the_disk_buffer(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    unreachable = Metrics("memory", buffer_path=path)
    unreachable.close()  # nothing queued yet: the file exists
    first = Metrics(RefusingBackend(), buffer_path=path, retry=ONE_TRY, flush_interval=60)
    first.forward([produced("down")])
    first.close(timeout=1)  # the backend was down: the metric stays on disk
    second = Metrics("memory", buffer_path=path)
    assert second.flush(5) == 0
    [metric] = second.backend.metrics  # type: ignore[attr-defined]
    assert (metric.host, metric.epoch_ns, metric.id) == ("app-7", PAST_NS, "m-1")
    second.close()


@pytest.mark.parametrize(
    ("bad", "complaint"),
    [
        (produced("")._replace(name=""), r"forwarded metric 1: name must be a non-empty string"),
        (produced("x")._replace(value=float("nan")), r"forwarded metric 1: value must be a finite"),
        (produced("x")._replace(tags={"": 1}), r"forwarded metric 1: tag keys must be non-empty"),
        (produced("x")._replace(host=""), r"forwarded metric 1: host must be a non-empty string"),
        (produced("x")._replace(id=1.5), r"forwarded metric 1: id_ must be"),
        (("x", "gauge", 1), r"forwarded metric 1: forward\(\) takes Metric records"),
    ],
)
def test_forward_refuses_a_bad_metric_naming_it_and_queues_none(
    bad: object, complaint: str
) -> None:
    metrics = Metrics("memory")
    with pytest.raises(InvalidMetric, match=complaint):
        metrics.forward([produced("good"), bad])  # type: ignore[list-item]
    assert metrics.flush(5) == 0 and metrics.backend.metrics == []  # type: ignore[attr-defined]


def test_forward_applies_the_backends_check_and_the_filters(plugin: object) -> None:
    metrics = Metrics(StrictBackend())
    with pytest.raises(InvalidMetric, match="forwarded metric 0: value must be an int here"):
        metrics.forward([produced("x")])

    class DropSecrets:
        @hookimpl
        def kaneda_filter_metric(self, metric: Metric) -> bool:
            return not metric.name.startswith("secret.")

    plugin.register(DropSecrets())  # type: ignore[attr-defined]
    metrics = Metrics("memory")
    metrics.forward([produced("secret.token"), produced("public")])
    assert metrics.flush(5) == 0
    assert [m.name for m in metrics.backend.metrics] == ["public"]  # type: ignore[attr-defined]
    assert metrics.stats().filtered == 1


# -- the handler's verdicts -----------------------------------------------------------


def handler_on(backend: Backend, **options: object) -> MessageHandler:
    return MessageHandler(Metrics(backend, retry=ONE_TRY, **options))  # type: ignore[arg-type]


def test_a_message_is_stored_only_once_the_backend_has_it() -> None:
    handler = handler_on(MemoryBackend())
    outcome = handler.handle(encode_batch([produced("a"), produced("b", id_="m-2")]))
    assert outcome.verdict is Verdict.STORED and outcome.metrics == 2
    # flushed before the verdict: the backend already holds both
    assert [m.name for m in handler.metrics.backend.metrics] == ["a", "b"]  # type: ignore[attr-defined]
    assert handler.stats.as_dict() == {
        "failed": 0, "messages": 1, "poison": 0, "requeued": 0, "stored": 2,
    }  # fmt: skip
    handler.close()


def test_a_message_the_backend_cannot_take_now_is_put_back() -> None:
    handler = handler_on(RefusingBackend())
    ok, down = handler.handle_many(
        [encode_batch([produced("a")]), encode_batch([produced("down")])]
    )
    assert ok.verdict is Verdict.STORED
    assert down.verdict is Verdict.RETRY and "store unavailable" in down.reason
    assert handler.stats.requeued == 1 and handler.stats.stored == 1
    handler.close()


class DownBackend(MemoryBackend):
    """A store that is down: every send fails for now."""

    def send(self, batch: Sequence[Metric]) -> None:
        raise ConnectionRefusedError("store down")


def test_a_worker_stopping_puts_the_message_at_hand_back_without_waiting_out_retries() -> None:
    """Its retries (here about 60 s) outlasted what docker stop waits (10 s)."""
    import threading
    import time

    patient = RetryPolicy(attempts=30, initial_delay=1.0, max_delay=2.0)
    handler = MessageHandler(Metrics(DownBackend(), retry=patient))
    outcomes = []
    delivering = threading.Thread(
        target=lambda: outcomes.append(handler.handle(encode_batch([produced("a")])))
    )
    delivering.start()
    time.sleep(0.3)  # inside the round, the store down
    asked = time.monotonic()
    handler.stop_waiting()
    delivering.join(5)
    assert not delivering.is_alive() and time.monotonic() - asked < 1.5
    [outcome] = outcomes
    assert outcome.verdict is Verdict.RETRY and "stopping" in outcome.reason
    started = time.monotonic()
    handler.close()
    assert time.monotonic() - started < 3
    assert handler.metrics.stats().failed == 1  # given up here; its message went back


def test_metrics_refused_for_good_are_counted_and_the_message_acknowledged(
    failures: object,
) -> None:
    handler = handler_on(RefusingBackend())
    outcome = handler.handle(encode_batch([produced("refused"), produced("fine", id_="m-2")]))
    assert outcome.verdict is Verdict.STORED and outcome.refused == 1
    assert "field type conflict" in outcome.reason
    assert handler.stats.failed == 1 and handler.stats.stored == 1
    [(metrics, _error)] = failures.failures  # type: ignore[attr-defined]
    assert [m.name for m in metrics] == ["refused"]  # the failure hook heard of it, as always
    handler.close()


def test_rejected_metrics_of_a_retried_batch_do_not_hold_a_message_back() -> None:
    handler = handler_on(RefusingBackend())
    refused, down = handler.handle_many(
        [encode_batch([produced("refused")]), encode_batch([produced("down", id_="m-2")])]
    )
    assert refused.verdict is Verdict.STORED and refused.refused == 1
    assert down.verdict is Verdict.RETRY
    handler.close()


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ("not json", "message is not JSON"),
        ('{"kaneda": 9, "metrics": []}', "newer than this worker reads"),
        (
            encode_batch([produced("x")._replace(value=float("inf"))]).replace("Infinity", "1e999"),
            "finite",
        ),
        (encode_batch([produced("x")._replace(name="")]), "name must be a non-empty string"),
        ('{"kaneda": 1, "metrics": ' + "[" * 100_000 + "]" * 100_000 + "}", "not JSON"),
        (encode_batch([produced("x")._replace(kind=["gauge"])]), "metric must be"),
    ],
)
def test_a_poison_message_is_moved_aside_and_the_next_one_delivered(
    message: str, complaint: str
) -> None:
    handler = handler_on(MemoryBackend())
    poison, good = handler.handle_many([message, encode_batch([produced("good")])])
    assert poison.verdict is Verdict.POISON and complaint in poison.reason
    assert good.verdict is Verdict.STORED
    assert handler.stats.poison == 1 and handler.stats.stored == 1
    assert [m.name for m in handler.metrics.backend.metrics] == ["good"]  # type: ignore[attr-defined]
    handler.close()


def test_the_backends_check_makes_a_message_poison() -> None:
    handler = handler_on(StrictBackend())
    outcome = handler.handle(encode_batch([produced("x")]))
    assert outcome.verdict is Verdict.POISON and "must be an int here" in outcome.reason
    handler.close()


def test_one_metric_the_backend_refuses_does_not_hold_back_the_rest_of_its_message(
    failures: object,
) -> None:
    """A producer's backend (a queue) checks less than the store: the store's check
    refuses one metric of a batch at the worker. The others are stored; the refused one
    is counted and hooked, as a metric the store refused is on the direct path."""
    handler = handler_on(StrictBackend())
    batch = [produced(f"m{i}", id_=f"m-{i}")._replace(value=i) for i in range(5)]
    batch[2] = batch[2]._replace(value=2.5)  # StrictBackend takes ints only
    outcome = handler.handle(encode_batch(batch))
    assert outcome.verdict is Verdict.STORED and outcome.metrics == 5 and outcome.refused == 1
    assert "must be an int here" in outcome.reason
    assert sorted(m.name for m in handler.metrics.backend.metrics) == ["m0", "m1", "m3", "m4"]  # type: ignore[attr-defined]
    assert handler.stats.stored == 4 and handler.stats.failed == 1
    assert handler.metrics.stats().failed == 1
    [(metrics, error)] = failures.failures  # type: ignore[attr-defined]
    assert [m.name for m in metrics] == ["m2"] and isinstance(error, InvalidMetric)
    handler.close()


def test_a_kaneda_1_call_is_stored_at_arrival_and_bad_ones_are_poison() -> None:
    handler = handler_on(MemoryBackend())
    assert (
        handler.handle_legacy("hits", "counter", 1, {"page": "/"}, None).verdict is Verdict.STORED
    )
    bad = handler.handle_legacy("", "gauge", 1, None, None)
    assert bad.verdict is Verdict.POISON and "name must be a non-empty string" in bad.reason
    [short] = handler.handle_legacy_many([("only", "two")])
    assert short.verdict is Verdict.POISON
    [stored] = handler.metrics.backend.metrics  # type: ignore[attr-defined]
    assert (stored.name, stored.value, stored.tags) == ("hits", 1, {"page": "/"})
    handler.close()


def test_kaneda_1_calls_go_through_the_legacy_metrics_and_count_in_the_handlers_stats() -> None:
    legacy_backend = MemoryBackend()
    made: list[Metrics] = []

    def legacy() -> Metrics:
        made.append(Metrics(legacy_backend, retry=ONE_TRY))
        return made[-1]

    handler = MessageHandler(Metrics(MemoryBackend(), retry=ONE_TRY), legacy=legacy)
    assert handler.handle(encode_batch([produced("batch")])).verdict is Verdict.STORED
    assert not made  # made on the first kaneda 1.0 message only
    assert handler.handle_legacy("hits", "counter", 1, None, None).verdict is Verdict.STORED
    assert handler.handle_legacy("", "gauge", 1, None, None).verdict is Verdict.POISON
    assert [m.name for m in legacy_backend.metrics] == ["hits"]
    assert [m.name for m in handler.metrics.backend.metrics] == ["batch"]  # type: ignore[attr-defined]
    assert (handler.stats.messages, handler.stats.stored, handler.stats.poison) == (3, 2, 1)
    assert handler.close() == 0


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("influxdb://h:8086/db", "influxdb://h:8086/db?layout=kaneda1"),
        ("influxdb://h:8086/db?timeout=5", "influxdb://h:8086/db?timeout=5&layout=kaneda1"),
        ("influxdb://h:8086/db?layout=kaneda2", None),  # named: kept
        ("influxdb://h:8086/db?layout=kaneda1", None),
        ("mongodb://h/db?collection_name=m", "mongodb://h/db?collection_name=m&layout=kaneda1"),
        ("logger:///tmp/x.log", "logger:///tmp/x.log?layout=kaneda1"),
        ("memory://", None),  # no layout option
        ("rq://h:6379/0?queue_name=next", None),  # a queue: its own worker decides
        ("nosuchscheme://h/", None),
    ],
)
def test_kaneda_1s_messages_are_stored_in_kaneda_1s_layout_unless_the_url_names_one(
    url: str, expected: str | None
) -> None:
    assert kaneda1_url(url) == expected


def test_with_a_disk_buffer_a_message_is_acknowledged_once_on_disk(tmp_path: Path) -> None:
    backend = RefusingBackend()
    metrics = Metrics(backend, buffer_path=tmp_path / "b.sqlite", retry=ONE_TRY)
    handler = MessageHandler(metrics, acknowledge_buffered=True)
    outcome = handler.handle(encode_batch([produced("down")]))
    assert outcome.verdict is Verdict.STORED  # on disk: delivered later, even after a crash
    handler.close(timeout=1)
    assert Metrics("memory", buffer_path=tmp_path / "b.sqlite").stats().queued == 1


def test_a_full_buffer_puts_the_message_back_instead_of_dropping_it() -> None:
    metrics = Metrics(MemoryBackend(), max_buffer=2, overflow="drop_newest", flush_interval=60)
    handler = MessageHandler(metrics)
    batch = [produced(f"m{i}", id_=f"m-{i}") for i in range(5)]
    outcome = handler.handle(encode_batch(batch))
    assert outcome.verdict is Verdict.RETRY and "buffer was full" in outcome.reason
    handler.close()


# -- finding the worker -----------------------------------------------------------------


def test_a_storage_backend_is_not_a_queue() -> None:
    with pytest.raises(ConfigurationError, match=r"stores metrics rather than queueing them"):
        load_queue_backend("memory://")


def test_kaneda_worker_refuses_a_storage_url_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "logger://", "--to", "memory://"]) == 1
    assert "rather than queueing them" in capsys.readouterr().err


def test_engine_workers_build_their_handler_from_kaneda_url_once_per_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KANEDA_URL", "memory://")
    install_handler(None)
    try:
        handler = current_handler()
        assert isinstance(handler.metrics.backend, MemoryBackend)
        assert current_handler() is handler
        pid = os.fork()
        if pid == 0:  # a forked child (an RQ work horse) makes its own
            os._exit(0 if current_handler() is not handler else 1)
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        current_handler().close()
        install_handler(None)


def test_a_worker_told_to_deliver_a_queue_into_itself_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--to`` the very queue it reads: each message would come back for ever (one
    metric was "stored" 2,340 times in 13 s, in a busy loop)."""
    url = "rq://:secret@127.0.0.1:1/0?queue_name=metrics"
    assert main(["worker", url, "--to", "rq://:secret@127.0.0.1:1/0/?queue_name=metrics"]) == 1
    err = capsys.readouterr().err
    assert "into itself" in err and "secret" not in err


@pytest.mark.parametrize("field", ["name", "kind", "id"])
def test_a_metric_whose_field_is_a_json_object_is_refused_and_the_rest_stored(field: str) -> None:
    # Refused metrics are remembered by their fields, which must then be hashable: a
    # TypeError escaped the handler, and the ZeroMQ worker answered "retry" for ever,
    # storing the valid metrics again at each try.
    bad = produced("bad")._replace(**{field: {"k": 1}})
    handler = handler_on(MemoryBackend())
    (outcome,) = handler.handle_many([encode_batch([produced("good"), bad])])
    assert outcome.verdict is Verdict.STORED and outcome.refused == 1
    assert [m.name for m in handler.metrics.backend.metrics] == ["good"]  # type: ignore[attr-defined]
    handler.close()


@pytest.mark.parametrize(("layout", "given"), [("kaneda1", None), ("kaneda2", "job-7-0")])
def test_a_kaneda_1_message_gets_the_brokers_id_only_in_this_versions_layout(
    layout: str, given: str | None
) -> None:
    """kaneda 1.0 stored such a call without an id (MongoDB made an ObjectId, a log line
    had no ``_id``): in its layout it still has none; in this version's, the broker's id
    of the message keeps one copy of a message delivered twice."""

    class Laid(MemoryBackend):
        pass

    backend = Laid()
    backend.layout = layout  # type: ignore[attr-defined]
    handler = MessageHandler(Metrics(backend, retry=ONE_TRY))
    handler.handle_legacy("hits", "counter", 1, None, None, origin="job-7", ns=10**18)
    handler.handle_legacy("own", "counter", 1, None, "mine", origin="job-8", ns=10**18)
    handler.close(5)
    assert [(m.name, m.id, m.epoch_ns) for m in backend.metrics] == [
        ("hits", given, 10**18),
        ("own", "mine", 10**18),
    ]
