"""ASGIMiddleware on real Starlette and FastAPI applications, through their TestClient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from kaneda_web import ASGIMiddleware, add_request_tags
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from web_helpers import EXCEPTIONS, reported, request_tags

from kaneda_core import InvalidMetric, Metrics

lifespan_events: list[str] = []


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    lifespan_events.append("startup")
    yield
    lifespan_events.append("shutdown")


def make_fastapi(metrics: Metrics) -> FastAPI:
    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}")
    async def item(item_id: int, request: Request) -> dict[str, int]:
        add_request_tags(request, source="api")
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise ZeroDivisionError("no")

    @app.get("/bad-tag")
    def bad_tag(request: Request) -> None:  # a sync view, run in a thread
        add_request_tags(request, tier={"not": "a scalar"})

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.05)
                yield b"chunk"

        return StreamingResponse(chunks())

    @app.get("/background")
    async def background() -> PlainTextResponse:
        return PlainTextResponse("done", background=BackgroundTask(asyncio.sleep, 0.3))

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    router = APIRouter(prefix="/api/v1")

    @router.get("/users/{name}")
    async def user(name: str) -> str:
        return name

    app.include_router(router)

    admin = FastAPI()

    @admin.get("/reports/{report_id}")
    async def report(report_id: int) -> int:
        return report_id

    app.mount("/admin", admin)
    app.add_middleware(ASGIMiddleware, metrics=metrics)
    return app


@pytest.fixture
def client(metrics: Metrics) -> Iterator[TestClient]:
    with TestClient(make_fastapi(metrics), raise_server_exceptions=False) as client:
        yield client


def test_routes_are_fastapi_templates_never_raw_paths(client: TestClient, metrics: Metrics) -> None:
    assert client.get("/items/42").status_code == 200
    assert client.get("/api/v1/users/alice").status_code == 200
    assert client.get("/admin/reports/9").status_code == 200
    assert client.get("/no/such/page").status_code == 404
    assert client.post("/items/42").status_code == 405
    assert request_tags(metrics) == [
        {"route": "/items/{item_id}", "method": "GET", "status": "200", "source": "api"},
        {"route": "/api/v1/users/{name}", "method": "GET", "status": "200"},
        {"route": "/admin/reports/{report_id}", "method": "GET", "status": "200"},
        {"route": "<unmatched>", "method": "GET", "status": "404"},
        {"route": "/items/{item_id}", "method": "POST", "status": "405"},
    ]


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_/", min_size=1, max_size=20))
def test_any_path_gets_one_of_the_apps_routes_or_the_placeholder(path: str) -> None:
    metrics = Metrics("memory", batching=False)
    with TestClient(make_fastapi(metrics), raise_server_exceptions=False) as client:
        client.get("/" + path.lstrip("/"), follow_redirects=False)
    routes = {tags["route"] for tags in request_tags(metrics)}
    known = {
        "/items/{item_id}",
        "/api/v1/users/{name}",
        "/admin/reports/{report_id}",
        "/admin/{path}",
        "/boom",
        "/bad-tag",
        "/stream",
        "/background",
        "<unmatched>",
    }
    assert routes <= known


def test_an_unhandled_exception_is_counted_and_timed_as_500(
    client: TestClient, metrics: Metrics
) -> None:
    assert client.get("/boom").status_code == 500
    assert request_tags(metrics) == [{"route": "/boom", "method": "GET", "status": "500"}]
    [count] = reported(metrics, EXCEPTIONS)
    assert count.tags == {"route": "/boom", "method": "GET", "exception": "ZeroDivisionError"}


def test_the_exception_still_reaches_the_server(metrics: Metrics) -> None:
    with TestClient(make_fastapi(metrics)) as client, pytest.raises(ZeroDivisionError):
        client.get("/boom")
    assert len(reported(metrics, EXCEPTIONS)) == 1


def test_a_bad_tag_raises_in_the_view(metrics: Metrics) -> None:
    with TestClient(make_fastapi(metrics)) as client, pytest.raises(InvalidMetric, match="tier"):
        client.get("/bad-tag")


def test_a_streamed_response_is_timed_to_its_last_chunk(
    client: TestClient, metrics: Metrics
) -> None:
    assert client.get("/stream").content == b"chunk" * 3
    [timing] = reported(metrics)
    assert timing.value >= 0.15


def test_a_background_task_after_the_response_is_not_timed(
    client: TestClient, metrics: Metrics
) -> None:
    assert client.get("/background").text == "done"
    [timing] = reported(metrics)
    assert timing.value < 0.3


def test_websockets_and_lifespan_pass_through_untouched(metrics: Metrics) -> None:
    lifespan_events.clear()
    with TestClient(make_fastapi(metrics)) as client:
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("hello")
            assert websocket.receive_text() == "hello"
        assert lifespan_events == ["startup"]
    assert lifespan_events == ["startup", "shutdown"]
    assert metrics.backend.metrics == []  # type: ignore[attr-defined]


def test_plain_starlette_with_mounts_and_the_middleware_outside(metrics: Metrics) -> None:
    async def user(request: Any) -> JSONResponse:
        return JSONResponse(request.path_params)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/users/{user_id:int}", user),
            Mount("/teams/{team}", routes=[Route("/members/{member}", user)]),
            WebSocketRoute("/ws", ws),
        ]
    )
    wrapped = ASGIMiddleware(app, metrics)
    with TestClient(wrapped) as client:
        client.get("/users/3")
        client.get("/teams/red/members/ann")
        client.get("/missing")
    assert [tags["route"] for tags in request_tags(metrics)] == [
        "/users/{user_id:int}",
        "/teams/{team}/members/{member}",
        "<unmatched>",
    ]


def test_the_callers_scope_is_not_changed(metrics: Metrics) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    original = dict(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    asyncio.run(ASGIMiddleware(app, metrics)(scope, receive, send))
    assert scope == original
    assert request_tags(metrics) == [{"route": "<unmatched>", "method": "GET", "status": "204"}]


def test_routers_included_with_a_prefix_keep_every_prefix(metrics: Metrics) -> None:
    # FastAPI's "bigger applications" layout: the prefix given at include_router, routers
    # included in routers, and a mounted sub-application with routers of its own.
    items = APIRouter()

    @items.get("/{item_id}")
    async def item(item_id: int) -> int:
        return item_id

    users = APIRouter()

    @users.get("/{user_id}")
    async def user(user_id: int) -> int:
        return user_id

    async def plain(request: Any) -> PlainTextResponse:
        return PlainTextResponse("plain")

    users.add_route("/{user_id}/plain", plain)
    api = APIRouter(prefix="/api")
    api.include_router(users, prefix="/users")
    sub = FastAPI()
    things = APIRouter(prefix="/things")

    @things.get("/{thing_id}")
    async def thing(thing_id: int) -> int:
        return thing_id

    sub.include_router(things, prefix="/v2")
    app = FastAPI()
    app.include_router(items, prefix="/items")
    app.include_router(api)
    app.mount("/sub", sub)
    app.add_middleware(ASGIMiddleware, metrics=metrics)
    with TestClient(app) as client:
        for path in ("/items/1", "/api/users/2", "/api/users/2/plain", "/sub/v2/things/3"):
            assert client.get(path).status_code == 200, path
    assert [tags["route"] for tags in request_tags(metrics)] == [
        "/items/{item_id}",
        "/api/users/{user_id}",
        "/api/users/{user_id}/plain",
        "/sub/v2/things/{thing_id}",
    ]
