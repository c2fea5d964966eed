"""kaneda-elasticsearch through the real client against the fake server: requests, errors."""

from __future__ import annotations

import base64
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from elastic_transport import SecurityWarning
from elasticsearch import Elasticsearch
from es_helpers import closed_port
from fake_elasticsearch import FakeElasticsearch
from kaneda_elasticsearch import ElasticsearchBackend
from kaneda_elasticsearch.schema import index_template

from kaneda_core import DeliveryError, Metric, Metrics, RetryPolicy, connect, load_backend
from kaneda_core.errors import ImproperlyConfigured

SECRET = "el4stic-s3cret"
FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)


def backend_for(server: FakeElasticsearch, **kwargs: Any) -> ElasticsearchBackend:
    return ElasticsearchBackend("kaneda", "web", connection_url=server.url, timeout=5, **kwargs)


def bulk_lines(server: FakeElasticsearch) -> list[list[dict[str, Any]]]:
    return [
        [json.loads(line) for line in body.decode().splitlines()] for body in server.bulk_requests()
    ]


# -- construction -----------------------------------------------------------------------


def test_registered_and_reachable_by_the_seed_import_path() -> None:
    import inspect

    from kaneda.backends import ElasticsearchBackend as Seed

    assert load_backend("elasticsearch") is ElasticsearchBackend
    assert issubclass(Seed, ElasticsearchBackend) and Seed.settings_namespace == "ELASTIC"
    assert inspect.signature(Seed).parameters["layout"].default == "kaneda1"
    assert inspect.signature(ElasticsearchBackend).parameters["layout"].default == "kaneda2"


def test_a_client_is_used_and_anything_else_refused(fake_es: FakeElasticsearch) -> None:
    client = Elasticsearch(fake_es.url)
    backend = ElasticsearchBackend("kaneda", "web", client=client)
    backend.send([Metric.create("g", "gauge", 1)])
    assert len(fake_es.documents()) == 1
    with pytest.raises(ImproperlyConfigured, match="not an instance of Elasticsearch client"):
        ElasticsearchBackend("kaneda", "web", client=object())  # type: ignore[arg-type]


def nodes(backend: ElasticsearchBackend) -> list[tuple[str, str, int]]:
    return sorted(
        (n.config.scheme, n.config.host, n.config.port)
        for n in backend.client.transport.node_pool.all()
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"connection_url": "https://user:secret@es1:9200"}, [("https", "es1", 9200)]),
        (
            {"connection_url": ["http://es1:9200", "http://es2:9201"]},
            [("http", "es1", 9200), ("http", "es2", 9201)],
        ),
        ({"host": "es1", "port": 9300}, [("http", "es1", 9300)]),
        ({"host": ["es1", "es2"]}, [("http", "es1", 9200), ("http", "es2", 9200)]),
        ({}, [("http", "localhost", 9200)]),
    ],
)
def test_connection_url_and_host_forms(kwargs: dict[str, Any], expected: list[Any]) -> None:
    assert nodes(ElasticsearchBackend("kaneda", "web", **kwargs)) == expected


def test_basic_auth_from_user_and_password_reaches_the_server(fake_es: FakeElasticsearch) -> None:
    host, port = fake_es.url.rsplit("/", 1)[1].split(":")
    backend = ElasticsearchBackend(
        "kaneda", "web", host=host, port=int(port), user="kaneda", password=SECRET, timeout=5
    )
    backend.send([Metric.create("g", "gauge", 1)])
    authorization = {
        h.get("Authorization") or h.get("authorization") for _, _, h, _ in fake_es.requests
    }
    token = base64.b64encode(f"kaneda:{SECRET}".encode()).decode()
    assert authorization == {f"Basic {token}"}
    assert SECRET not in repr(backend)


def test_tls_verification_stays_on_unless_turned_off(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    on = ElasticsearchBackend("kaneda", "web", connection_url="https://es:9200")
    with pytest.warns(SecurityWarning, match="insecure"):  # the client says so, too
        off = ElasticsearchBackend(
            "kaneda", "web", connection_url="https://es:9200", verify_certs=False
        )
    [node_on] = on.client.transport.node_pool.all()
    [node_off] = off.client.transport.node_pool.all()
    assert node_on.config.verify_certs is True and node_off.config.verify_certs is False
    with pytest.warns(SecurityWarning):
        from_url = connect(
            "elasticsearch+https://es:9200/?index_name=k&app_name=w&verify_certs=false"
        )
    [node_url] = from_url.backend.client.transport.node_pool.all()  # type: ignore[attr-defined]
    assert node_url.config.verify_certs is False and node_url.config.scheme == "https"
    bundled = ElasticsearchBackend(
        "kaneda", "web", connection_url="https://es:9200", ca_certs=str(bundle)
    )
    [node_bundle] = bundled.client.transport.node_pool.all()
    assert node_bundle.config.ca_certs == str(bundle) and node_bundle.config.verify_certs
    from_url.close()


def test_connect_by_url_kaneda_url_and_settings(
    fake_es: FakeElasticsearch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = fake_es.url.split("://")[1]
    with connect(f"elasticsearch://{address}/?index_name=kaneda&app_name=web&timeout=5") as m:
        m.gauge("by_url", 1)
    monkeypatch.setenv("KANEDA_URL", f"elasticsearch://{address}/?index_name=kaneda&app_name=env")
    with Metrics() as m:
        m.gauge("by_env", 2)
    monkeypatch.delenv("KANEDA_URL")
    (tmp_path / "es_settings.py").write_text(
        "BACKEND = 'kaneda.backends.ElasticsearchBackend'\n"
        f"ELASTIC_INDEX_NAME = 'kaneda'\nELASTIC_APP_NAME = 'legacy'\n"
        f"ELASTIC_CONNECTION_URL = {fake_es.url!r}\nELASTIC_TIMEOUT = 5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("KANEDA_SETTINGS_MODULE", "es_settings")
    import kaneda

    kaneda.Metrics().gauge("by_settings", 3)
    sys.modules.pop("es_settings", None)
    apps = sorted((s["name"], s["app_name"]) for _, _, s in fake_es.documents())
    assert apps == [("by_env", "env"), ("by_settings", "legacy"), ("by_url", "web")]


def test_a_url_without_index_name_is_refused_without_its_password() -> None:
    with pytest.raises(Exception, match="has no index_name") as caught:
        connect(f"elasticsearch+https://u:{SECRET}@es:9200/?app_name=web")
    assert SECRET not in str(caught.value)


# -- requests ---------------------------------------------------------------------------


def test_one_bulk_request_per_batch_with_ndjson_lines(fake_es: FakeElasticsearch) -> None:
    with Metrics(backend_for(fake_es), batch_size=250, flush_interval=60) as metrics:
        for _ in range(500):
            metrics.increment("requests", tags={"route": "/", "code": 200})
        metrics.custom("order", "order", {"total": 9.5}, id_="o-1")
    bodies = bulk_lines(fake_es)
    assert [len(lines) for lines in bodies] == [500, 500, 2]
    action, source = bodies[0][0], bodies[0][1]
    today = datetime.now(timezone.utc).strftime("%Y.%m.%d")
    assert action["index"]["_index"] == f"kaneda-{today}"
    assert len(action["index"]["_id"]) == 32  # derived from the metric: see test_..._answers
    assert source["name"] == "requests" and source["metric"] == "counter"
    assert source["tags"] == {"route": "/", "code": "200"} and source["value"] == 1
    assert source["app_name"] == "web" and source["value_type"] == "number"
    assert bodies[2][0] == {"index": {"_index": f"kaneda-{today}", "_id": "o-1"}}


def test_daily_indices_follow_each_metrics_own_utc_day(fake_es: FakeElasticsearch) -> None:
    before = datetime(2025, 12, 31, 23, 59, 59, 999_000, tzinfo=timezone.utc)
    after = datetime(2026, 1, 1, 0, 0, 0, 1_000, tzinfo=timezone.utc)
    backend_for(fake_es).send(
        [
            Metric.create("g", "gauge", 1, timestamp=before),
            Metric.create("g", "gauge", 2, timestamp=after),
        ]
    )
    assert len(fake_es.bulk_requests()) == 1
    assert sorted(fake_es.indices) == ["kaneda-2025.12.31", "kaneda-2026.01.01"]


def test_the_template_is_installed_once_and_maps_every_field(fake_es: FakeElasticsearch) -> None:
    backend = backend_for(fake_es)
    for i in range(3):
        backend.send([Metric.create("g", "gauge", i)])
    puts = [path for method, path, _, _ in fake_es.requests if path.startswith("/_index_template")]
    assert puts == ["/_index_template/kaneda"]
    template = fake_es.templates["kaneda"]
    assert template == index_template("kaneda")
    properties = template["template"]["mappings"]["properties"]
    assert properties["@timestamp"]["type"] == "date_nanos"
    for keyword in ("name", "metric", "host", "app_name", "labels", "value_type"):
        assert properties[keyword]["type"] == "keyword"
    assert (
        properties["value"]["type"],
        properties["text"]["type"],
        properties["fields"]["type"],
    ) == ("double", "text", "flattened")


def test_a_gauge_an_event_and_custom_shapes_use_fields_that_cannot_collide(
    fake_es: FakeElasticsearch,
) -> None:
    with Metrics(backend_for(fake_es)) as metrics:
        metrics.gauge("checkout", 7)
        metrics.event("checkout", "slow checkout")
        metrics.custom("checkout", "cart", {"items": 3})
        metrics.custom("checkout", "cart", {"items": {"sku": "A1"}})
        metrics.custom("checkout", "cart", [1, 2])
        metrics.custom("checkout", "cart", True)
        metrics.gauge("checkout", 1, tags=["list", "tags"])
    docs = [source for _, _, source in fake_es.documents()]
    holders = sorted(
        (d["value_type"], next(k for k in ("value", "text", "fields", "flag") if k in d))
        for d in docs
    )
    assert holders == [
        ("bool", "flag"),
        ("dict", "fields"),
        ("dict", "fields"),
        ("list", "fields"),
        ("number", "value"),
        ("number", "value"),
        ("text", "text"),
    ]
    assert any(d.get("labels") == ["list", "tags"] for d in docs)


def test_an_id_is_the_document_id_so_a_retried_batch_does_not_duplicate(
    fake_es: FakeElasticsearch,
) -> None:
    backend = backend_for(fake_es)
    batch = [Metric.create("o", "order", {"n": i}, id=f"o-{i}") for i in range(3)]
    backend.send(batch)
    backend.send(batch)
    assert sorted(doc_id for _, doc_id, _ in fake_es.documents()) == ["o-0", "o-1", "o-2"]


# -- failures -----------------------------------------------------------------------------


def test_per_item_errors_fail_those_metrics_and_retry_the_throttled(
    fake_es: FakeElasticsearch, failures: Any
) -> None:
    backend = backend_for(fake_es)
    backend.send([Metric.create("warm", "gauge", 0)])
    fake_es.item_errors = {
        1: (400, "document_parsing_exception", "failed to parse field [value]"),
        2: (429, "es_rejected_execution_exception", "rejected execution"),
    }
    metrics = Metrics(backend, retry=FAST)
    for i in range(4):
        metrics.gauge("g", i)
    metrics.flush(10)
    stored = sorted(s["value"] for _, _, s in fake_es.documents() if s["name"] == "g")
    assert stored == [0, 2, 3]  # item 2 went through on the retry
    [(lost, error)] = failures.seen
    assert [m.value for m in lost] == [1] and "document_parsing_exception" in str(error)
    stats = metrics.stats()
    assert (stats.sent, stats.failed, stats.retried) == (3, 1, 1)


@pytest.mark.parametrize(
    ("status", "body", "retryable", "words"),
    [
        (429, {"error": {"type": "too_many_requests"}, "status": 429}, True, "answered 429"),
        (503, {"error": {"type": "unavailable"}, "status": 503}, True, "answered 503"),
        (401, {"error": {"type": "security_exception"}, "status": 401}, False, "credentials"),
        (403, {"error": {"type": "security_exception"}, "status": 403}, False, "grant it"),
    ],
)
def test_whole_request_failures(
    fake_es: FakeElasticsearch, status: int, body: dict[str, Any], retryable: bool, words: str
) -> None:
    backend = backend_for(fake_es)
    backend.send([Metric.create("warm", "gauge", 0)])
    fake_es.fail_next = [(status, body)]
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    assert caught.value.retryable is retryable and words in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"type": "illegal_argument_exception"}, "status": 400},  # said with a 200
        {"took": 1, "errors": False, "items": []},  # fewer items than documents sent
        {},
    ],
)
def test_a_bulk_answer_that_confirms_fewer_documents_is_not_counted_as_sent(
    fake_es: FakeElasticsearch, body: dict[str, Any]
) -> None:
    backend = backend_for(fake_es)
    backend.send([Metric.create("warm", "gauge", 0)])
    fake_es.fail_next = [(200, body)]
    metrics = Metrics(backend, batching=False)
    metrics.gauge("g", 1)
    assert (metrics.stats().sent, metrics.stats().failed) == (0, 1)


def test_a_large_document_is_stored_within_the_default_timeout(fake_es: FakeElasticsearch) -> None:
    """The timeout (0.3 s) waits for a server that does not answer; a large request takes
    longer to store however well the server answers, and was failed at every retry."""
    backend = ElasticsearchBackend("kaneda", "web", connection_url=fake_es.url)
    assert backend.timeout == 0.3
    backend.send([Metric.create("warm", "gauge", 0)])
    fake_es.seconds_per_mb = 0.25  # 4 MB/s: 3 MB take 0.75 s
    metrics = Metrics(backend, batching=False)
    metrics.event("dump", "y" * 3_000_000)
    assert (metrics.stats().sent, metrics.stats().failed) == (1, 0)


def test_a_closed_port_is_retryable_and_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"elasticsearch://kaneda:{SECRET}@127.0.0.1:{closed_port()}/?index_name=k&app_name=w"
    metrics = connect(url, batching=False)
    metrics.gauge("g", 1)
    assert metrics.stats().failed == 1
    assert "unreachable" in caplog.text and SECRET not in caplog.text
    with pytest.raises(DeliveryError) as caught:
        metrics.backend.send([Metric.create("g", "gauge", 1)])
    assert caught.value.retryable and SECRET not in str(caught.value)


def test_a_server_that_is_not_elasticsearch_gets_a_clear_error() -> None:
    # OpenSearch, for one, does not send X-Elastic-Product: the official client refuses it.
    server = FakeElasticsearch(product=False)
    try:
        backend = backend_for(server)
        with pytest.raises(DeliveryError) as caught:
            backend.send([Metric.create("g", "gauge", 1)])
        assert not caught.value.retryable
        assert "OpenSearch is not supported" in str(caught.value)
        assert server.bulk_requests() == []
    finally:
        server.stop()


def test_a_template_install_failure_is_retried_by_the_next_delivery(
    fake_es: FakeElasticsearch,
) -> None:
    fake_es.fail_next = [(503, {"error": {"type": "unavailable"}, "status": 503})]
    metrics = Metrics(backend_for(fake_es), retry=FAST)
    metrics.gauge("g", 1)
    assert metrics.flush(10) == 0
    assert "kaneda" in fake_es.templates and len(fake_es.documents()) == 1
    assert metrics.stats().retried == 1


def test_what_elasticsearch_cannot_index_is_refused_at_the_call() -> None:
    from kaneda_core import InvalidMetric, Metrics

    backend = ElasticsearchBackend("kaneda", "tests", host="127.0.0.1", port=1)
    metrics = Metrics(backend, flush_interval=60)
    with pytest.raises(InvalidMetric, match="keyword"):
        metrics.gauge("g", 1, tags={"big": "x" * 40_000})
    with pytest.raises(InvalidMetric, match="keyword"):
        metrics.gauge("n" * 40_000, 1)
    with pytest.raises(InvalidMetric, match="100 MB"):
        metrics.event("dump", "x" * 100_000_000)
    metrics.event("dump", "x" * 1_000_000)  # long text is fine in an event
    assert metrics.stats().queued == 1
    metrics.close(0.1)
