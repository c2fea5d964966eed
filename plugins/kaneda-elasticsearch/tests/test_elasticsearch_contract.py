"""The backend contract on the fake server (the real client, a real socket), and on a
real Elasticsearch when KANEDA_TEST_ELASTICSEARCH_URL is set."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from es_helpers import closed_port, real_server_url, to_metric
from fake_elasticsearch import FakeElasticsearch
from kaneda_elasticsearch import ElasticsearchBackend

from kaneda_core import Backend, Metric
from kaneda_core.testing import BackendContract


class TestContract(BackendContract):
    """Against the fake server: this checks the client-side half of the contract."""

    @pytest.fixture
    def backend(self, fake_es: FakeElasticsearch) -> Iterator[Backend]:
        self.server = fake_es
        backend = ElasticsearchBackend("kaneda", "tests", connection_url=fake_es.url, timeout=10)
        yield backend
        backend.close()

    @pytest.fixture
    def unreachable_backend(self) -> Iterator[Backend]:
        backend = ElasticsearchBackend("kaneda", "tests", host="127.0.0.1", port=closed_port())
        yield backend
        backend.close()

    def normalize_tags(self, tags: Any) -> Any:
        # Tag values are keywords: stored as strings.
        return {k: str(v) for k, v in tags.items()} if isinstance(tags, dict) else tags

    @pytest.fixture
    def backend_at(self) -> Any:
        return lambda host, port: ElasticsearchBackend(
            "kaneda", "tests", host=host, port=port, timeout=0.3
        )

    def stored(self, backend: Backend) -> Sequence[Metric]:
        return [to_metric(doc_id, source) for _, doc_id, source in self.server.fetch_documents()]


@pytest.mark.skipif(
    real_server_url() is None,
    reason="a real Elasticsearch: docker compose up -d elasticsearch, then set "
    "KANEDA_TEST_ELASTICSEARCH_URL=http://localhost:9200",
)
class TestContractRealServer(BackendContract):
    """The same contract against a real Elasticsearch (docker compose up -d elasticsearch)."""

    def normalize_tags(self, tags: Any) -> Any:
        return {k: str(v) for k, v in tags.items()} if isinstance(tags, dict) else tags

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        index = f"kaneda-test-{uuid.uuid4().hex[:8]}"
        backend = ElasticsearchBackend(index, "tests", connection_url=real_server_url(), timeout=30)
        yield backend
        backend.client.indices.delete(index=f"{index}-*", ignore_unavailable=True)
        backend.client.indices.delete_index_template(name=index)
        backend.close()

    @pytest.fixture
    def unreachable_backend(self) -> Iterator[Backend]:
        backend = ElasticsearchBackend("kaneda", "tests", host="127.0.0.1", port=closed_port())
        yield backend
        backend.close()

    def stored(self, backend: Backend) -> Sequence[Metric]:
        assert isinstance(backend, ElasticsearchBackend)
        pattern = f"{backend.index_name}-*"
        backend.client.indices.refresh(index=pattern, ignore_unavailable=True)
        hits = backend.client.search(index=pattern, size=10_000, ignore_unavailable=True)
        return [to_metric(hit["_id"], hit["_source"]) for hit in hits["hits"]["hits"]]
