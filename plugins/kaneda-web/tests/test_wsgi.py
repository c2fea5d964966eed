"""WSGIMiddleware on plain WSGI applications: the protocol itself, no framework."""

from __future__ import annotations

import io
import time
import wsgiref.util
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from kaneda_web import WSGIMiddleware
from web_helpers import EXCEPTIONS, reported, request_tags

from kaneda_core import Metrics


def environ_for(path: str = "/", method: str = "GET") -> dict[str, Any]:
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    environ["REQUEST_METHOD"] = method
    return environ


class Recorder:
    """A server's start_response: remembers the status."""

    def __init__(self) -> None:
        self.status: str | None = None

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = status
        return lambda data: None


def serve(app: Any, environ: dict[str, Any]) -> tuple[bytes, Recorder]:
    """Do what a WSGI server does: call, iterate, close."""
    start_response = Recorder()
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return body, start_response


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_one_timing_per_request_tagged_with_method_and_status(metrics: Metrics) -> None:
    app = WSGIMiddleware(hello, metrics)
    body, start = serve(app, environ_for("/anything/42", "POST"))
    assert body == b"hello" and start.status == "200 OK"
    [timing] = reported(metrics)
    assert timing.kind == "timing"
    assert timing.tags == {"route": "<unmatched>", "method": "POST", "status": "200"}
    assert isinstance(timing.value, float) and 0 <= timing.value < 5


def test_the_raw_path_is_never_a_tag_the_app_names_its_route(metrics: Metrics) -> None:
    def routed(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["kaneda.route"] = "/users/{id}"
        return hello(environ, start_response)

    app = WSGIMiddleware(routed, metrics)
    for user in ("1", "2", "alice"):
        serve(app, environ_for(f"/users/{user}"))
    assert {tags["route"] for tags in request_tags(metrics)} == {"/users/{id}"}


def test_a_streamed_body_is_timed_until_the_server_closes_it(metrics: Metrics) -> None:
    closed: list[bool] = []

    class Chunks:
        def __iter__(self) -> Iterator[bytes]:
            for _ in range(3):
                time.sleep(0.05)
                yield b"chunk"

        def close(self) -> None:
            closed.append(True)

    def streaming(environ: dict[str, Any], start_response: Any) -> Chunks:
        start_response("200 OK", [])
        return Chunks()

    app = WSGIMiddleware(streaming, metrics)
    start_response = Recorder()
    result = app(environ_for(), start_response)
    assert reported(metrics) == []  # nothing sent yet: not finished
    assert b"".join(result) == b"chunk" * 3
    assert reported(metrics) == []  # every byte sent, but the server has not closed it
    result.close()
    [timing] = reported(metrics)
    assert timing.value >= 0.15
    assert closed == [True]  # the application's own close() was called


def test_the_report_waits_for_close_even_when_the_server_stops_iterating(
    metrics: Metrics,
) -> None:
    def endless(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        while True:
            yield b"x"

    result = WSGIMiddleware(endless, metrics)(environ_for(), Recorder())
    iterator = iter(result)
    next(iterator)
    next(iterator)  # the client went away after two chunks
    result.close()
    assert len(reported(metrics)) == 1


def test_an_exception_from_the_app_is_counted_timed_as_500_and_raised_again(
    metrics: Metrics,
) -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise KeyError("missing")

    app = WSGIMiddleware(broken, metrics)
    with pytest.raises(KeyError):
        app(environ_for(), Recorder())
    [timing] = reported(metrics)
    assert timing.tags["status"] == "500"  # type: ignore[call-overload]
    [count] = reported(metrics, EXCEPTIONS)
    assert count.kind == "counter" and count.value == 1
    assert count.tags == {"route": "<unmatched>", "method": "GET", "exception": "KeyError"}


def test_an_exception_while_streaming_is_counted_once(metrics: Metrics) -> None:
    def half(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        raise RuntimeError("lost the database")

    app = WSGIMiddleware(half, metrics)
    result = app(environ_for(), Recorder())
    with pytest.raises(RuntimeError):
        b"".join(result)
    result.close()
    [count] = reported(metrics, EXCEPTIONS)
    assert count.tags["exception"] == "RuntimeError"  # type: ignore[call-overload]
    [timing] = reported(metrics)
    assert timing.tags["status"] == "200"  # type: ignore[call-overload] # what was sent


def test_the_servers_file_wrapper_is_kept_so_sendfile_still_works(metrics: Metrics) -> None:
    def download(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"file body"))

    environ = environ_for()
    environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    app = WSGIMiddleware(download, metrics)
    result = app(environ, Recorder())
    assert isinstance(result, wsgiref.util.FileWrapper)
    assert b"".join(result) == b"file body"
    assert reported(metrics) == []
    result.close()
    assert len(reported(metrics)) == 1


def test_status_comes_from_start_response(metrics: Metrics) -> None:
    def teapot(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("418 I'm a teapot", [])
        return [b""]

    serve(WSGIMiddleware(teapot, metrics), environ_for())
    assert request_tags(metrics)[0]["status"] == "418"


def test_under_a_real_wsgi_server(metrics: Metrics) -> None:
    """wsgiref's server: it closes the iterable after the last byte, as PEP 3333 says."""
    import threading
    import urllib.request

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, WSGIMiddleware(hello, metrics), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        for _ in range(3):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=5) as response:
                assert response.read() == b"hello"
        deadline = time.monotonic() + 5
        while len(reported(metrics)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.shutdown()
        server.server_close()
    assert [tags["status"] for tags in request_tags(metrics)] == ["200"] * 3


def test_a_real_server_still_sets_content_length_from_a_one_body_list(metrics: Metrics) -> None:
    """wsgiref sets Content-Length from len() of a one-item result: the wrapped body hid
    len(), and the header went missing."""
    import threading
    import urllib.request

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    def one_body(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello world"]

    def streamed(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"hello "
        yield b"world"

    lengths = []
    for app in (one_body, streamed):
        server = make_server("127.0.0.1", 0, WSGIMiddleware(app, metrics), handler_class=Quiet)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.read() == b"hello world"
                lengths.append(response.headers.get("Content-Length"))
        finally:
            server.shutdown()
            server.server_close()
    assert lengths == ["11", None]  # as without the middleware


@pytest.mark.parametrize("where", ["call", "body"])
def test_a_request_the_server_ends_is_reported_as_the_500_it_answers(
    metrics: Metrics, where: str
) -> None:
    """gunicorn's worker timeout and quick shutdown raise SystemExit inside the request;
    the server answers 500. Such a request was never reported (only Exception was)."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        if where == "call":
            raise SystemExit(1)
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            yield b"half"
            raise SystemExit(1)

        return body()

    wrapped = WSGIMiddleware(app, metrics)
    with pytest.raises(SystemExit):
        result = wrapped(environ_for("/slow"), Recorder())
        for _ in result:  # the server iterates; the abort leaves close() uncalled
            pass
    tags = request_tags(metrics)
    assert len(tags) == 1 and tags[0]["status"] == ("500" if where == "call" else "200")
    assert reported(metrics, EXCEPTIONS) == []  # the server's abort, not the app's error
