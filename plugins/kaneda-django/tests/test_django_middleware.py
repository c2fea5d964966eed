"""MetricsMiddleware in a small Django project, through Django's test clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from django.test import AsyncClient, Client, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from kaneda.exceptions import SettingsError
from kaneda_core import Backend, InvalidMetric, Metric, Metrics

DURATION = "http.request.duration"
EXCEPTIONS = "http.request.exceptions"


def stored(metrics: Any, name: str = DURATION) -> list[Metric]:
    return [m for m in metrics.backend.metrics if m.name == name]


def tags(metrics: Any, name: str = DURATION) -> list[dict[str, Any]]:
    return [dict(m.tags) for m in stored(metrics, name)]


def test_routes_are_url_patterns_never_raw_paths(fresh_metrics: Any) -> None:
    client = Client(raise_request_exception=False)
    for path in ("/", "/items/7/", "/api/users/ann/", "/archive/2024/", "/no/such/page"):
        client.get(path)
    client.get("/orders/")  # GET where only POST is allowed
    client.post("/orders/")
    assert tags(fresh_metrics) == [
        {"route": "/", "method": "GET", "status": "200"},
        {"route": "/items/<int:pk>/", "method": "GET", "status": "200"},
        {"route": "/api/users/<str:name>/", "method": "GET", "status": "200"},
        {"route": "/^archive/(?P<year>[0-9]{4})/$", "method": "GET", "status": "200"},
        {"route": "<unmatched>", "method": "GET", "status": "404"},
        {"route": "/orders/", "method": "GET", "status": "405"},
        {"route": "/orders/", "method": "POST", "status": "201"},
    ]
    assert all(isinstance(m.value, float) and m.value >= 0 for m in stored(fresh_metrics))


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=10**15))
def test_every_item_shares_one_route_tag(pk: int) -> None:
    import django_kaneda

    metrics = django_kaneda.LazyMetrics()
    original, django_kaneda.metrics = django_kaneda.metrics, metrics
    try:
        Client().get(f"/items/{pk}/")
    finally:
        django_kaneda.metrics = original
    assert tags(metrics)[0]["route"] == "/items/<int:pk>/"


def test_an_unhandled_exception_is_counted_and_timed_as_500(fresh_metrics: Any) -> None:
    response = Client(raise_request_exception=False).get("/boom/")
    assert response.status_code == 500
    assert tags(fresh_metrics) == [{"route": "/boom/", "method": "GET", "status": "500"}]
    assert tags(fresh_metrics, EXCEPTIONS) == [
        {"route": "/boom/", "method": "GET", "exception": "ZeroDivisionError"}
    ]


def test_the_test_client_still_sees_the_exception_counted_once(fresh_metrics: Any) -> None:
    with pytest.raises(ZeroDivisionError):
        Client().get("/boom/")
    assert len(stored(fresh_metrics, EXCEPTIONS)) == 1


def test_an_http404_from_a_view_is_a_404_of_its_route_not_an_exception(
    fresh_metrics: Any,
) -> None:
    assert Client().get("/missing/3/").status_code == 404
    assert tags(fresh_metrics) == [
        {"route": "/missing/<int:pk>/", "method": "GET", "status": "404"}
    ]
    assert stored(fresh_metrics, EXCEPTIONS) == []


def test_a_view_adds_tags_and_a_bad_one_raises_in_the_view(fresh_metrics: Any) -> None:
    Client().get("/tagged/")
    assert tags(fresh_metrics)[0]["tier"] == "gold"
    with pytest.raises(InvalidMetric, match="tier"):
        Client().get("/bad-tag/")


def test_add_request_tags_without_the_middleware_checks_and_does_nothing() -> None:
    from django.test import RequestFactory
    from django_kaneda import add_request_tags

    request = RequestFactory().get("/tagged/")
    add_request_tags(request, tier="gold")
    with pytest.raises(InvalidMetric):
        add_request_tags(request, tier=object())


def test_a_streamed_response_is_timed_until_its_last_byte(fresh_metrics: Any) -> None:
    response = Client().get("/stream/")
    assert stored(fresh_metrics) == []  # headers are out, the body is not
    assert b"".join(response.streaming_content) == b"chunk" * 3  # type: ignore[attr-defined]
    [timing] = stored(fresh_metrics)
    assert timing.value >= 0.15


def test_async_views_under_the_async_stack(fresh_metrics: Any) -> None:
    async def get() -> int:
        response = await AsyncClient().get("/async/5/")
        return int(response.status_code)

    assert asyncio.run(get()) == 200
    assert tags(fresh_metrics) == [
        {"route": "/async/<int:pk>/", "method": "GET", "status": "200", "mode": "async"}
    ]


def test_names_and_tags_come_from_kaneda_request_metrics(fresh_metrics: Any) -> None:
    options = {
        "duration_name": "web.latency",
        "tags": {"service": "shop"},
        "status_tag": "code",
        "method_tag": None,
        "use_ms": True,
    }
    with override_settings(KANEDA_REQUEST_METRICS=options):
        Client().get("/items/1/")
    [timing] = stored(fresh_metrics, "web.latency")
    assert timing.tags == {"service": "shop", "route": "/items/<int:pk>/", "code": "200"}
    assert type(timing.value) is int


metrics_of_my_own = Metrics("memory", batching=False)


def test_the_metrics_may_be_named_by_dotted_path(fresh_metrics: Any) -> None:
    path = f"{__name__}.metrics_of_my_own"
    with override_settings(KANEDA_REQUEST_METRICS={"metrics": path}):
        Client().get("/")
    assert len(stored(metrics_of_my_own)) == 1
    assert stored(fresh_metrics) == []


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"durationname": "x"}, "durationname"),
        ({"duration_name": ""}, "KANEDA_REQUEST_METRICS: duration_name"),
        ({"metrics": "no.such.module.metrics"}, "KANEDA_REQUEST_METRICS['metrics']"),
        ({"metrics": "django.conf.settings"}, "KANEDA_REQUEST_METRICS['metrics']"),
        (["duration_name"], "KANEDA_REQUEST_METRICS must be a dict"),
    ],
)
def test_bad_request_metrics_settings_fail_when_django_loads_the_middleware(
    fresh_metrics: Any, options: Any, named: str
) -> None:
    with override_settings(KANEDA_REQUEST_METRICS=options), pytest.raises(Exception) as raised:
        Client().get("/")
    assert named in str(raised.value)


def test_with_1_0_settings_the_middleware_batches_on_its_own_backend(fresh_metrics: Any) -> None:
    from django_kaneda.middleware import MetricsMiddleware

    v1 = {
        "KANEDA_URL": None,
        "KANEDA_OPTIONS": None,
        "KANEDA_BACKEND": "kaneda_test_project.backends.RecordingBackend",
        "KANEDA_RECORDING_HOST": "h",
    }
    with override_settings(**v1):
        middleware = MetricsMiddleware(lambda request: None)
        fresh_metrics.backend  # noqa: B018 - builds django_kaneda.metrics
        assert "sync" in repr(fresh_metrics)  # 1.0's meaning, for the application's calls
        assert "batching" in repr(middleware.metrics)  # no write in each request
        assert middleware.metrics.backend is not fresh_metrics.backend
    middleware.metrics.close()


def test_a_backend_that_refuses_a_request_metric_never_breaks_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class RefusesOrders(Backend):
        def __init__(self) -> None:
            self.metrics: list[Metric] = []

        def check(self, metric: Metric) -> None:
            if isinstance(metric.tags, dict) and metric.tags.get("route") == "/orders/":
                raise InvalidMetric("this backend refuses orders")

        def send(self, batch: Sequence[Metric]) -> None:
            self.metrics.extend(batch)

    refusing = Metrics(RefusesOrders(), batching=False)
    global metrics_of_my_own
    saved, metrics_of_my_own = metrics_of_my_own, refusing
    try:
        with (
            override_settings(KANEDA_REQUEST_METRICS={"metrics": f"{__name__}.metrics_of_my_own"}),
            caplog.at_level(logging.WARNING, logger="django_kaneda"),
        ):
            assert Client().post("/orders/").status_code == 201
    finally:
        metrics_of_my_own = saved
    assert "refuses orders" in caplog.text


def test_no_configuration_at_all_fails_at_startup_with_advice(
    monkeypatch: pytest.MonkeyPatch, fresh_metrics: Any
) -> None:
    monkeypatch.delenv("KANEDA_URL", raising=False)
    with (
        override_settings(KANEDA_URL=None, KANEDA_OPTIONS=None),
        pytest.raises(SettingsError, match="KANEDA_BACKEND"),
    ):
        Client().get("/")


def test_in_debug_mode_requests_are_logged_with_everything_else(fresh_metrics: Any) -> None:
    from django_kaneda.middleware import MetricsMiddleware

    with override_settings(KANEDA_URL=None, KANEDA_OPTIONS=None, KANEDA_DEBUG=True):
        middleware = MetricsMiddleware(lambda request: None)
        assert middleware.metrics is fresh_metrics._wrapped
        assert type(middleware.metrics.backend).__name__ == "LoggerBackend"


def test_a_1_0_queue_that_binds_its_address_serves_the_application_and_the_requests(
    fresh_metrics: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # kaneda 1.0's ZMQQueue binds its address: a second one in the process cannot. The
    # application's django_kaneda.metrics keeps it, and the request timings go through it.
    import socket

    import zmq

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.RCVTIMEO = 5000
    v1 = {
        "KANEDA_URL": None,
        "KANEDA_OPTIONS": None,
        "KANEDA_QUEUE": "kaneda.queues.ZMQQueue",
        "KANEDA_ZMQ_CONNECTION_URL": address,
    }
    try:
        with override_settings(**v1), caplog.at_level(logging.WARNING, logger="django_kaneda"):
            client = Client()
            pull.connect(address)
            assert client.get("/counted/").status_code == 200
            assert client.get("/counted/").status_code == 200
            received = [pull.recv_json() for _ in range(4)]
    finally:
        pull.close(linger=0)
        context.term()
    names = sorted(message["name"] for message in received)  # type: ignore[index]
    assert names == ["home.views", "home.views", DURATION, DURATION]
    assert "ZMQQueue" in caplog.text  # said once, at startup


def test_an_exception_while_streaming_is_counted_and_the_request_timed_once(
    fresh_metrics: Any,
) -> None:
    response = Client().get("/stream-fails/")
    with pytest.raises(ConnectionResetError):
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
    response.close()  # as the server does when the body ends, however it ends
    assert tags(fresh_metrics, EXCEPTIONS) == [
        {"route": "/stream-fails/", "method": "GET", "exception": "ConnectionResetError"}
    ]
    assert tags(fresh_metrics) == [{"route": "/stream-fails/", "method": "GET", "status": "200"}]


def test_a_streamed_body_that_raises_is_timed_even_if_the_response_is_never_closed(
    fresh_metrics: Any,
) -> None:
    """Under ASGI, Django closes a response only when its body was sent: one that raised
    half-way was counted, never timed."""
    response = Client().get("/stream-fails/")
    with pytest.raises(ConnectionResetError):
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert tags(fresh_metrics) == [{"route": "/stream-fails/", "method": "GET", "status": "200"}]
    response.close()  # a server that does close it: still one timing
    assert len(tags(fresh_metrics)) == 1


def test_an_exception_while_streaming_asynchronously_is_counted(fresh_metrics: Any) -> None:
    async def get() -> None:
        response: Any = await AsyncClient().get("/async-stream-fails/")
        with pytest.raises(ConnectionResetError):
            async for _ in response.streaming_content:
                pass
        response.close()

    asyncio.run(get())
    assert tags(fresh_metrics, EXCEPTIONS) == [
        {"route": "/async-stream-fails/", "method": "GET", "exception": "ConnectionResetError"}
    ]
    assert len(stored(fresh_metrics)) == 1


def test_i18n_patterns_report_one_route_per_language(fresh_metrics: Any) -> None:
    languages = [("en", "English"), ("fr", "French")]
    middleware = [
        "django_kaneda.middleware.MetricsMiddleware",
        "django.middleware.locale.LocaleMiddleware",
    ]
    with override_settings(LANGUAGES=languages, LANGUAGE_CODE="en", MIDDLEWARE=middleware):
        client = Client()
        for path in ("/en/about/", "/fr/about/", "/fr/about/", "/de/about/"):
            client.get(path)
    assert [t["route"] for t in tags(fresh_metrics)] == [
        "/en/about/",
        "/fr/about/",
        "/fr/about/",
        "<unmatched>",
    ]
