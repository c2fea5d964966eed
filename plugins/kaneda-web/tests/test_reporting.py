"""Names, tags and their checks; failures that must never reach the request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kaneda_web import WSGIMiddleware, add_request_tags
from kaneda_web.reporting import HTTP_METHODS, OTHER_METHOD
from web_helpers import EXCEPTIONS, reported, request_tags

from kaneda_core import Backend, ConfigurationError, InvalidMetric, Metric, Metrics


def call(app: Any, path: str = "/", method: str = "GET") -> None:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD=method)
    result = app(environ, lambda status, headers, exc_info=None: None)
    b"".join(result)
    result.close()


def tagging(**tags: Any) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        add_request_tags(environ, **tags)
        start_response("200 OK", [])
        return [b"ok"]

    return app


def test_names_units_and_tags_are_configurable(metrics: Metrics) -> None:
    app = WSGIMiddleware(
        tagging(),
        metrics,
        duration_name="web.latency",
        tags={"service": "shop"},
        route_tag="endpoint",
        status_tag="code",
        method_tag=None,
        use_ms=True,
        unmatched_route="other",
    )
    call(app)
    [timing] = reported(metrics, "web.latency")
    assert timing.tags == {"service": "shop", "endpoint": "other", "code": "200"}
    assert type(timing.value) is int  # whole milliseconds


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("duration_name", "", "duration_name"),
        ("exceptions_name", 7, "exceptions_name"),
        ("route_tag", "", "route_tag"),
        ("unmatched_route", None, "unmatched_route"),
        ("tags", ["a", "b"], "tags"),
        ("tags", {"tier": object()}, "tags['tier']"),
        ("use_ms", "yes", "use_ms"),
    ],
)
def test_a_bad_option_fails_at_construction_naming_it(
    metrics: Metrics, option: str, value: Any, named: str
) -> None:
    with pytest.raises((InvalidMetric, ConfigurationError)) as raised:
        WSGIMiddleware(tagging(), metrics, **{option: value})
    assert named in str(raised.value)


class Refusing(Backend):
    """Stores nothing it refuses: tags named 'name', as InfluxDB does."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def check(self, metric: Metric) -> None:
        if isinstance(metric.tags, dict) and "name" in metric.tags:
            raise InvalidMetric(f"tag 'name' is reserved, got tags={metric.tags!r}")

    def send(self, batch: Sequence[Metric]) -> None:
        self.metrics.extend(batch)


def test_the_backend_refuses_a_bad_tag_name_at_construction() -> None:
    with pytest.raises(InvalidMetric, match="reserved"):
        WSGIMiddleware(tagging(), Metrics(Refusing(), batching=False), route_tag="name")


def test_a_bad_tag_from_a_view_raises_in_the_view() -> None:
    metrics = Metrics(Refusing(), batching=False)
    app = WSGIMiddleware(tagging(name="x"), metrics)
    with pytest.raises(InvalidMetric, match="reserved"):
        call(app)
    # The view raised: the request is timed as a 500 and the exception counted.
    assert request_tags(metrics)[0]["status"] == "500"
    assert reported(metrics, EXCEPTIONS)[0].tags["exception"] == "InvalidMetric"  # type: ignore[call-overload]


@pytest.mark.parametrize("bad", [{"": "x"}, {"tier": [1, 2]}, {"tier": float("nan")}])
def test_add_request_tags_refuses_bad_tags_naming_them(metrics: Metrics, bad: Any) -> None:
    app = WSGIMiddleware(tagging(**bad), metrics)
    with pytest.raises(InvalidMetric) as raised:
        call(app)
    assert "tag" in str(raised.value)


class _FaultyCheck(Backend):
    """A backend whose own check fails on a tag (a bug of its own, not bad input)."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []

    def check(self, metric: Metric) -> None:
        if "tier" in metric.tags:
            raise RuntimeError("backend check bug")

    def send(self, batch: Sequence[Metric]) -> None:
        self.metrics.extend(batch)


def test_a_backend_check_that_fails_on_request_tags_never_fails_the_view(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """add_request_tags let the backend's RuntimeError through: the request answered 500."""
    metrics = Metrics(_FaultyCheck(), batching=False)
    answered: list[str] = []
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    app = WSGIMiddleware(tagging(tier="gold"), metrics)
    body = app(environ, lambda status, headers, exc_info=None: answered.append(status))
    assert b"".join(body) == b"ok"
    body.close()
    assert answered == ["200 OK"]
    assert "backend check bug" in caplog.text


def test_add_request_tags_outside_a_measured_request_checks_and_does_nothing() -> None:
    environ: dict[str, Any] = {}
    add_request_tags(environ, tier="gold")
    assert environ == {}
    with pytest.raises(InvalidMetric):
        add_request_tags(environ, tier=object())
    with pytest.raises(TypeError, match="environ"):
        add_request_tags(object(), tier="gold")


tag_keys = st.text(min_size=1, max_size=8).filter(
    lambda key: key not in ("route", "method", "status")
)
tag_values = st.one_of(
    st.text(max_size=12),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(tag_keys, tag_values, max_size=4))
def test_tags_a_view_adds_are_on_the_timing(tags: dict[str, Any]) -> None:
    metrics = Metrics("memory", batching=False)
    call(WSGIMiddleware(tagging(**tags), metrics))
    [timing] = request_tags(metrics)
    assert timing == {"route": "<unmatched>", "method": "GET", "status": "200", **tags}


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12))
def test_the_method_tag_has_a_bounded_set_of_values(method: str) -> None:
    metrics = Metrics("memory", batching=False)
    call(WSGIMiddleware(tagging(), metrics), method=method)
    [tags] = request_tags(metrics)
    expected = method if method in HTTP_METHODS else OTHER_METHOD
    assert tags["method"] == expected


def test_a_reporting_failure_never_reaches_the_request(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Backend):
        def check(self, metric: Metric) -> None:
            if metric.tags and metric.tags.get("status") == "404":  # type: ignore[union-attr]
                raise InvalidMetric("this backend cannot store 404s")

        def send(self, batch: Sequence[Metric]) -> None:
            pass

    def not_found(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [])
        return [b"no"]

    app = WSGIMiddleware(not_found, Metrics(Broken(), batching=False))
    with caplog.at_level(logging.WARNING, logger="kaneda_web"):
        for _ in range(3):
            call(app)  # no exception
    failures = [r for r in caplog.records if "could not report" in r.getMessage()]
    assert len(failures) == 1  # logged once, not at every request
    assert "cannot store 404s" in failures[0].getMessage()


def test_a_backend_outage_never_shows_in_a_response() -> None:
    class Down(Backend):
        def send(self, batch: Sequence[Metric]) -> None:
            raise ConnectionRefusedError("backend down")

    metrics = Metrics(Down(), batching=False)
    call(WSGIMiddleware(tagging(), metrics))
    assert metrics.stats().failed == 1


def test_metrics_may_be_a_url_or_come_from_kaneda_url(monkeypatch: pytest.MonkeyPatch) -> None:
    app = WSGIMiddleware(tagging(), "memory://")
    assert type(app.metrics.backend).__name__ == "MemoryBackend"
    app.metrics.close()
    monkeypatch.setenv("KANEDA_URL", "memory://")
    app = WSGIMiddleware(tagging())
    assert type(app.metrics.backend).__name__ == "MemoryBackend"
    app.metrics.close()


def test_metrics_of_the_wrong_type_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        WSGIMiddleware(tagging(), {"url": "influxdb://u:s3cret@host/db"})  # type: ignore[arg-type]
    assert "dict" in str(raised.value) and "s3cret" not in str(raised.value)


def test_a_url_with_a_password_never_shows_it_in_an_error() -> None:
    with pytest.raises(ConfigurationError) as raised:
        WSGIMiddleware(tagging(), "nosuchbackend://user:s3cret@host/db")
    assert "s3cret" not in str(raised.value)
