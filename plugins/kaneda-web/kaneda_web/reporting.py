"""What a request reports: one timing, and a counter for unhandled exceptions.

The WSGI and ASGI middlewares share this: they measure, find the route, and hand a
finished :class:`RequestState` to :meth:`RequestReporter.finish`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from time import perf_counter
from typing import Any

from kaneda_core import ConfigurationError, InvalidMetric, KanedaError, Metric, Metrics
from kaneda_core.model import TIMING, check_name, copy_tags

#: Where a middleware leaves the request's :class:`RequestState`, in the WSGI environ or
#: the ASGI scope.
REQUEST_KEY = "kaneda.request"
#: An application that knows its route template better can put it here (environ or scope).
ROUTE_KEY = "kaneda.route"

#: The methods reported as themselves; any other (clients send what they like) is
#: reported as ``OTHER``, so the method tag has a bounded set of values.
HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
OTHER_METHOD = "OTHER"
#: The route tag of a request no route matched (a 404, a redirect before routing).
UNMATCHED_ROUTE = "<unmatched>"

DEFAULT_DURATION_NAME = "http.request.duration"
DEFAULT_EXCEPTIONS_NAME = "http.request.exceptions"

_MAX_LOGGED_FAILURES = 100


class RequestState:
    """One request being measured: when it started, what the app answered, what a view added."""

    __slots__ = ("done", "error", "method", "reporter", "route", "started", "status", "tags")

    def __init__(self, reporter: RequestReporter, method: str) -> None:
        self.reporter = reporter
        self.method = method
        self.started = perf_counter()
        self.route: str | None = None
        self.status: int | str | None = None
        self.tags: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.done = False


class RequestReporter:
    """Reports requests to ``metrics`` under configurable names and tags.

    Each request: a timing ``duration_name`` (seconds as a float, or whole milliseconds
    with ``use_ms``) tagged ``route``, ``method`` and ``status``; and, when the
    application raised, a counter ``exceptions_name`` tagged ``route``, ``method`` and
    ``exception`` (the exception's class name). ``tags`` are added to both. A tag name
    set to None leaves that tag out. Reporting never raises into the request: a failure
    is logged (once per distinct error) on the ``logger_name`` logger (``kaneda_web``).
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        duration_name: str = DEFAULT_DURATION_NAME,
        exceptions_name: str = DEFAULT_EXCEPTIONS_NAME,
        tags: Mapping[str, Any] | None = None,
        route_tag: str | None = "route",
        method_tag: str | None = "method",
        status_tag: str | None = "status",
        exception_tag: str | None = "exception",
        use_ms: bool = False,
        unmatched_route: str = UNMATCHED_ROUTE,
        logger_name: str = "kaneda_web",
    ) -> None:
        #: Where reporting failures (and, for the ASGI middleware, shutdown flushes) are logged.
        self.logger = logging.getLogger(logger_name)
        check_name(duration_name, "duration_name")
        check_name(exceptions_name, "exceptions_name")
        check_name(unmatched_route, "unmatched_route")
        for field, tag in (
            ("route_tag", route_tag),
            ("method_tag", method_tag),
            ("status_tag", status_tag),
            ("exception_tag", exception_tag),
        ):
            if tag is not None:
                check_name(tag, field)
        if not isinstance(use_ms, bool):
            raise ConfigurationError(f"use_ms must be True or False, got {use_ms!r}")
        constant = copy_tags(tags)
        if not isinstance(constant, dict):
            raise InvalidMetric(f"tags must be a dict of scalars, got {tags!r}")
        self.metrics = metrics
        self.duration_name = duration_name
        self.exceptions_name = exceptions_name
        self.tags: dict[str, Any] = constant
        self.route_tag = route_tag
        self.method_tag = method_tag
        self.status_tag = status_tag
        self.exception_tag = exception_tag
        self.use_ms = use_ms
        self.unmatched_route = unmatched_route
        self._logged: set[tuple[type, str]] = set()
        # A backend that refuses these names or tags says so now, not at every request.
        sample = self._timing_tags(unmatched_route, "GET", "200", None)
        self.check_tags(sample)

    def check_tags(self, tags: dict[str, Any]) -> None:
        """Refuse, as the backend would, a request timing carrying ``tags``."""
        metric = Metric.create(self.duration_name, TIMING, 0.0, tags)
        self.metrics.backend.check(metric)

    def _timing_tags(
        self, route: str, method: str, status: str, extra: dict[str, Any] | None
    ) -> dict[str, Any]:
        tags = dict(self.tags)
        if self.route_tag is not None:
            tags[self.route_tag] = route
        if self.method_tag is not None:
            tags[self.method_tag] = method
        if self.status_tag is not None:
            tags[self.status_tag] = status
        if extra:
            tags.update(extra)
        return tags

    def finish(self, state: RequestState) -> None:
        """Report ``state``'s timing, once; a request that never answered counts as 500."""
        if state.done:
            return
        state.done = True
        elapsed = perf_counter() - state.started
        value: float = round(elapsed * 1000) if self.use_ms else elapsed
        method = state.method if state.method in HTTP_METHODS else OTHER_METHOD
        status = "500" if state.status is None else str(state.status)
        route = state.route or self.unmatched_route
        try:
            self.metrics.timing(
                self.duration_name, value, self._timing_tags(route, method, status, state.tags)
            )
        except Exception as error:  # noqa: BLE001 - reporting must never break a request
            self._failed(error)

    def count_exception(self, state: RequestState, error: BaseException) -> None:
        """Count ``error``, unhandled by the application, once per request."""
        if state.error is error:
            return
        state.error = error
        tags = dict(self.tags)
        if self.route_tag is not None:
            tags[self.route_tag] = state.route or self.unmatched_route
        if self.method_tag is not None:
            tags[self.method_tag] = state.method if state.method in HTTP_METHODS else OTHER_METHOD
        if self.exception_tag is not None:
            tags[self.exception_tag] = type(error).__name__
        try:
            self.metrics.increment(self.exceptions_name, tags)
        except Exception as failure:  # noqa: BLE001 - reporting must never break a request
            self._failed(failure)

    def _failed(self, error: Exception) -> None:
        key = (type(error), str(error))
        if key in self._logged:
            return
        if len(self._logged) < _MAX_LOGGED_FAILURES:
            self._logged.add(key)
        self.logger.warning(
            "Kaneda could not report a request's metrics: %s",
            error,
            exc_info=not isinstance(error, KanedaError),
        )

    def __repr__(self) -> str:
        return f"<RequestReporter {self.duration_name} via {self.metrics!r}>"


def add_request_tags(request: Any, tags: Mapping[str, Any] | None = None, /, **more: Any) -> None:
    """Add tags to the timing of the request being served.

    ``request`` is the WSGI environ or the ASGI scope, or a framework's request object
    holding one (Flask's ``request``, Starlette's ``Request``). The tags are checked
    now, and a bad one raises :class:`~kaneda_core.InvalidMetric` here, in the view;
    they are merged last, so a view may also override ``route``, ``method`` or
    ``status``. When no Kaneda middleware measures the request (a unit test calling the
    view directly), the tags are checked and otherwise ignored.
    """
    added = copy_tags({**tags, **more} if tags else more)
    if not isinstance(added, dict):  # pragma: no cover - a dict in, a dict out
        raise InvalidMetric(f"tags must be a dict of scalars, got {tags!r}")
    carrier = _carrier(request)
    state = carrier.get(REQUEST_KEY)
    if not isinstance(state, RequestState):
        return
    merged = {**state.tags, **added} if state.tags else added
    reporter = state.reporter
    try:
        reporter.check_tags(reporter._timing_tags(reporter.unmatched_route, "GET", "200", merged))
    except InvalidMetric:
        raise
    except Exception as error:  # noqa: BLE001 - a backend's own fault must not fail the view
        # The timing is checked again when reported, where the middleware logs what fails.
        logging.getLogger("kaneda").warning(
            "Kaneda: the backend's check of request tags failed: %r", error
        )
    state.tags = merged


def _carrier(request: Any) -> MutableMapping[str, Any]:
    """The environ or scope ``request`` is, or holds."""
    if isinstance(request, MutableMapping):
        return request
    for attribute in ("scope", "environ"):
        carrier = getattr(request, attribute, None)
        if isinstance(carrier, MutableMapping):
            return carrier
    raise TypeError(
        "add_request_tags needs the WSGI environ, the ASGI scope, or a request object "
        f"holding one (.environ or .scope), got {type(request).__name__}"
    )


def resolve_metrics(metrics: Metrics | str | None) -> Metrics:
    """The :class:`Metrics` to report through: the one given, one for a URL, or ``KANEDA_URL``'s."""
    if metrics is None:
        return Metrics()
    if isinstance(metrics, str):
        return Metrics(metrics)
    if isinstance(metrics, Metrics):
        return metrics
    raise ConfigurationError(
        "metrics must be a kaneda_core.Metrics, a backend URL or name, or None (to read "
        f"KANEDA_URL), got a {type(metrics).__name__}"
    )


__all__ = [
    "REQUEST_KEY",
    "ROUTE_KEY",
    "RequestReporter",
    "RequestState",
    "add_request_tags",
    "resolve_metrics",
]
