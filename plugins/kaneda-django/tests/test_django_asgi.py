"""django_kaneda.asgi: Django's ASGI application, its metrics flushed at lifespan shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from django.test import override_settings

from kaneda_core import ConfigurationError


def lifespan(app: Any) -> list[str]:
    """Run a server's lifespan against ``app``: startup, then shutdown; what the app answered."""
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    answered: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: dict[str, Any]) -> None:
        answered.append(message["type"])

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    return answered


def request(app: Any, path: str) -> int:
    """One GET through ``app``; its status."""
    status: list[int] = []
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected until the end
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    return status[0]


def test_lifespan_shutdown_delivers_what_the_middleware_and_metrics_queued(
    fresh_metrics: Any,
) -> None:
    from django_kaneda.asgi import get_asgi_application

    # Batching with a long interval: only a flush delivers before the test looks.
    with override_settings(KANEDA_OPTIONS={"batching": True, "flush_interval": 60}):
        app = get_asgi_application()
        assert request(app, "/counted/") == 200
        assert request(app, "/items/3/") == 200
        backend = fresh_metrics.backend
        assert backend.metrics == []  # queued, not delivered
        assert lifespan(app) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    names = sorted(m.name for m in backend.metrics)
    assert names == ["home.views", "http.request.duration", "http.request.duration"]


def test_django_hears_the_lifespan_scope_and_its_refusal_is_noted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django_kaneda.asgi import get_asgi_application

    with caplog.at_level(logging.INFO, logger="django_kaneda"):
        assert lifespan(get_asgi_application()) == [
            "lifespan.startup.complete",
            "lifespan.shutdown.complete",
        ]
    [record] = caplog.records
    assert record.name == "django_kaneda"
    assert "ValueError: Django can only handle ASGI/HTTP connections" in record.getMessage()


def test_a_bad_shutdown_timeout_is_refused() -> None:
    from django_kaneda.asgi import FlushAtShutdown

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    for bad in (-1, "5", None):
        with pytest.raises(ConfigurationError, match=f"shutdown_timeout .* got {bad!r}"):
            FlushAtShutdown(app, shutdown_timeout=bad)  # type: ignore[arg-type]
