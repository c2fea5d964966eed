"""Request metrics for WSGI and ASGI applications, reported through Kaneda.

>>> from kaneda_web import ASGIMiddleware, WSGIMiddleware
>>> # Flask:   app.wsgi_app = WSGIMiddleware(app.wsgi_app, metrics)
>>> # FastAPI: app.add_middleware(ASGIMiddleware, metrics=metrics)
>>> # Metrics of its own, under uvicorn: app = FlushAtShutdown(app, metrics)

No web framework is imported here: the middlewares speak WSGI and ASGI, and read a
framework's route template only from what that framework leaves in the request.
"""

from .asgi import ASGIMiddleware
from .lifespan import SHUTDOWN_TIMEOUT, FlushAtShutdown
from .reporting import (
    DEFAULT_DURATION_NAME,
    DEFAULT_EXCEPTIONS_NAME,
    UNMATCHED_ROUTE,
    RequestReporter,
    add_request_tags,
)
from .wsgi import WSGIMiddleware

__version__ = "2.0.0"

__all__ = [
    "DEFAULT_DURATION_NAME",
    "DEFAULT_EXCEPTIONS_NAME",
    "SHUTDOWN_TIMEOUT",
    "UNMATCHED_ROUTE",
    "ASGIMiddleware",
    "FlushAtShutdown",
    "RequestReporter",
    "WSGIMiddleware",
    "add_request_tags",
]
