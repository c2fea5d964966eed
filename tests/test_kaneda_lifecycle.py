"""kaneda 1.0 code's lifecycles on the face: calls after close(), Metrics never closed.

kaneda 1.0 apps close nothing: many build ``Metrics(backend=LoggerBackend(filename=...))``
per request and let it go. Each such backend must give back its handler on the
process-wide ``kaneda.backends.logger`` logger and its open file once collected, and
every line must still be written, once, in kaneda 1.0's format.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kaneda_core
from kaneda import Metrics
from kaneda.backends import BaseBackend, LoggerBackend
from kaneda_core.backends.logger import KANEDA1_LOGGER
from kaneda_core.backends.logger import LoggerBackend as CoreLoggerBackend
from kaneda_core.backends.memory import MemoryBackend
from kaneda_core.hookspecs import hookimpl

#: A line as kaneda 1.0's LoggerBackend wrote it.
KANEDA1_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - kaneda\.backends\.logger - \{.*\}$"
)
REQUESTS = 300


class Answering(BaseBackend):
    """A 1.0-style backend whose report answers with the name it stored."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.fail_on: str | None = None

    def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
        if name == self.fail_on:
            raise ValueError("refused")
        self.stored.append(name)
        return {"stored": name}


# -- a call whose metric is not stored answers None ------------------------------------

EVERY_CALL: list[tuple[str, Callable[[Any], Any]]] = [
    ("gauge", lambda m: m.gauge("g", 1)),
    ("bool gauge", lambda m: m.gauge("g", True)),
    ("increment", lambda m: m.increment("i")),
    ("decrement", lambda m: m.decrement("d")),
    ("timing", lambda m: m.timing("t", 2)),
    ("bool timing", lambda m: m.timing("t", False)),
    ("event", lambda m: m.event("e", "text")),
    ("custom", lambda m: m.custom("c", "kind", {"a": 1}, id_="x")),
    ("converted tags", lambda m: m.increment("i", tags={"n": 5})),  # 1.0's input, converted
]


@pytest.mark.parametrize(("label", "call"), EVERY_CALL, ids=[label for label, _ in EVERY_CALL])
def test_a_call_after_close_answers_none_not_the_last_calls_answer(
    label: str, call: Callable[[Any], Any], caplog: pytest.LogCaptureFixture
) -> None:
    backend = Answering()
    metrics = Metrics(backend=backend)
    assert metrics.increment("before") == {"stored": "before"}
    metrics.close()
    assert call(metrics) is None
    assert call(metrics) is None
    assert backend.stored == ["before"]
    assert metrics.stats().dropped == 2


def test_a_call_after_close_answers_none_with_a_backend_that_gives_no_answer() -> None:
    # The case found: the memory backend answers True when it stores.
    metrics = Metrics(MemoryBackend())
    assert metrics.increment("requests") is True
    metrics.close()
    assert metrics.increment("requests") is None
    assert metrics.gauge("g", 3) is None
    assert len(metrics.backend.metrics) == 1  # type: ignore[attr-defined]


def test_a_call_after_close_answers_none_in_a_thread_that_stored_before() -> None:
    import threading

    metrics = Metrics(backend=Answering())
    seen: list[Any] = []
    stored = threading.Event()
    closed = threading.Event()

    def report() -> None:
        seen.append(metrics.gauge("first", 1))
        stored.set()
        closed.wait(5)
        seen.append(metrics.gauge("after", 1))

    thread = threading.Thread(target=report)
    thread.start()
    stored.wait(5)
    metrics.close()
    closed.set()
    thread.join(5)
    assert seen == [{"stored": "first"}, None]


def test_not_stored_right_after_a_stored_call_answers_none(plugin: Any) -> None:
    backend = Answering()
    backend.fail_on = "bad"
    metrics = Metrics(backend=backend)
    assert metrics.gauge("good", 1) == {"stored": "good"}
    assert metrics.gauge("bad", 1) is None  # the backend failed

    class DropFiltered:
        @hookimpl
        def kaneda_filter_metric(self, metric: Any) -> bool:
            return bool(metric.name != "filtered")

    plugin.register(DropFiltered())
    assert metrics.gauge("good", 2) == {"stored": "good"}
    assert metrics.gauge("filtered", 1) is None  # a hook left it out
    assert metrics.gauge("good", 3) == {"stored": "good"}


def test_a_refused_call_raises_and_the_next_call_gets_its_own_answer() -> None:
    from kaneda_core import InvalidMetric

    metrics = Metrics(backend=Answering())
    assert metrics.gauge("good", 1) == {"stored": "good"}
    with pytest.raises(InvalidMetric):
        metrics.gauge("", 1)
    assert metrics.gauge("next", 1) == {"stored": "next"}


def test_batching_answers_none_before_and_after_close_and_when_the_buffer_is_full() -> None:
    backend = Answering()
    metrics = Metrics(backend=backend, batching=True, max_buffer=1, flush_interval=60)
    assert metrics.gauge("queued", 1) is None
    assert metrics.gauge("past the bound", 1) is None
    metrics.close()
    assert metrics.gauge("after close", 1) is None
    assert metrics.increment("after close") is None


def test_calls_made_within_a_delivery_do_not_take_the_answer_of_the_call_around_them() -> None:
    # A signal handler, a hook or a backend that reports through its own Metrics calls
    # from within the delivery of the same thread: their metrics are delivered right
    # after the current one, and they answer None (not yet stored); the call around
    # them gets its own answer.
    nested: list[Any] = []

    class Reporting(Answering):
        def report(self, name, metric, value, tags, id_=None):  # type: ignore[no-untyped-def]
            answer = super().report(name, metric, value, tags, id_)  # type: ignore[no-untyped-call]
            if name == "outer":
                nested.append(metrics.gauge("nested", 1))
            elif name == "nested":
                nested.append(metrics.gauge("nested again", 1))
            return answer

    backend = Reporting()
    metrics = Metrics(backend=backend)
    assert metrics.gauge("outer", 1) == {"stored": "outer"}
    assert nested == [None, None]
    assert backend.stored == ["outer", "nested", "nested again"]
    assert metrics.gauge("later", 1) == {"stored": "later"}


def test_forward_gives_its_answers_to_no_call() -> None:
    metrics = Metrics(backend=Answering())
    source = kaneda_core.Metrics(MemoryBackend(), batching=False)
    source.gauge("forwarded", 1)
    metrics.forward(source.backend.metrics)  # type: ignore[attr-defined]
    assert metrics.increment("after") == {"stored": "after"}
    metrics.close()
    assert metrics.increment("after close") is None


# -- Metrics never closed: no handler, file or line lost -------------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _handlers_writing_to(path: Path) -> list[logging.Handler]:
    return [
        handler
        for handler in logging.getLogger(KANEDA1_LOGGER).handlers
        if getattr(handler, "filename", None) == str(path)
    ]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture
def collected() -> Iterator[None]:
    """A test that counts fds starts from a collected heap (and leaves one)."""
    gc.collect()
    yield
    gc.collect()


PER_REQUEST: list[tuple[str, Callable[[str], Any]]] = [
    ("kaneda face", lambda path: Metrics(backend=LoggerBackend(filename=path))),
    (
        "kaneda face batching",
        lambda path: Metrics(backend=LoggerBackend(filename=path), batching=True),
    ),
    (
        "kaneda_core sync",
        lambda path: kaneda_core.Metrics(
            CoreLoggerBackend(filename=path, layout="kaneda1"), batching=False
        ),
    ),
    (
        "kaneda_core batching",
        lambda path: kaneda_core.Metrics(CoreLoggerBackend(filename=path, layout="kaneda1")),
    ),
]


@pytest.mark.parametrize(("label", "make"), PER_REQUEST, ids=[label for label, _ in PER_REQUEST])
def test_a_loggerbackend_per_request_never_closed_gives_back_its_handler_and_file(
    label: str, make: Callable[[str], Any], tmp_path: Path, collected: None
) -> None:
    path = tmp_path / "metrics.log"
    fds = _open_fds()
    for _ in range(REQUESTS):
        metrics = make(str(path))
        metrics.increment("requests", tags=["route:/"])
        del metrics
    # A batching Metrics let go of is closed by Kaneda's closer thread, soon after.
    deadline = time.monotonic() + 30
    while True:
        gc.collect()
        done = not _handlers_writing_to(path) and len(_lines(path)) >= REQUESTS
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert _handlers_writing_to(path) == []
    assert _open_fds() <= fds + 3
    lines = _lines(path)
    assert len(lines) == REQUESTS  # each line once
    for line in lines:
        assert KANEDA1_LINE.match(line), line
        assert "'name': 'requests'" in line and "'tags': ['route:/']" in line


def test_a_backend_never_closed_is_collected_and_its_handler_closed(
    tmp_path: Path, collected: None
) -> None:
    path = tmp_path / "metrics.log"
    backend = LoggerBackend(filename=str(path))
    metrics = Metrics(backend=backend)
    assert metrics.increment("requests") is True
    [handler] = _handlers_writing_to(path)
    assert handler.stream is not None  # type: ignore[attr-defined]
    gone = weakref.ref(backend)
    del backend, metrics
    gc.collect()
    assert gone() is None
    assert _handlers_writing_to(path) == []
    assert handler.stream is None  # type: ignore[attr-defined]  # its file closed
    assert len(_lines(path)) == 1


def test_close_then_collection_closes_the_handler_once(tmp_path: Path, collected: None) -> None:
    path = tmp_path / "metrics.log"
    metrics = Metrics(backend=LoggerBackend(filename=str(path)))
    metrics.increment("requests")
    [handler] = _handlers_writing_to(path)
    closes: list[None] = []
    original = handler.close

    def close() -> None:
        closes.append(None)
        original()

    handler.close = close  # type: ignore[method-assign]
    metrics.close()
    metrics.backend.close()  # twice: nothing more
    assert _handlers_writing_to(path) == []
    del metrics
    gc.collect()
    assert len(closes) == 1


def test_a_backend_collected_while_another_logs_loses_none_of_its_lines(
    tmp_path: Path, collected: None
) -> None:
    # The collector runs wherever memory is allocated: here while logging walks the
    # logger's handlers for another backend's line. Taking the collected backend's
    # handler out of that list in place made the walk skip the next handler: that
    # line was lost.
    logger = logging.getLogger(KANEDA1_LOGGER)
    dead_path, live_path = tmp_path / "dead.log", tmp_path / "live.log"

    class CollectsWhileLogging(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            gc.collect()

    collecting = CollectsWhileLogging()
    gc.disable()
    try:
        dead = LoggerBackend(filename=str(dead_path))  # its handler comes first
        dead.cycle = dead  # type: ignore[attr-defined]  # only the collector frees it
        gone = weakref.ref(dead)
        del dead
        logger.addHandler(collecting)
        live = Metrics(backend=LoggerBackend(filename=str(live_path)))
        assert live.increment("requests") is True
    finally:
        logger.removeHandler(collecting)
        gc.enable()
    assert gone() is None
    assert _handlers_writing_to(dead_path) == []
    assert len(_lines(live_path)) == 1
    live.close()


def test_each_backend_writes_its_own_lines_and_not_the_applications(tmp_path: Path) -> None:
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    one = Metrics(backend=LoggerBackend(filename=str(first)))
    two = Metrics(backend=LoggerBackend(filename=str(second)))
    one.increment("one")
    two.increment("two")
    logging.getLogger(KANEDA1_LOGGER).info("the application's own line")
    assert [("'one'" in line) for line in _lines(first)] == [True]
    assert [("'two'" in line) for line in _lines(second)] == [True]
    one.close()
    two.close()
