"""``MetricsMiddleware``: one timing per request, and a count of unhandled exceptions.

Add it first in ``MIDDLEWARE`` so it times everything the other middleware do::

    MIDDLEWARE = ["django_kaneda.middleware.MetricsMiddleware", ...]

Names and tags come from ``KANEDA_REQUEST_METRICS`` (a dict of the keyword arguments
of :class:`~django_kaneda.reporting.RequestReporter`, plus ``metrics``: a ``Metrics``
or the dotted path of one).
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponseBase

from kaneda_core import Metrics

from .conf import naming, settings_error
from .reporting import REQUEST_ATTRIBUTE, RequestReporter, RequestState

SETTING = "KANEDA_REQUEST_METRICS"


class MetricsMiddleware:
    """Reports each request's duration, tagged with its URL pattern, method and status.

    The route tag is the URL pattern Django matched, with a leading slash
    (``/items/<int:pk>/``), never the requested path; ``<unmatched>`` when no pattern
    matched. A streamed response is timed until Django closes it, after its last
    byte. An exception no middleware handled (the ones Django turns into a 500 page)
    is counted. Works under WSGI and ASGI, with sync and async views.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.reporter = reporter_from_settings()
        self.metrics = self.reporter.metrics
        _in_use.add(self.metrics)
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)
        got_request_exception.connect(count_unhandled_exception, dispatch_uid=__name__)

    def __call__(self, request: HttpRequest) -> Any:
        if self._is_async:
            return self.__acall__(request)
        state = RequestState(self.reporter, request.method or "")
        setattr(request, REQUEST_ATTRIBUTE, state)
        try:
            response = self.get_response(request)
        except BaseException:
            # Django answers the application's exceptions itself; what passes is the
            # server ending the request (gunicorn's worker timeout, its quick shutdown:
            # SystemExit), which the server answers 500: so is it reported.
            if state.route is None:
                state.route = route_of(request)
            self.reporter.finish(state)
            raise
        self._respond(request, response, state)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        state = RequestState(self.reporter, request.method or "")
        setattr(request, REQUEST_ATTRIBUTE, state)
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        response = await get_response(request)
        self._respond(request, response, state)
        return response

    def _respond(
        self, request: HttpRequest, response: HttpResponseBase, state: RequestState
    ) -> None:
        state.status = response.status_code
        if state.route is None:
            state.route = route_of(request)
        if response.streaming:
            _count_exceptions_while_streaming(response, state)
            # Django closes the response after its last byte (and when the client went
            # away): that is when a streamed response is done.
            closers = getattr(response, "_resource_closers", None)
            if isinstance(closers, list):
                closers.append(lambda: self.reporter.finish(state))
                return
        self.reporter.finish(state)

    def __repr__(self) -> str:
        return f"<MetricsMiddleware {self.reporter!r}>"


def _count_exceptions_while_streaming(response: Any, state: RequestState) -> None:
    """Count an exception the streamed body raises: it reaches the server, not Django."""
    if getattr(response, "file_to_stream", None) is not None:
        return  # a FileResponse: left as it is, for the server's sendfile
    content = response.streaming_content
    reporter = state.reporter
    if getattr(response, "is_async", False):

        async def counted_async() -> AsyncIterator[bytes]:
            try:
                async for part in content:
                    yield part
            except Exception as error:
                reporter.count_exception(state, error)
                reporter.finish(state)  # under ASGI, Django then never closes the response
                raise
            except BaseException:
                reporter.finish(state)
                raise

        response.streaming_content = counted_async()
        return

    def counted() -> Iterator[bytes]:
        try:
            yield from content
        except Exception as error:
            reporter.count_exception(state, error)
            reporter.finish(state)  # under ASGI, Django then never closes the response
            raise
        except BaseException:  # the server ending the request: close() may never come
            reporter.finish(state)
            raise

    response.streaming_content = counted()


#: The Metrics of every MetricsMiddleware Django has loaded (django_kaneda.asgi flushes them).
_in_use: weakref.WeakSet[Metrics] = weakref.WeakSet()


def request_metrics_in_use() -> list[Metrics]:
    """The ``Metrics`` the loaded ``MetricsMiddleware`` instances report through."""
    return list(_in_use)


def route_of(request: HttpRequest) -> str | None:
    """The URL pattern ``request`` matched, with a leading slash; None if none matched."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return None
    return "/" + route


def count_unhandled_exception(sender: Any, request: Any = None, **kwargs: Any) -> None:
    """``got_request_exception`` receiver: Django is about to answer 500 for an exception."""
    state = getattr(request, REQUEST_ATTRIBUTE, None)
    error = sys.exc_info()[1]
    if isinstance(state, RequestState) and error is not None:
        if state.route is None:
            state.route = route_of(request)
        state.reporter.count_exception(state, error)


def reporter_from_settings() -> RequestReporter:
    """The reporter ``KANEDA_REQUEST_METRICS`` describes, on the Metrics it names or the default."""
    from django.conf import settings

    options = getattr(settings, SETTING, None) or {}
    if not isinstance(options, dict):
        raise settings_error(f"{SETTING} must be a dict, got a {type(options).__name__}")
    options = dict(options)
    metrics = _named_metrics(options.pop("metrics", None))
    try:
        return RequestReporter(metrics or request_metrics(), **options)
    except TypeError as error:
        raise settings_error(f"{SETTING}: {error}") from None
    except ValueError as error:  # a name or tag refused (InvalidMetric): its own type
        raise naming(error, SETTING) from error


def _named_metrics(metrics: Any) -> Metrics | None:
    if metrics is None:
        return None
    if isinstance(metrics, str):
        from django.utils.module_loading import import_string

        try:
            metrics = import_string(metrics)
        except ImportError as error:
            raise settings_error(f"{SETTING}['metrics']: {error}") from None
    if not isinstance(metrics, Metrics):
        raise settings_error(
            f"{SETTING}['metrics'] must be a kaneda_core.Metrics or the dotted path of "
            f"one, got a {type(metrics).__name__}"
        )
    return metrics


def request_metrics() -> Metrics:
    """The Metrics request metrics go through when the settings name none.

    ``django_kaneda.metrics`` when it delivers from a background worker (``KANEDA_URL``,
    or ``KANEDA_OPTIONS`` with ``batching``), or logs (``KANEDA_DEBUG``). With kaneda
    1.0's ``KANEDA_BACKEND`` or ``KANEDA_QUEUE`` it delivers in the caller's thread,
    which would add a write to every request: the middleware then has a batching
    ``Metrics`` of its own, on a second backend built from the same settings (a backend
    serves one thread at a time, so the two cannot share one). ``KANEDA_OPTIONS =
    {"batching": False}`` asks for delivery in the caller's thread everywhere.

    ``django_kaneda.metrics`` is built first, so that a backend that can exist once
    per process (kaneda 1.0's ``ZMQQueue`` binds its address) is the application's; if
    the second cannot be built, requests are reported through ``django_kaneda.metrics``
    too, in the request's thread, and a warning says why.
    """
    import django_kaneda

    from .conf import read_configuration

    configuration = read_configuration()
    application: Metrics = django_kaneda.metrics._wrapped_metrics()
    # KANEDA_DEBUG logs in the caller's thread: cheap, local, and one log is easier to read.
    shared = configuration.batching or configuration.source == "KANEDA_DEBUG"
    if shared or "batching" in _options_setting():
        return application
    try:
        return configuration.build_metrics(batching=True)
    except Exception as error:  # noqa: BLE001 - the application's Metrics still works
        logging.getLogger("django_kaneda").warning(
            "Kaneda reports requests through django_kaneda.metrics, in each request's "
            "thread: a second %s for a background worker could not be made (%s: %s)",
            type(application.backend).__name__,
            type(error).__name__,
            application.backend.redact(str(error)),  # the same settings, the same secrets
        )
        return application


def _options_setting() -> dict[str, Any]:
    from django.conf import settings

    options = getattr(settings, "KANEDA_OPTIONS", None)
    return options if isinstance(options, dict) else {}


__all__ = [
    "MetricsMiddleware",
    "count_unhandled_exception",
    "request_metrics_in_use",
    "route_of",
]
