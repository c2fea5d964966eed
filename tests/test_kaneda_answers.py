"""kaneda 1.0's return values: a reporting call returns what the backend answered."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import kaneda_core
from kaneda import Metrics
from kaneda.backends import BaseBackend


class DummyBackend(BaseBackend):
    """kaneda 1.0's own test backend: its report returns nothing."""

    def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
        self.last = (name, metric, value)


class Answering(BaseBackend):
    """A 1.0-style backend whose report answers with what it stored, and the thread."""

    def __init__(self, fail_on: str | None = None, pause: float = 0.0) -> None:
        self.fail_on = fail_on
        self.pause = pause

    def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
        if name == self.fail_on:
            raise ValueError("refused")
        time.sleep(self.pause)
        return {"stored": name, "thread": threading.current_thread().name}


def test_every_call_returns_the_backends_answer_as_1_0s_gauge_did() -> None:
    metrics = Metrics(backend=Answering())
    assert metrics.gauge("g", 1)["stored"] == "g"
    assert metrics.increment("i")["stored"] == "i"
    assert metrics.decrement("d")["stored"] == "d"
    assert metrics.timing("t", 2)["stored"] == "t"
    assert metrics.event("e", "text")["stored"] == "e"
    assert metrics.custom("c", "kind", {"a": 1}, id_="x")["stored"] == "c"


def test_a_1_0_backend_answering_none_returns_none_as_in_1_0() -> None:
    assert Metrics(backend=DummyBackend()).gauge("g", 1) is None


def test_a_failure_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics(backend=Answering(fail_on="bad"))
    assert metrics.gauge("bad", 1) is None
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.name == "kaneda"  # 1.0's backends logged on kaneda.backends.<module>
    assert metrics.gauge("good", 1) == {"stored": "good", "thread": "MainThread"}


def test_a_backend_without_answers_returns_true_when_it_stored() -> None:
    assert Metrics(backend="memory").gauge("g", 1) is True


def test_a_metric_a_hook_filtered_out_returns_none(plugin: Any) -> None:
    from kaneda_core.hookspecs import hookimpl

    class DropAll:
        @hookimpl
        def kaneda_filter_metric(self, metric: Any) -> bool:
            return False

    plugin.register(DropAll())
    assert Metrics(backend="memory").gauge("g", 1) is None


def test_batching_and_kaneda_core_return_none() -> None:
    batching = Metrics(backend=Answering(), batching=True)
    assert batching.gauge("g", 1) is None
    batching.close()
    for batch in (False, True):
        with kaneda_core.Metrics(Answering(), batching=batch) as metrics:
            assert metrics.gauge("g", 1) is None
            assert metrics.increment("i") is None


def test_each_thread_gets_its_own_answer() -> None:
    metrics = Metrics(backend=Answering(pause=0.001))
    seen: dict[str, list[Any]] = {}
    start = threading.Barrier(4)

    def report(label: str) -> None:
        start.wait()
        seen[label] = [metrics.gauge(f"{label}-{i}", i) for i in range(50)]

    threads = [threading.Thread(target=report, args=(f"t{n}",), name=f"t{n}") for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for label, answers in seen.items():
        assert answers == [{"stored": f"{label}-{i}", "thread": label} for i in range(50)]
