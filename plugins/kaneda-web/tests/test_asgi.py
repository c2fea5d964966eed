"""ASGIMiddleware on raw ASGI applications: the protocol's messages, no framework."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kaneda_web import ASGIMiddleware
from web_helpers import EXCEPTIONS, reported, request_tags

from kaneda_core import Metrics


def run(app: Any, scope: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Serve one request the way a server does; returns what the app sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = scope or {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(app(scope, receive, send))
    return sent


def test_timed_until_the_body_message_without_more_body(metrics: Metrics) -> None:
    seen_when_sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            seen_when_sent.append(len(reported(metrics)))
        await send({"type": "http.response.body", "body": b""})
        seen_when_sent.append(len(reported(metrics)))
        await asyncio.sleep(0.2)  # work after the response: not the client's wait

    run(ASGIMiddleware(app, metrics))
    assert seen_when_sent == [0, 0, 0, 1]
    [timing] = reported(metrics)
    assert 0.15 <= timing.value < 0.35


def test_with_trailers_the_last_trailers_message_ends_the_response(metrics: Metrics) -> None:
    counts: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"x"})
        counts.append(len(reported(metrics)))
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
        counts.append(len(reported(metrics)))

    run(ASGIMiddleware(app, metrics))
    assert counts == [0, 1]


def test_pathsend_ends_the_response(metrics: Metrics) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    run(ASGIMiddleware(app, metrics))
    assert request_tags(metrics)[0]["status"] == "200"


def test_an_app_that_returns_without_answering_is_timed_as_500(metrics: Metrics) -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    run(ASGIMiddleware(silent, metrics))
    assert request_tags(metrics) == [{"route": "<unmatched>", "method": "GET", "status": "500"}]


def test_an_exception_after_the_response_is_counted_not_timed_twice(metrics: Metrics) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        raise RuntimeError("a background job failed")

    with pytest.raises(RuntimeError):
        run(ASGIMiddleware(app, metrics))
    assert request_tags(metrics) == [{"route": "<unmatched>", "method": "GET", "status": "200"}]
    assert reported(metrics, EXCEPTIONS)[0].tags["exception"] == "RuntimeError"  # type: ignore[call-overload]


def test_a_websocket_reaches_the_app_as_it_is(metrics: Metrics) -> None:
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append((scope, receive, send))

    scope = {"type": "websocket", "path": "/ws"}

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: Any) -> None:
        pass

    asyncio.run(ASGIMiddleware(app, metrics)(scope, receive, send))
    assert received == [(scope, receive, send)]  # the same objects, not wrapped
    assert metrics.backend.metrics == []  # type: ignore[attr-defined]


def test_the_app_can_name_its_route_in_the_scope(metrics: Metrics) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["kaneda.route"] = "/graphql"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    run(ASGIMiddleware(app, metrics))
    assert request_tags(metrics)[0]["route"] == "/graphql"


def test_a_router_that_fails_to_be_read_never_breaks_the_request(metrics: Metrics) -> None:
    class OddRouter:
        @property
        def routes(self) -> Any:
            raise RuntimeError("a router of a kind the middleware does not know")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # As a router leaves it after a mount: a route chosen, root_path grown.
        scope.update(endpoint=app, router=OddRouter(), root_path="/mounted")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = run(ASGIMiddleware(app, metrics))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert request_tags(metrics) == [{"route": "<unmatched>", "method": "GET", "status": "200"}]
    assert reported(metrics, EXCEPTIONS) == []


def test_a_wsgi_request_object_that_fails_to_be_read_never_breaks_the_request(
    metrics: Metrics,
) -> None:
    from kaneda_web import WSGIMiddleware

    class OddRequest:
        @property
        def url_rule(self) -> Any:
            raise RuntimeError("not Werkzeug's")

    def app(environ: Any, start_response: Any) -> list[bytes]:
        environ["werkzeug.request"] = OddRequest()
        start_response("200 OK", [])
        return [b"ok"]

    body = WSGIMiddleware(app, metrics)({"REQUEST_METHOD": "GET"}, lambda *args: None)
    assert b"".join(body) == b"ok"
    body.close()
    assert request_tags(metrics) == [{"route": "<unmatched>", "method": "GET", "status": "200"}]
