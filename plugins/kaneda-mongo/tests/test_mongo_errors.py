"""What a user reads when MongoDB cannot be reached: one short line, not pymongo's topology."""

from __future__ import annotations

import socket

import pytest
from kaneda_mongo import MongoBackend

from kaneda_core import ConfigurationError, DeliveryError, Metric


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_is_summarised_in_one_line() -> None:
    port = closed_port()
    backend = MongoBackend("db", "metrics", host="127.0.0.1", port=port, timeout=50)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert caught.value.retryable
    assert f"127.0.0.1:{port}: [Errno 111] Connection refused" in message
    assert "within 50 ms" in message and "Check that mongod runs" in message
    assert "Topology Description" not in message and "configured timeouts" not in message
    assert len(message) < 300 and "\n" not in message
    backend.close()


def test_every_address_of_a_replica_set_is_named() -> None:
    first, second = closed_port(), closed_port()
    url = f"mongodb://kaneda:qz7xk9@127.0.0.1:{first},127.0.0.1:{second}/?replicaSet=rs"
    backend = MongoBackend("db", "metrics", connection_url=url, timeout=50)
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert f"127.0.0.1:{first}" in message and f"127.0.0.1:{second}" in message
    assert "qz7xk9" not in message
    backend.close()


def test_what_pymongo_refuses_in_a_url_is_a_configuration_error_without_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        MongoBackend("db", "m", connection_url="mongodb://kaneda:qz7xk9@h/?w")
    assert "pymongo refuses" in str(caught.value) and "qz7xk9" not in str(caught.value)


def test_a_tls_ca_file_that_is_missing_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="tlscafile"):
        MongoBackend("db", "m", connection_url="mongodb://h/?tls=true&tlsCAFile=/nonexistent.pem")
