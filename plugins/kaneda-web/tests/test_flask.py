"""WSGIMiddleware on a real Flask application, through Flask's test client."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Blueprint, Flask, Response, request, stream_with_context
from hypothesis import given, settings
from hypothesis import strategies as st
from kaneda_web import WSGIMiddleware, add_request_tags
from web_helpers import EXCEPTIONS, reported, request_tags

from kaneda_core import InvalidMetric, Metrics


def make_app(metrics: Metrics, *, testing: bool = False) -> Flask:
    app = Flask(__name__)
    app.testing = testing  # in testing mode Flask lets exceptions out instead of a 500 page

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/orders")
    def order() -> tuple[str, int]:
        add_request_tags(request, payment="card")
        return "created", 201

    @app.get("/boom")
    def boom() -> str:
        raise ZeroDivisionError("no")

    @app.get("/slow/<int:n>")
    def slow(n: int) -> str:
        raise SystemExit(1)  # gunicorn's worker timeout, raised inside the view

    @app.get("/bad-tag")
    def bad_tag() -> str:
        add_request_tags(request, tier=["a", "list"])
        return "unreachable"

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            for _ in range(3):
                time.sleep(0.05)
                yield "chunk"

        return Response(stream_with_context(chunks()))

    api = Blueprint("api", __name__, url_prefix="/api/v1")

    @api.get("/users/<name>")
    def user(name: str) -> str:
        return name

    app.register_blueprint(api)
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, metrics)  # type: ignore[method-assign]
    return app


def get(app: Flask, path: str, method: str = "GET") -> int:
    # A real server closes every response; Flask's test client does when we close it.
    with app.test_client().open(path, method=method) as response:
        response.get_data()
        return response.status_code


def test_routes_are_flask_rules_never_raw_paths(metrics: Metrics) -> None:
    app = make_app(metrics)
    assert get(app, "/items/7") == 200
    assert get(app, "/api/v1/users/alice") == 200
    assert get(app, "/orders", "POST") == 201
    assert get(app, "/no/such/page") == 404
    assert request_tags(metrics) == [
        {"route": "/items/<int:item_id>", "method": "GET", "status": "200"},
        {"route": "/api/v1/users/<name>", "method": "GET", "status": "200"},
        {"route": "/orders", "method": "POST", "status": "201", "payment": "card"},
        {"route": "<unmatched>", "method": "GET", "status": "404"},
    ]


def test_a_method_the_route_does_not_allow_keeps_the_route(metrics: Metrics) -> None:
    assert get(make_app(metrics), "/orders", "GET") == 405
    assert request_tags(metrics)[0]["status"] == "405"


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_every_item_shares_one_route_tag(item_id: int) -> None:
    metrics = Metrics("memory", batching=False)
    get(make_app(metrics), f"/items/{item_id}")
    assert request_tags(metrics)[0]["route"] == "/items/<int:item_id>"


def test_an_exception_flask_turns_into_a_500_page_is_counted(metrics: Metrics) -> None:
    app = make_app(metrics)
    assert get(app, "/boom") == 500
    assert request_tags(metrics) == [{"route": "/boom", "method": "GET", "status": "500"}]
    [count] = reported(metrics, EXCEPTIONS)
    assert count.tags == {"route": "/boom", "method": "GET", "exception": "ZeroDivisionError"}


def test_an_exception_flask_lets_out_in_testing_mode_is_counted_once(metrics: Metrics) -> None:
    app = make_app(metrics, testing=True)
    with pytest.raises(ZeroDivisionError):
        get(app, "/boom")
    assert len(reported(metrics, EXCEPTIONS)) == 1
    assert request_tags(metrics)[0]["status"] == "500"


def test_a_bad_tag_raises_in_the_view(metrics: Metrics) -> None:
    app = make_app(metrics, testing=True)
    with pytest.raises(InvalidMetric, match="tier"):
        get(app, "/bad-tag")


def test_a_streamed_response_is_timed_to_its_last_chunk(metrics: Metrics) -> None:
    app = make_app(metrics)
    with app.test_client().get("/stream") as response:
        assert reported(metrics) == []  # headers are out, the body is not
        assert response.get_data() == b"chunk" * 3
    [timing] = reported(metrics)
    assert timing.value >= 0.15
    assert timing.tags["route"] == "/stream"  # type: ignore[call-overload]


def test_a_request_the_server_ends_keeps_its_route(metrics: Metrics) -> None:
    # SystemExit (gunicorn's worker timeout) leaves Flask's request gone before the
    # middleware sees it: the timed-out requests, the ones to find, were <unmatched>.
    with pytest.raises(SystemExit):
        make_app(metrics).wsgi_app(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/slow/3", "SERVER_NAME": "x",
             "SERVER_PORT": "80", "wsgi.url_scheme": "http"},
            lambda status, headers, exc_info=None: None,
        )  # fmt: skip
    assert request_tags(metrics) == [{"route": "/slow/<int:n>", "method": "GET", "status": "500"}]
