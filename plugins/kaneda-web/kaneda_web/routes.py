"""The route template a request matched, read from what the framework left behind.

Never the raw path: ``/items/{item_id}``, not ``/items/42``, so the route tag has as
many values as the application has routes. No framework is imported here; each is
recognised by what it puts in the WSGI environ or the ASGI scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .reporting import ROUTE_KEY

_MAX_MOUNT_DEPTH = 16


def wsgi_route(environ: Mapping[str, Any]) -> str | None:
    """The route of a WSGI request: ``environ["kaneda.route"]``, or Flask's ``url_rule``.

    Werkzeug keeps the request object in ``environ["werkzeug.request"]`` while Flask
    serves it; Flask sets ``request.url_rule`` when a rule matched. Never raises: what
    cannot be read leaves the route unmatched, and the request carries on.
    """
    try:
        return _wsgi_route(environ)
    except Exception:  # noqa: BLE001 - finding the route must never break the request
        return None


def _wsgi_route(environ: Mapping[str, Any]) -> str | None:
    route = environ.get(ROUTE_KEY)
    if route:
        return str(route)
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    if rule is not None:
        template = getattr(rule, "rule", None)
        if isinstance(template, str) and template:
            return template
    return None


def asgi_route(scope: Mapping[str, Any], root_path: str) -> str | None:
    """The route of an ASGI request: ``scope["kaneda.route"]``, or Starlette's / FastAPI's.

    Starlette's router leaves the matched route in ``scope["route"]``; its ``path`` is
    the template as declared (``/items/{item_id}``). FastAPI versions that include
    routers lazily keep, in that route, only the path declared in its own router; the
    template with every ``include_router`` prefix is in FastAPI's routing state (see
    :func:`_fastapi_template`). When a ``Mount`` took part of the path (``root_path``
    grew), the routes are matched again from the outer router to join the templates of
    the mount and the route inside it. Never raises: what cannot be read leaves the
    route unmatched, and the request carries on.
    """
    try:
        return _asgi_route(scope, root_path)
    except Exception:  # noqa: BLE001 - finding the route must never break the request
        return None


def _asgi_route(scope: Mapping[str, Any], root_path: str) -> str | None:
    route = scope.get(ROUTE_KEY)
    if route:
        return str(route)
    matched = scope.get("route")
    if matched is None and "endpoint" not in scope:
        return None  # no route matched: a 404, or not a Starlette application
    included = _fastapi_template(scope)
    if scope.get("root_path", "") == root_path:
        if included is not None:
            return included
        path = getattr(matched, "path", None)
        if isinstance(path, str) and path and not hasattr(matched, "routes"):
            return path
    router = scope.get("router") or getattr(scope.get("app"), "router", None)
    routes = getattr(router, "routes", None)
    if routes is None:
        return None
    if included is None:
        path = getattr(matched, "path", None)
        included = path if isinstance(path, str) and path else None
    outer = {**scope, "root_path": root_path}
    return _match_template(routes, outer, "", 0, included)


def _fastapi_template(scope: Mapping[str, Any]) -> str | None:
    """The template FastAPI selected, its ``include_router`` prefixes joined; None if none.

    FastAPI (0.1xx and later) no longer copies an included router's routes with the
    prefix added: it keeps the route as declared and records the route it selected,
    prefixes applied, in ``scope["fastapi"]["effective_route_context"]`` (a plain
    Starlette route in an included router gets a ``starlette_route`` with the full
    path). Earlier versions leave no such state, and their routes hold the full path.
    """
    state = scope.get("fastapi")
    if not isinstance(state, Mapping):
        return None
    context = state.get("effective_route_context")
    if context is None:
        return None
    for candidate in (getattr(context, "starlette_route", None), context):
        path = getattr(candidate, "path", None)
        if isinstance(path, str) and path:
            return path
    return None


def _match_template(
    routes: Iterable[Any], scope: dict[str, Any], prefix: str, depth: int, included: str | None
) -> str | None:
    """The template of the route in ``routes`` that matches ``scope``, mounts joined.

    ``included`` is the template of the route selected inside a router the framework
    keeps opaque (FastAPI's included routers: no ``path`` of their own), relative to the
    application that holds it.
    """
    partial: str | None = None
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # noqa: BLE001 - an odd route never breaks the measurement
            continue
        kind = getattr(match, "name", "")
        path = getattr(route, "path", "") or ""
        if kind == "FULL":
            inner = getattr(route, "routes", None)
            if inner is None:
                if not path and included is not None:
                    return prefix + included  # an included router: what it selected
                return prefix + path
            # A Mount: its path is a prefix; the routes of the mounted app say the rest.
            mounted = prefix + path
            if inner and depth < _MAX_MOUNT_DEPTH:
                found = _match_template(inner, {**scope, **child}, mounted, depth + 1, included)
                if found is not None:
                    return found
            return mounted + "/{path}"
        if kind == "PARTIAL" and partial is None:
            partial = prefix + path  # the method is not allowed there: still that route
    return partial


__all__ = ["asgi_route", "wsgi_route"]
