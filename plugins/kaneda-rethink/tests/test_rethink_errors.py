"""What a user reads when RethinkDB cannot be reached: the address and what to check."""

from __future__ import annotations

import socket

import pytest
from kaneda_rethink import RethinkBackend

from kaneda_core import DeliveryError, Metric


def test_a_closed_port_names_the_address_the_reason_and_what_to_check() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = RethinkBackend("metrics", host="127.0.0.1", port=port, password="qz7xk9jv")
    with pytest.raises(DeliveryError) as caught:
        backend.send([Metric.create("g", "gauge", 1)])
    message = str(caught.value)
    assert caught.value.retryable
    assert f"RethinkDB at 127.0.0.1:{port}" in message and "Connection refused" in message
    assert "Check that RethinkDB runs there" in message and "qz7xk9jv" not in message
    backend.close()
