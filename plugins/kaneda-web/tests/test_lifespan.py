"""Lifespan: queued metrics are flushed before the server hears shutdown ended.

The server's side is played here as uvicorn plays it (startup; shutdown once startup is
complete); the application's side by raw ASGI callables that speak the protocol, fail
in it, or do not speak it at all, and by FastAPI. The real servers run in
``test_servers.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from kaneda_web import ASGIMiddleware, FlushAtShutdown
from kaneda_web.lifespan import serve_lifespan

from kaneda_core import Backend, ConfigurationError, Metric, Metrics

STARTUP = {"type": "lifespan.startup"}
SHUTDOWN = {"type": "lifespan.shutdown"}
COMPLETE = ["lifespan.startup.complete", "lifespan.shutdown.complete"]


class Server:
    """The server's side: what it heard, and how many metrics were queued at each answer."""

    def __init__(self, *watched: Metrics) -> None:
        self.watched = watched
        self.scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": {},
        }
        self.startup = dict(STARTUP)
        self.shutdown = dict(SHUTDOWN)
        self.heard: list[Any] = []
        self.queued: list[int] = []

    def run(self, app: Any) -> None:
        asyncio.run(self.serve(app))

    async def serve(self, app: Any) -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait(self.startup)

        async def receive() -> dict[str, Any]:
            return await inbox.get()

        async def send(message: Any) -> None:
            self.heard.append(message)
            self.queued.append(sum(m.stats().queued for m in self.watched))
            if message["type"] == "lifespan.startup.complete":
                inbox.put_nowait(self.shutdown)  # the server runs, then is told to stop

        # A middleware left waiting for a message that never comes fails, not hangs.
        await asyncio.wait_for(app(self.scope, receive, send), 10)

    @property
    def heard_types(self) -> list[str]:
        return [message["type"] for message in self.heard]


@pytest.fixture
def batching() -> Iterator[Metrics]:
    """Delivers only when flushed (within the tests' time); one metric already queued."""
    metrics = Metrics("memory", flush_interval=60)
    metrics.increment("queued.before.shutdown")
    yield metrics
    metrics.close()


def stored(metrics: Metrics) -> list[str]:
    return [m.name for m in metrics.backend.metrics]  # type: ignore[attr-defined]


class SpeakingApp:
    """An application that speaks the protocol, answering with the messages given."""

    def __init__(self, startup_answer: dict[str, Any], shutdown_answer: dict[str, Any]) -> None:
        self.startup_answer = startup_answer
        self.shutdown_answer = shutdown_answer
        self.seen: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.seen.append(scope)
        while True:
            message = await receive()
            self.seen.append(message)
            if message["type"] == "lifespan.startup":
                await send(self.startup_answer)
            else:
                await send(self.shutdown_answer)
                return


def test_an_app_speaking_lifespan_sees_every_event_untouched_and_in_order(
    batching: Metrics,
) -> None:
    app = SpeakingApp(
        {"type": "lifespan.startup.complete", "extra": 1},
        {"type": "lifespan.shutdown.complete", "extra": 2},
    )
    server = Server(batching)
    server.run(ASGIMiddleware(app, batching))
    # The very objects, both ways: the scope, the server's events, the app's answers.
    sent = [server.scope, server.startup, server.shutdown]
    assert app.seen == sent
    assert all(a is b for a, b in zip(app.seen, sent, strict=True))
    assert server.heard[0] is app.startup_answer
    assert server.heard[1] is app.shutdown_answer
    assert server.queued == [1, 0]  # flushed before the server heard "complete"
    assert stored(batching) == ["queued.before.shutdown"]


async def raises_at_once(scope: Any, receive: Any, send: Any) -> None:
    raise ValueError(f"HTTP only, not {scope['type']}")  # as Django's application does


async def raises_after_receiving(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise NotImplementedError("no lifespan here")


async def returns_at_once(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return


async def answers_startup_then_returns(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})


async def takes_shutdown_without_answering(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()


@pytest.mark.parametrize(
    "app",
    [
        raises_at_once,
        raises_after_receiving,
        returns_at_once,
        answers_startup_then_returns,
        takes_shutdown_without_answering,
    ],
)
def test_events_the_app_leaves_unanswered_are_answered_and_shutdown_flushes(
    app: Any, batching: Metrics
) -> None:
    server = Server(batching)
    server.run(ASGIMiddleware(app, batching))
    assert server.heard_types == COMPLETE
    assert server.queued[-1] == 0
    assert stored(batching) == ["queued.before.shutdown"]


def test_an_app_that_does_not_speak_lifespan_is_named_in_the_log(
    batching: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="kaneda_web"):
        Server(batching).run(ASGIMiddleware(raises_at_once, batching))
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "ValueError: HTTP only, not lifespan" in record.getMessage()


def test_a_startup_failure_reaches_the_server_as_before(batching: Metrics) -> None:
    failed = {"type": "lifespan.startup.failed", "message": "no database"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(failed)
        raise ConnectionRefusedError("no database")

    for wrapped in (app, ASGIMiddleware(app, batching)):
        server = Server(batching)
        with pytest.raises(ConnectionRefusedError, match="no database"):
            server.run(wrapped)
        assert server.heard == [failed]
        assert server.heard[0] is failed


def test_a_startup_failure_without_raising_ends_the_lifespan(batching: Metrics) -> None:
    failed = {"type": "lifespan.startup.failed", "message": "no database"}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(failed)

    server = Server(batching)
    server.run(ASGIMiddleware(app, batching))  # returns: nothing more is awaited
    assert server.heard == [failed]


def test_a_shutdown_failure_reaches_the_server_after_the_flush(batching: Metrics) -> None:
    app = SpeakingApp(
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.failed", "message": "could not close the pool"},
    )
    server = Server(batching)
    server.run(ASGIMiddleware(app, batching))
    assert server.heard[1] is app.shutdown_answer
    assert server.queued == [1, 0]


def test_an_app_crashing_in_its_shutdown_raises_as_before_after_the_flush(
    batching: Metrics,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise OSError("could not close the pool")

    server = Server(batching)
    with pytest.raises(OSError, match="could not close the pool"):
        server.run(ASGIMiddleware(app, batching))
    assert server.heard_types == ["lifespan.startup.complete"]
    assert stored(batching) == ["queued.before.shutdown"]


def test_fastapi_lifespan_runs_and_its_startup_failure_is_raised_as_before(
    batching: Metrics,
) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append(f"shutdown with {batching.stats().queued} queued")

    api = FastAPI(lifespan=lifespan)
    api.add_middleware(ASGIMiddleware, metrics=batching)
    with TestClient(api):
        assert events == ["startup"]
    # The application's shutdown ran first, then the flush.
    assert events == ["startup", "shutdown with 1 queued"]
    assert batching.stats().queued == 0

    @asynccontextmanager
    async def failing(app: Any) -> AsyncIterator[None]:
        raise ConnectionRefusedError("no database")
        yield

    for wrap in (False, True):
        api = FastAPI(lifespan=failing)
        if wrap:
            api.add_middleware(ASGIMiddleware, metrics=batching)
        with pytest.raises(ConnectionRefusedError, match="no database"), TestClient(api):
            pass


class StuckBackend(Backend):
    """A backend whose server never answers (until the test lets it)."""

    def __init__(self) -> None:
        self.answer = threading.Event()

    def send(self, batch: Sequence[Metric]) -> None:
        self.answer.wait(30)


def test_a_dead_backend_holds_the_shutdown_for_shutdown_timeout_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = StuckBackend()
    metrics = Metrics(backend, flush_interval=60)
    metrics.increment("never.delivered")
    server = Server()
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="kaneda_web"):
        server.run(ASGIMiddleware(returns_at_once, metrics, shutdown_timeout=0.5))
    took = time.monotonic() - started
    backend.answer.set()
    metrics.close(5)
    assert server.heard_types == COMPLETE
    assert 0.5 <= took < 2.0
    [record] = caplog.records
    assert "1 metrics were still queued 0.5 seconds into the server's shutdown" in (
        record.getMessage()
    )


def test_a_flush_that_raises_is_logged_and_shutdown_completes(
    batching: Metrics, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(timeout: float) -> int:
        raise RuntimeError("broken flush")

    monkeypatch.setattr(batching, "flush", broken)
    server = Server()
    with caplog.at_level(logging.ERROR, logger="kaneda_web"):
        server.run(ASGIMiddleware(returns_at_once, batching))
    assert server.heard_types == COMPLETE
    assert "broken flush" in caplog.records[-1].getMessage()


def test_the_middleware_logs_on_its_reporter_logger(
    batching: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="my_service"):
        Server().run(ASGIMiddleware(raises_at_once, batching, logger_name="my_service"))
    assert [r.name for r in caplog.records] == ["my_service"]


def test_shutdown_timeout_none_leaves_lifespan_to_the_app(batching: Metrics) -> None:
    server = Server(batching)
    app = SpeakingApp({"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"})
    server.run(ASGIMiddleware(app, batching, shutdown_timeout=None))
    assert server.queued == [1, 1]  # nothing flushed
    with pytest.raises(ValueError, match="HTTP only"):
        Server().run(ASGIMiddleware(raises_at_once, batching, shutdown_timeout=None))


@pytest.mark.parametrize("bad", [-1, "5", float("nan"), True])
def test_a_bad_shutdown_timeout_is_refused(batching: Metrics, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"shutdown_timeout .* got {bad!r}"):
        ASGIMiddleware(returns_at_once, batching, shutdown_timeout=bad)
    with pytest.raises(ConfigurationError, match=f"shutdown_timeout .* got {bad!r}"):
        FlushAtShutdown(returns_at_once, batching, shutdown_timeout=bad)
    with pytest.raises(ConfigurationError, match="shutdown_timeout"):
        FlushAtShutdown(returns_at_once, batching, shutdown_timeout=None)  # type: ignore[arg-type]


def test_flush_at_shutdown_flushes_every_metrics_given(batching: Metrics) -> None:
    other = Metrics("memory", flush_interval=60)
    other.gauge("queued.elsewhere", 1)
    server = Server(batching, other)
    server.run(FlushAtShutdown(raises_at_once, batching, other, batching))
    assert server.heard_types == COMPLETE
    assert server.queued == [2, 0]
    assert stored(other) == ["queued.elsewhere"]
    other.close()


def test_flush_at_shutdown_passes_other_scopes_untouched(batching: Metrics) -> None:
    calls: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/"}
    asyncio.run(FlushAtShutdown(app, batching)(scope, receive, send))
    assert calls == [(scope, receive, send)]
    assert calls[0][0] is scope
    assert batching.stats().queued == 1  # a request flushes nothing


def test_flush_at_shutdown_refuses_what_is_not_a_metrics() -> None:
    with pytest.raises(ConfigurationError, match="got a str"):
        FlushAtShutdown(returns_at_once, "memory://")  # type: ignore[arg-type]


def test_without_an_asyncio_loop_the_flush_runs_in_place(batching: Metrics) -> None:
    # Under another event loop (trio), no worker thread: the bounded flush runs inline.
    heard: list[str] = []
    flushed_in: list[threading.Thread] = []
    incoming = iter([STARTUP, SHUTDOWN])

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: Any) -> None:
        heard.append(message["type"])

    def flush(timeout: float) -> int:
        flushed_in.append(threading.current_thread())
        return batching.flush(timeout)

    coroutine = serve_lifespan(
        returns_at_once, {"type": "lifespan"}, receive, send, flush, 1.0, logging.getLogger()
    )
    with pytest.raises(StopIteration):  # ran to its end without suspending: no loop at all
        coroutine.send(None)
    assert heard == COMPLETE
    assert flushed_in == [threading.current_thread()]
    assert stored(batching) == ["queued.before.shutdown"]
