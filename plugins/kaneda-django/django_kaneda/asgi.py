"""Django's ASGI application, delivering Kaneda's queued metrics when the server shuts down.

In ``asgi.py``, instead of Django's own function::

    from django_kaneda.asgi import get_asgi_application

    application = get_asgi_application()

Kaneda delivers what is still queued at interpreter exit, but uvicorn ends its process by
raising again the signal that stopped it, and exit handlers never run: the metrics of
the last second (or of the last ``flush_interval``) would be lost. An ASGI server says
it is shutting down through the lifespan protocol, which Django does not speak; this
application answers it, and at shutdown flushes the request metrics of every
``MetricsMiddleware`` and ``django_kaneda.metrics``. Everything else goes to Django.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kaneda_core import ConfigurationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: How long shutdown waits, at most, for the queued metrics to be delivered.
SHUTDOWN_TIMEOUT = 5.0


def get_asgi_application(shutdown_timeout: float = SHUTDOWN_TIMEOUT) -> FlushAtShutdown:
    """Django's ``get_asgi_application()``, its metrics flushed when the server shuts down."""
    from django.core.asgi import get_asgi_application as django_application

    return FlushAtShutdown(django_application(), shutdown_timeout)


class FlushAtShutdown:
    """An ASGI application that answers lifespan events for ``app`` and flushes at shutdown.

    HTTP and WebSocket scopes go to ``app`` untouched. At ``lifespan.shutdown`` the
    metrics Django reports through (see :func:`flush_django_metrics`) get at most
    ``shutdown_timeout`` seconds, in a worker thread, before the server hears
    ``lifespan.shutdown.complete``.
    """

    def __init__(self, app: ASGIApp, shutdown_timeout: float = SHUTDOWN_TIMEOUT) -> None:
        if not isinstance(shutdown_timeout, (int, float)) or not shutdown_timeout >= 0:
            raise ConfigurationError(
                f"shutdown_timeout must be a number of seconds >= 0, got {shutdown_timeout!r}"
            )
        self.app = app
        self.shutdown_timeout = float(shutdown_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Requests are over; a bounded wait here delays only the exit.
                await asyncio.to_thread(flush_django_metrics, self.shutdown_timeout)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def __repr__(self) -> str:
        return f"<FlushAtShutdown {self.app!r}>"


def flush_django_metrics(timeout: float = SHUTDOWN_TIMEOUT) -> int:
    """Deliver what every ``MetricsMiddleware`` and ``django_kaneda.metrics`` have queued.

    Waits at most ``timeout`` seconds in all; returns how many metrics are still waiting.
    A ``Metrics`` that was never built is left alone.
    """
    from django.utils.functional import empty

    import django_kaneda

    from .middleware import request_metrics_in_use

    deadline = time.monotonic() + timeout
    queues = list(request_metrics_in_use())
    lazy = django_kaneda.metrics
    if isinstance(lazy, django_kaneda.LazyMetrics) and lazy._wrapped is not empty:
        queues.append(lazy._wrapped)
    left = 0
    for metrics in {id(m): m for m in queues}.values():
        left += metrics.flush(max(0.0, deadline - time.monotonic()))
    return left


__all__ = ["FlushAtShutdown", "flush_django_metrics", "get_asgi_application"]
