"""What request metrics cost per request, per framework, next to the alternatives, in one run.

    pip install django-prometheus prometheus-flask-exporter prometheus-fastapi-instrumentator \\
        opentelemetry-sdk opentelemetry-instrumentation-wsgi opentelemetry-instrumentation-asgi
    python3 bench/bench_web.py            # prints a Markdown table

Each framework serves the same one-route application (``/items/<id>`` answering a small
JSON document) plain, with Kaneda's middleware, and with each installed peer. Requests
are made the way a server makes them, without a socket: a fresh WSGI environ per
request, the body iterated and closed (Flask, Django); a fresh ASGI scope per request
on one event loop (FastAPI). The variants of one framework take turns, a repeat
of ``N`` requests each, so that load from elsewhere on the machine falls on all alike; a
row gives the median and the best repeat, and "added" the median's difference to the
plain application of the same framework.

Kaneda's rows report through a batching ``kaneda_core.Metrics`` to a backend that
stores nothing, and each repeat ends with ``flush()`` inside the timing: the worker's
share (building and delivering the metrics) is counted. Peers record into their own
in-process registry or an in-memory OpenTelemetry reader; none of them exports during
the timing. A peer that is not installed is left out of the table. Installed Kaneda hook
plugins are blocked, as in ``bench_hot_path.py``: the rows measure Kaneda alone.
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from typing import Any
from wsgiref.util import setup_testing_defaults

from kaneda_core import Backend, Metric, Metrics

N = 2000
REPEAT = 9
WARMUP = 200


class NullBackend(Backend):
    """Stores nothing: the rows measure Kaneda, not a database."""

    def send(self, batch: Sequence[Metric]) -> None:
        pass


def kaneda_metrics() -> Metrics:
    return Metrics(NullBackend())


def without_hook_plugins() -> None:
    """Block installed hook plugins (the example plugin's filter): measure Kaneda alone."""
    from kaneda_core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    for name, _plugin in manager.list_name_plugin():
        manager.set_blocked(name)


Variant = tuple[str, Callable[[], None], Callable[[], None] | None]  # name, run, after


def measure(framework: str, variants: list[Variant]) -> list[tuple[str, str, float, float]]:
    """(framework, variant, median, best) microseconds per request.

    The variants take turns, one repeat each, so that a neighbour's load on a shared
    machine falls on all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _ in range(REPEAT):
        for name, run, after in variants:
            start = time.perf_counter()
            run()
            if after is not None:
                after()
            times[name].append((time.perf_counter() - start) / N * 1e6)
    return [
        (framework, name, statistics.median(times[name]), min(times[name]))
        for name, _, _ in variants
    ]


# -- WSGI --------------------------------------------------------------------------


def wsgi_runner(app: Any, path: str) -> Callable[[], None]:
    base: dict[str, Any] = {}
    setup_testing_defaults(base)
    base["PATH_INFO"] = path

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    def run(requests: int = N) -> None:
        for _ in range(requests):
            body = app(dict(base), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

    run(WARMUP)
    return run


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def flask_rows() -> list[tuple[str, str, float, float]]:
    from kaneda_web import WSGIMiddleware

    variants: list[Variant] = [("plain", wsgi_runner(flask_app(), "/items/42"), None)]

    app = flask_app()
    metrics = kaneda_metrics()
    app.wsgi_app = WSGIMiddleware(app.wsgi_app, metrics)  # type: ignore[method-assign]
    variants.append(("**kaneda-web WSGIMiddleware**", wsgi_runner(app, "/items/42"), metrics.flush))

    try:
        from prometheus_client import CollectorRegistry
        from prometheus_flask_exporter import PrometheusMetrics
    except ImportError:
        pass
    else:
        app = flask_app()
        PrometheusMetrics(app, registry=CollectorRegistry())
        variants.append(("prometheus-flask-exporter", wsgi_runner(app, "/items/42"), None))

    otel = otel_meter_provider()
    if otel is not None:
        try:
            from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
        except ImportError:
            pass
        else:
            app = flask_app()
            app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app, meter_provider=otel)  # type: ignore[method-assign]
            name = "OpenTelemetry WSGI middleware (metrics)"
            variants.append((name, wsgi_runner(app, "/items/42"), None))
    rows = measure("Flask", variants)
    metrics.close()
    return rows


def otel_meter_provider() -> Any:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError:
        return None
    return MeterProvider(metric_readers=[InMemoryMetricReader()])


# -- Django ------------------------------------------------------------------------


def django_rows() -> list[tuple[str, str, float, float]]:
    import django
    from django.conf import settings
    from django.http import JsonResponse
    from django.urls import path

    def item(request: Any, pk: int) -> JsonResponse:
        return JsonResponse({"id": pk})

    urls = types.ModuleType("bench_web_urls")
    urls.urlpatterns = [path("items/<int:pk>/", item)]  # type: ignore[attr-defined]
    urls.kaneda_metrics = kaneda_metrics()  # type: ignore[attr-defined]
    sys.modules["bench_web_urls"] = urls
    apps = ["django_kaneda"]
    try:
        import django_prometheus  # noqa: F401

        apps.append("django_prometheus")
    except ImportError:
        pass
    settings.configure(
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="bench_web_urls",
        INSTALLED_APPS=apps,
        DATABASES={},
        MIDDLEWARE=[],
        LOGGING_CONFIG=None,
        KANEDA_REQUEST_METRICS={"metrics": "bench_web_urls.kaneda_metrics"},
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    def handler(middleware: list[str]) -> Any:
        with override_settings(MIDDLEWARE=middleware):
            return WSGIHandler()

    variants: list[Variant] = [("plain", wsgi_runner(handler([]), "/items/42/"), None)]
    kaneda = handler(["django_kaneda.middleware.MetricsMiddleware"])
    flush = urls.kaneda_metrics.flush  # type: ignore[attr-defined]
    variants.append(
        ("**kaneda-django MetricsMiddleware**", wsgi_runner(kaneda, "/items/42/"), flush)
    )
    if "django_prometheus" in apps:
        prometheus = handler(
            [
                "django_prometheus.middleware.PrometheusBeforeMiddleware",
                "django_prometheus.middleware.PrometheusAfterMiddleware",
            ]
        )
        variants.append(("django-prometheus", wsgi_runner(prometheus, "/items/42/"), None))
    return measure("Django", variants)


# -- ASGI --------------------------------------------------------------------------


def asgi_runner(app: Any, path: str, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    async def many(requests: int) -> None:
        for _ in range(requests):
            await app(dict(base), receive, send)

    def run(requests: int = N) -> None:
        loop.run_until_complete(many(requests))

    run(WARMUP)
    return run


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


def fastapi_rows() -> list[tuple[str, str, float, float]]:
    from kaneda_web import ASGIMiddleware

    loop = asyncio.new_event_loop()
    variants: list[Variant] = [("plain", asgi_runner(fastapi_app(), "/items/42", loop), None)]

    app = fastapi_app()
    metrics = kaneda_metrics()
    app.add_middleware(ASGIMiddleware, metrics=metrics)
    variants.append(
        ("**kaneda-web ASGIMiddleware**", asgi_runner(app, "/items/42", loop), metrics.flush)
    )

    try:
        from prometheus_client import CollectorRegistry
        from prometheus_fastapi_instrumentator import Instrumentator
    except ImportError:
        pass
    else:
        app = fastapi_app()
        Instrumentator(registry=CollectorRegistry()).instrument(app)
        name = "prometheus-fastapi-instrumentator"
        variants.append((name, asgi_runner(app, "/items/42", loop), None))

    otel = otel_meter_provider()
    if otel is not None:
        try:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        except ImportError:
            pass
        else:
            app = fastapi_app()
            app.add_middleware(OpenTelemetryMiddleware, meter_provider=otel)
            name = "OpenTelemetry ASGI middleware (metrics)"
            variants.append((name, asgi_runner(app, "/items/42", loop), None))
    rows = measure("FastAPI", variants)
    metrics.close()
    loop.close()
    return rows


def main() -> None:
    import logging

    logging.disable(logging.WARNING)  # peers' notices would be timed otherwise
    without_hook_plugins()
    print(f"Python {platform.python_version()}, {N} requests x {REPEAT} repeats\n")
    print("| framework | request metrics | median µs/request | best | added (median) |")
    print("|---|---|---:|---:|---:|")
    for rows in (flask_rows(), django_rows(), fastapi_rows()):
        plain = rows[0][2]
        for framework, variant, median, best in rows:
            added = "" if variant == "plain" else f"{median - plain:+.1f}"
            print(f"| {framework} | {variant} | {median:.1f} | {best:.1f} | {added} |")


if __name__ == "__main__":
    main()
