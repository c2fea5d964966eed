"""What the backend makes of each answer a bulk request may get: none (the connection
dropped after the write), a proxy's page, garbled JSON, 413, a per-item 409; and the
document ids that make sending a batch again harmless."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fake_elasticsearch import FakeElasticsearch
from kaneda_elasticsearch import ElasticsearchBackend
from kaneda_elasticsearch.schema import document_id

from kaneda_core import DeliveryError, Metric, Metrics, RetryPolicy

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)
SIGN_IN_PAGE = b"<!DOCTYPE html><html><body><form action='/login'>Sign in</form></body></html>"


def backend_for(server: FakeElasticsearch, **kwargs: Any) -> ElasticsearchBackend:
    backend = ElasticsearchBackend("kaneda", "web", connection_url=server.url, timeout=2, **kwargs)
    backend.send([Metric.create("warm", "gauge", 0)])  # the template is in
    return backend


def stored_values(server: FakeElasticsearch, name: str = "g") -> list[Any]:
    return sorted(source["value"] for _, _, source in server.documents() if source["name"] == name)


# -- document ids -------------------------------------------------------------------------


def test_a_batch_whose_answer_was_lost_is_stored_once_when_retried(
    fake_es: FakeElasticsearch,
) -> None:
    fake_es.hang_up_after_storing = 1  # stored, then the connection closes unanswered
    backend = ElasticsearchBackend("k", "a", connection_url=fake_es.url, timeout=0.5)
    metrics = Metrics(backend, retry=RetryPolicy(attempts=3, initial_delay=0.05))
    for value in range(3):
        metrics.gauge("g", value)
    metrics.close(10)
    assert len(fake_es.bulk_requests()) == 2  # the lost answer, then the retry
    assert stored_values(fake_es) == [0, 1, 2]
    assert (metrics.stats().sent, metrics.stats().failed) == (3, 0)


def test_every_document_gets_an_id_from_what_makes_its_metric_unique(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es)
    batch = [Metric.create("g", "gauge", i, tags={"i": i}) for i in range(3)]
    first = backend.send(batch)
    second = backend.send(batch)  # a queue's redelivery
    assert [a["_id"] for a in first] == [a["_id"] for a in second]
    assert all(re.fullmatch("[0-9a-f]{32}", a["_id"]) for a in first)
    assert stored_values(fake_es) == [0, 1, 2]
    given = backend.send([Metric.create("o", "order", {"n": 1}, id="o-1")])
    assert given[0]["_id"] == "o-1"  # a caller's id_ is kept


def test_metrics_that_differ_in_any_part_of_their_identity_get_different_ids() -> None:
    base = Metric.create("a", "gauge", 1, tags={"b": "c"})
    variants = [
        base,
        base._replace(host=base.host + "x"),
        base._replace(time_ns=base.epoch_ns + 1),
        base._replace(kind="counter"),
        base._replace(name="a.b"),
        base._replace(tags={"b": "d"}),
        base._replace(tags={"b": "c", "e": "f"}),
        base._replace(tags=["b", "c"]),
        base._replace(tags={"b": 1}),
        base._replace(tags={"b": "1"}),
        base._replace(tags={"b": True}),
        # parts that would run together if simply joined: name "a" + tag "b,c"
        base._replace(name="a,b", tags={"": "c"}),
    ]
    ids = [document_id(m) for m in variants]
    assert len(set(ids)) == len(ids)
    # The value is not part of it (one call, one stamp); tag order is not either.
    assert document_id(base._replace(value=2)) == document_id(base)
    swapped = Metric.create("a", "gauge", 1, tags={"x": 1, "y": 2})
    assert document_id(swapped) == document_id(swapped._replace(tags={"y": 2, "x": 1}))


# -- answers that are not Elasticsearch's -------------------------------------------------


def test_a_proxys_page_answered_with_200_names_the_server_and_is_retried_whole(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es)
    fake_es.raw_next = [(200, "text/html; charset=utf-8", SIGN_IN_PAGE)]
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert fake_es.url in message and "not Elasticsearch's" in message and "proxy" in message
    assert caught.value.retryable and not caught.value.isolate and "\n" not in message

    before = len(fake_es.bulk_requests())
    fake_es.raw_next = [(200, "text/html", SIGN_IN_PAGE)]
    metrics = Metrics(backend, retry=FAST)
    for value in range(4):
        metrics.gauge("g", value)
    metrics.close(10)
    assert len(fake_es.bulk_requests()) - before == 2  # the page, then the retry: no halving
    assert stored_values(fake_es) == [0, 1, 2, 3]
    assert (metrics.stats().sent, metrics.stats().retried) == (4, 4)


def test_garbled_json_is_said_to_be_so_not_an_unreachable_server(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es)
    fake_es.raw_next = [(200, "application/json", b'{"took":1,"errors":fal')]
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert "unreachable" not in message and "Check that Elasticsearch runs" not in message
    assert "not valid JSON" in message and fake_es.url in message
    assert caught.value.retryable


# -- 413 ----------------------------------------------------------------------------------


def test_a_request_over_the_size_limit_is_sent_in_halves(fake_es: FakeElasticsearch) -> None:
    backend = backend_for(fake_es)
    fake_es.max_content_length = 2_500  # two events of 1,000 characters fit, not four
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("e", "event", "x" * 1_000) for _ in range(4)])
    message = str(caught.value)
    assert caught.value.isolate and not caught.value.retryable
    assert "413" in message and "batch_size" in message and fake_es.url in message

    metrics = Metrics(backend, retry=FAST, flush_interval=60)
    for _ in range(4):
        metrics.event("e", "x" * 1_000)
    metrics.close(10)
    assert len([d for d in fake_es.documents() if d[2]["name"] == "e"]) == 4
    assert (metrics.stats().sent, metrics.stats().failed) == (4, 0)


def test_a_single_document_over_the_limit_fails_alone_with_advice(
    fake_es: FakeElasticsearch, failures: Any
) -> None:
    backend = backend_for(fake_es)
    fake_es.max_content_length = 2_500
    metrics = Metrics(backend, retry=FAST, flush_interval=60)
    metrics.gauge("g", 1)
    metrics.event("dump", "x" * 5_000)
    metrics.gauge("g", 2)
    metrics.close(10)
    assert stored_values(fake_es) == [1, 2]
    [(lost, error)] = failures.seen
    assert [m.name for m in lost] == ["dump"]
    assert "413" in str(error) and "limit" in str(error)
    assert (metrics.stats().sent, metrics.stats().failed) == (2, 1)


# -- per-item 409 -------------------------------------------------------------------------


def test_a_version_conflict_on_an_item_counts_as_stored(
    fake_es: FakeElasticsearch, failures: Any
) -> None:
    backend = backend_for(fake_es)
    fake_es.item_errors = {
        1: (409, "version_conflict_engine_exception", "[x]: version conflict, document exists")
    }
    metrics = Metrics(backend, retry=FAST)
    for value in range(3):
        metrics.gauge("g", value)
    metrics.close(10)
    assert (metrics.stats().sent, metrics.stats().failed, metrics.stats().retried) == (3, 0, 0)
    assert failures.seen == []
