"""The two layouts of kaneda-elasticsearch: chosen by argument or URL, stored as described."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fake_elasticsearch import FakeElasticsearch
from kaneda_elasticsearch import ElasticsearchBackend
from kaneda_elasticsearch.layouts import Kaneda1Layout

from kaneda_core import ConfigurationError, Metric, create_backend

WHEN = datetime(2026, 11, 25, 10, 0, 0, 250000, tzinfo=timezone.utc)


def metric(kind: str, value: object, tags: object = None, id_: object = None) -> Metric:
    made = Metric.create("shop.order", kind, value, tags, id_, timestamp=WHEN)  # type: ignore[arg-type]
    return made._replace(host="web-1")


def test_layout_by_argument_and_url() -> None:
    assert ElasticsearchBackend("k", "web").layout.name == "kaneda2"
    assert ElasticsearchBackend("k", "web", layout="kaneda1").layout.name == "kaneda1"
    url = "elasticsearch://localhost:9200/?index_name=k&app_name=web&layout=kaneda1"
    assert create_backend(url).layout.name == "kaneda1"  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"layout must be one of .* got 'es1'"):
        ElasticsearchBackend("k", "web", layout="es1")


def test_kaneda1_documents_are_1_0s_with_the_kind_in_metric() -> None:
    document = Kaneda1Layout().document(metric("order", {"items": 3}, ["vip"]), "web")
    assert document == {
        "host": "web-1",
        "name": "shop.order",
        "items": 3,
        "tags": ["vip"],
        "app_name": "web",
        "@timestamp": "2026-11-25T10:00:00.250000",
        "metric": "order",
    }
    whole_second = metric("gauge", 1)._replace(timestamp=WHEN.replace(microsecond=0))
    assert Kaneda1Layout().document(whole_second, "web")["@timestamp"] == "2026-11-25T10:00:00"


def test_kaneda1_indexes_with_its_own_template_and_answers_per_item(
    fake_es: FakeElasticsearch,
) -> None:
    backend = ElasticsearchBackend("kaneda", "web", connection_url=fake_es.url, layout="kaneda1")
    answers = backend.send([metric("gauge", 1, id_="g-1"), metric("event", "deploy")])
    template = fake_es.templates["kaneda"]
    assert template["index_patterns"] == ["kaneda-*"]
    assert set(template["template"]["mappings"]["properties"]) == {"@timestamp", "metric", "value"}
    stored = {doc_id: source for _, doc_id, source in fake_es.documents()}
    assert stored["g-1"]["value"] == 1 and stored["g-1"]["metric"] == "gauge"
    assert answers[0]["_id"] == "g-1"
    assert answers[1]["_id"] in stored and stored[answers[1]["_id"]]["value"] == "deploy"
