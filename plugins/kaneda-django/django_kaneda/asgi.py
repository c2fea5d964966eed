"""Django's ASGI application, delivering Kaneda's queued metrics when the server shuts down.

In ``asgi.py``, instead of Django's own function::

    from django_kaneda.asgi import get_asgi_application

    application = get_asgi_application()

Kaneda delivers what is still queued at interpreter exit, but uvicorn ends its process by
raising again the signal that stopped it, and exit handlers never run: the metrics of
the last second (or of the last ``flush_interval``) would be lost. An ASGI server says
it is shutting down through the lifespan protocol, which Django does not speak; this
application answers it (through :mod:`kaneda_web.lifespan`, as kaneda-web's ASGI
middleware does), and at shutdown flushes the request metrics of every
``MetricsMiddleware`` and ``django_kaneda.metrics``. Everything else goes to Django.
"""

from __future__ import annotations

from kaneda_web import lifespan
from kaneda_web.lifespan import SHUTDOWN_TIMEOUT, ASGIApp


def get_asgi_application(shutdown_timeout: float = SHUTDOWN_TIMEOUT) -> FlushAtShutdown:
    """Django's ``get_asgi_application()``, its metrics flushed when the server shuts down."""
    from django.core.asgi import get_asgi_application as django_application

    return FlushAtShutdown(django_application(), shutdown_timeout)


class FlushAtShutdown(lifespan.FlushAtShutdown):
    """An ASGI application that answers lifespan events for ``app`` and flushes at shutdown.

    HTTP and WebSocket scopes go to ``app`` untouched, and lifespan events too, answered
    for it when it does not speak the protocol (Django raises on them). Before the server
    hears ``lifespan.shutdown.complete``, the metrics Django reports through (see
    :func:`flush_django_metrics`) get at most ``shutdown_timeout`` seconds, in a worker
    thread. What could not be done is logged on the ``django_kaneda`` logger.
    """

    logger_name = "django_kaneda"

    def __init__(self, app: ASGIApp, shutdown_timeout: float = SHUTDOWN_TIMEOUT) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout)

    def flush(self, timeout: float) -> int:
        """Flush Django's metrics within ``timeout`` seconds; how many are left."""
        return flush_django_metrics(timeout)


def flush_django_metrics(timeout: float = SHUTDOWN_TIMEOUT) -> int:
    """Deliver what every ``MetricsMiddleware`` and ``django_kaneda.metrics`` have queued.

    Waits at most ``timeout`` seconds in all; returns how many metrics are still waiting.
    A ``Metrics`` that was never built is left alone.
    """
    from django.utils.functional import empty

    import django_kaneda

    from .middleware import request_metrics_in_use

    queues = list(request_metrics_in_use())
    lazy = django_kaneda.metrics
    if isinstance(lazy, django_kaneda.LazyMetrics) and lazy._wrapped is not empty:
        queues.append(lazy._wrapped)
    return lifespan.flush_all(queues, timeout)


__all__ = ["FlushAtShutdown", "flush_django_metrics", "get_asgi_application"]
