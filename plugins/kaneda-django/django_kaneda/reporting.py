"""What a request reports: one timing, and a counter for unhandled exceptions.

The same names, tags and rules as kaneda-web's WSGI and ASGI middlewares (its
:class:`~kaneda_web.reporting.RequestReporter` does the reporting here too), so a Django
service and a Flask or FastAPI one report alike. The middleware measures and finds the
route; the reporter turns a finished :class:`RequestState` into metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaneda_web.reporting import (
    DEFAULT_DURATION_NAME,
    DEFAULT_EXCEPTIONS_NAME,
    HTTP_METHODS,
    OTHER_METHOD,
    UNMATCHED_ROUTE,
    RequestState,
)
from kaneda_web.reporting import RequestReporter as _WebReporter

from kaneda_core import InvalidMetric, Metrics
from kaneda_core.model import copy_tags

#: The attribute of Django's request holding its :class:`RequestState`.
REQUEST_ATTRIBUTE = "_kaneda_request"


class RequestReporter(_WebReporter):
    """kaneda-web's reporter, logging its failures on the ``django_kaneda`` logger."""

    def __init__(self, metrics: Metrics, **options: Any) -> None:
        super().__init__(metrics, logger_name="django_kaneda", **options)


def add_request_tags(request: Any, tags: Mapping[str, Any] | None = None, /, **more: Any) -> None:
    """Add tags to the timing of the request ``request`` (Django's ``HttpRequest``).

    The tags are checked now, and a bad one raises :class:`~kaneda_core.InvalidMetric`
    here, in the view; they are merged last, so a view may also override ``route``,
    ``method`` or ``status``. When ``MetricsMiddleware`` does not measure the request (a
    view called through ``RequestFactory``), the tags are checked and otherwise ignored.
    """
    added = copy_tags({**tags, **more} if tags else more)
    if not isinstance(added, dict):  # pragma: no cover - a dict in, a dict out
        raise InvalidMetric(f"tags must be a dict of scalars, got {tags!r}")
    state = getattr(request, REQUEST_ATTRIBUTE, None)
    if not isinstance(state, RequestState):
        return
    merged = {**state.tags, **added} if state.tags else added
    reporter = state.reporter
    reporter.check_tags(reporter._timing_tags(reporter.unmatched_route, "GET", "200", merged))
    state.tags = merged


__all__ = [
    "DEFAULT_DURATION_NAME",
    "DEFAULT_EXCEPTIONS_NAME",
    "HTTP_METHODS",
    "OTHER_METHOD",
    "REQUEST_ATTRIBUTE",
    "UNMATCHED_ROUTE",
    "RequestReporter",
    "RequestState",
    "add_request_tags",
]
