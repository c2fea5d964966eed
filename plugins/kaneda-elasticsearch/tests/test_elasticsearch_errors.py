"""What a user reads when Elasticsearch cannot be reached or used: one line, with advice."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from es_helpers import closed_port
from kaneda_elasticsearch import ElasticsearchBackend

from kaneda_core import ConfigurationError, DeliveryError, Metric

TLS = Path(__file__).parent / "tls"


def test_a_closed_port_names_the_address_the_reason_and_what_to_check() -> None:
    port = closed_port()
    backend = ElasticsearchBackend("k", "web", host="127.0.0.1", port=port)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert caught.value.retryable
    assert f"http://127.0.0.1:{port}" in message
    assert "Connection refused" in message
    assert "Check that Elasticsearch runs there" in message
    assert "\n" not in message and message.count("Connection error") == 0
    backend.close()


def test_the_clients_own_lines_about_kanedas_requests_are_held_back_not_the_apps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from elasticsearch import Elasticsearch

    port = closed_port()
    backend = ElasticsearchBackend("k", "web", host="127.0.0.1", port=port)
    with caplog.at_level(logging.WARNING, logger="elastic_transport"):
        for _ in range(3):
            with pytest.raises(DeliveryError):
                backend.send([Metric.create("g", "gauge", 1)])
        assert [r for r in caplog.records if r.name.startswith("elastic_transport")] == []
        own = Elasticsearch(f"http://127.0.0.1:{port}", max_retries=0)
        with pytest.raises(Exception):
            own.info()
        assert any(r.name == "elastic_transport.node_pool" for r in caplog.records)
    own.close()
    backend.close()


def test_a_name_that_does_not_resolve_says_so() -> None:
    backend = ElasticsearchBackend("k", "web", host="kaneda-no-such-host.invalid", port=9200)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    assert "kaneda-no-such-host.invalid" in str(caught.value)
    assert "resolve" in str(caught.value)
    backend.close()


def test_a_certificate_that_does_not_verify_is_not_retried(self_signed_server: int) -> None:
    url = f"https://127.0.0.1:{self_signed_server}"
    backend = ElasticsearchBackend("k", "web", connection_url=url, timeout=5)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert not caught.value.retryable, message
    assert "certificate did not verify" in message and "ca_certs=" in message
    backend.close()


def test_the_trusted_certificate_is_then_accepted_as_far_as_tls_goes(
    self_signed_server: int,
) -> None:
    url = f"https://127.0.0.1:{self_signed_server}"
    backend = ElasticsearchBackend(
        "k", "web", connection_url=url, ca_certs=str(TLS / "cert.pem"), timeout=5
    )
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    # TLS passed; the server then hangs up without an HTTP answer: a transient failure.
    assert "certificate" not in str(caught.value)
    assert caught.value.retryable
    backend.close()


def test_a_ca_bundle_that_is_missing_is_refused_at_construction(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigurationError, match=r"ca_certs=.*is not a file this process can read"):
        ElasticsearchBackend("k", "web", connection_url="https://h:9200", ca_certs=str(missing))
