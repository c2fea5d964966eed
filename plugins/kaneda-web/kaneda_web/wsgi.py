"""``WSGIMiddleware``: request metrics for any WSGI application (Flask, Django, Falcon ...)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kaneda_core import Metrics

from .reporting import REQUEST_KEY, RequestReporter, RequestState, resolve_metrics
from .routes import wsgi_route

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WSGIMiddleware:
    """Wraps a WSGI application and reports one timing per request.

    ``app.wsgi_app = WSGIMiddleware(app.wsgi_app, metrics)`` for Flask, or
    ``application = WSGIMiddleware(application, metrics)`` for any WSGI callable.
    ``metrics`` is a :class:`kaneda_core.Metrics`, a backend URL, or None to read
    ``KANEDA_URL``; the other keyword arguments name the metrics and tags (see
    :class:`~kaneda_web.reporting.RequestReporter`).

    The time runs from the call until the server closes the response, after its last
    byte: a streamed body is timed to the end. The route tag is Flask's ``url_rule``
    (``/items/<int:item_id>``), ``environ["kaneda.route"]`` if the application sets
    it, or ``<unmatched>``; never the raw path. An exception escaping the application,
    and one Flask turns into a 500 page itself, is counted.
    """

    def __init__(self, app: WSGIApp, metrics: Metrics | str | None = None, **options: Any) -> None:
        self.app = app
        self.reporter = RequestReporter(resolve_metrics(metrics), **options)
        self.metrics = self.reporter.metrics
        # Held here: the Flask signal keeps only a weak reference to its receivers.
        self._flask_receiver = _watch_flask_exceptions(app, self.reporter)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        reporter = self.reporter
        state = RequestState(reporter, environ.get("REQUEST_METHOD", ""))
        environ[REQUEST_KEY] = state

        def start_response_and_note(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            state.status = status[:3]
            # Flask's request (and its url_rule) is still alive while it starts the response.
            state.route = wsgi_route(environ)
            if exc_info is None:  # as the app called it: some callers take two arguments
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, start_response_and_note)
        except Exception as error:
            _note_route(state, environ)
            reporter.count_exception(state, error)
            reporter.finish(state)
            raise
        except BaseException:
            # The server ending the request (gunicorn's worker timeout, its quick
            # shutdown: SystemExit in the request): it answers 500; so is it reported.
            _note_route(state, environ)
            reporter.finish(state)
            raise
        return _timed_body(result, state, environ)

    def __repr__(self) -> str:
        return f"<WSGIMiddleware {self.app!r} {self.reporter!r}>"


def _note_route(state: RequestState, environ: dict[str, Any]) -> None:
    if state.route is None:
        state.route = wsgi_route(environ)


def _timed_body(result: Iterable[bytes], state: RequestState, environ: dict[str, Any]) -> Any:
    """``result``, reporting when the server closes it (after the last byte is sent)."""
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
        # Keep the server's own file wrapper (sendfile): chain the report to its close.
        original = getattr(result, "close", None)

        def close() -> None:
            try:
                if original is not None:
                    original()
            finally:
                _note_route(state, environ)
                state.reporter.finish(state)

        try:
            result.close = close  # type: ignore[attr-defined]
            return result
        except AttributeError:
            pass
    return TimedBody(result, state, environ)


class TimedBody:
    """The response iterable, passed through; its ``close()`` ends the request's timing."""

    __slots__ = ("_environ", "_result", "_state")

    def __init__(self, result: Iterable[bytes], state: RequestState, environ: dict[str, Any]):
        self._result = result
        self._state = state
        self._environ = environ

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._result
        except Exception as error:
            _note_route(self._state, self._environ)
            self._state.reporter.count_exception(self._state, error)
            raise
        except BaseException:  # the server ending the request: close() may never come
            _note_route(self._state, self._environ)
            self._state.reporter.finish(self._state)
            raise

    def __len__(self) -> int:
        """The application's iterable's length, where it has one (a list of one body: a
        server sets ``Content-Length`` from it); a TypeError for a generator, as before."""
        return len(self._result)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the application's iterable, then report the request."""
        state = self._state
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            _note_route(state, self._environ)
            state.reporter.finish(state)


def _watch_flask_exceptions(
    app: Any, reporter: RequestReporter
) -> tuple[Callable[..., None], ...] | None:
    """Count the exceptions Flask turns into 500 pages itself (they never reach us), and
    note each request's route as soon as Flask matched it."""
    flask = sys.modules.get("flask")  # a Flask app means Flask is imported already
    if flask is None:
        return None
    flask_app = getattr(app, "__self__", app)  # app.wsgi_app is a bound method
    if not isinstance(flask_app, flask.Flask):
        return None

    def on_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
        environ = flask.request.environ
        state = environ.get(REQUEST_KEY)
        if isinstance(state, RequestState) and state.reporter is reporter:
            _note_route(state, environ)
            reporter.count_exception(state, exception)

    def on_started(sender: Any, **extra: Any) -> None:
        # A request the server ends (SystemExit: gunicorn's worker timeout) leaves Flask's
        # request gone by the time the middleware sees it: the route is noted now.
        environ = flask.request.environ
        state = environ.get(REQUEST_KEY)
        if isinstance(state, RequestState) and state.reporter is reporter:
            _note_route(state, environ)

    flask.got_request_exception.connect(on_exception, flask_app)
    flask.request_started.connect(on_started, flask_app)
    return on_exception, on_started


__all__ = ["TimedBody", "WSGIMiddleware"]
