"""``ASGIMiddleware``: request metrics for any ASGI application (FastAPI, Starlette ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kaneda_core import Metrics

from .lifespan import SHUTDOWN_TIMEOUT, check_shutdown_timeout, serve_lifespan
from .reporting import REQUEST_KEY, RequestReporter, RequestState, resolve_metrics
from .routes import asgi_route

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIMiddleware:
    """Wraps an ASGI application and reports one timing per HTTP request.

    ``app.add_middleware(ASGIMiddleware, metrics=metrics)`` for FastAPI and Starlette,
    or ``app = ASGIMiddleware(app, metrics)`` for any ASGI callable. ``metrics`` is a
    :class:`kaneda_core.Metrics`, a backend URL, or None to read ``KANEDA_URL``; the
    other keyword arguments name the metrics and tags (see
    :class:`~kaneda_web.reporting.RequestReporter`).

    The time runs until the last body message (``more_body`` false) has been sent, so a
    streamed response is timed to its end and background tasks that run after it are
    not. The route tag is the Starlette or FastAPI route template (``/items/{item_id}``),
    ``scope["kaneda.route"]`` if the application sets it, or ``<unmatched>``; never the
    raw path. Exceptions escaping the application are counted and raised again.

    WebSocket scopes pass through untouched. When the server shuts down, the queued
    metrics are flushed, for at most ``shutdown_timeout`` seconds, before it hears
    ``lifespan.shutdown.complete``: uvicorn ends its process by raising again the signal
    that stopped it, so the flush Kaneda does at interpreter exit never runs. The
    application's lifespan events pass untouched; one that does not speak the lifespan
    protocol is answered for (see :mod:`kaneda_web.lifespan`). ``shutdown_timeout=None``
    leaves lifespan events entirely to the application, flushing nothing.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics | str | None = None,
        *,
        shutdown_timeout: float | None = SHUTDOWN_TIMEOUT,
        **options: Any,
    ) -> None:
        check_shutdown_timeout(shutdown_timeout, none_allowed=True)
        self.app = app
        self.reporter = RequestReporter(resolve_metrics(metrics), **options)
        self.metrics = self.reporter.metrics
        self.shutdown_timeout = shutdown_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.shutdown_timeout is not None:
                await serve_lifespan(
                    self.app,
                    scope,
                    receive,
                    send,
                    self.metrics.flush,
                    self.shutdown_timeout,
                    self.reporter.logger,
                )
                return
            await self.app(scope, receive, send)
            return
        reporter = self.reporter
        root_path = scope.get("root_path", "")
        # Our own copy (ASGI asks middleware not to change the caller's scope); the
        # router below fills it with the matched route.
        scope = dict(scope)
        state = RequestState(reporter, scope.get("method", ""))
        scope[REQUEST_KEY] = state
        trailers = False

        async def send_and_time(message: Message) -> None:
            nonlocal trailers
            kind = message["type"]
            if kind == "http.response.start":
                state.status = message["status"]
                trailers = bool(message.get("trailers", False))
                await send(message)
                return
            await send(message)
            if (
                (kind == "http.response.body" and not message.get("more_body") and not trailers)
                or (kind == "http.response.trailers" and not message.get("more_trailers"))
                or kind == "http.response.pathsend"
            ):
                state.route = asgi_route(scope, root_path)
                reporter.finish(state)

        try:
            await self.app(scope, receive, send_and_time)
        except Exception as error:
            if state.route is None:
                state.route = asgi_route(scope, root_path)
            reporter.count_exception(state, error)
            raise
        finally:
            if not state.done:  # no final body: an error, or the client went away
                if state.route is None:
                    state.route = asgi_route(scope, root_path)
                reporter.finish(state)

    def __repr__(self) -> str:
        return f"<ASGIMiddleware {self.app!r} {self.reporter!r}>"


__all__ = ["ASGIMiddleware"]
