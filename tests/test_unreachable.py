"""A server that is not there: one line that names the address, what failed, what to check.

Every backend and queue is pointed at a loopback port where nothing listens. ``kaneda
send`` must say so in one line; a ``Metrics`` reporting through an outage must log one
line when it starts (not one per retry, and none from the client libraries), and the
drops it logs must be the ones ``stats()`` counts.
"""

from __future__ import annotations

import io
import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr

import pytest

from kaneda_core import RetryPolicy, connect
from kaneda_core.cli import main

URLS = {
    "influxdb": "influxdb://127.0.0.1:{port}/metrics",
    "elasticsearch": "elasticsearch://127.0.0.1:{port}/?index_name=k&app_name=web",
    "mongodb": "mongodb://127.0.0.1:{port}/metrics?collection_name=m&timeout=200",
    "rethinkdb": "rethinkdb://127.0.0.1:{port}/metrics",
    "rq": "rq://127.0.0.1:{port}/0?timeout=1",
    "celery+redis": "celery+redis://127.0.0.1:{port}/0?timeout=1",
    "celery+amqp": "celery+amqp://guest:qz7xk9@127.0.0.1:{port}//?timeout=1",
    "zmq": "zmq+tcp://127.0.0.1:{port}?timeout=0.3",
}

#: What each says to check (the server's own name, so the user knows what to start).
CHECK = {
    "influxdb": "Check that influxd runs there",
    "elasticsearch": "Check that Elasticsearch runs there",
    "mongodb": "Check that mongod runs",
    "rethinkdb": "Check that RethinkDB runs there",
    "rq": "Check that redis-server runs there",
    "celery+redis": "Check that the broker runs there",
    "celery+amqp": "Check that the broker runs there",
    "zmq": "Check that a kaneda worker runs",
}


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def every_log_line() -> Iterator[io.StringIO]:
    """Every record of level WARNING or above, from any logger, one per line."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield text
    finally:
        root.removeHandler(handler)


@pytest.mark.parametrize("name", sorted(URLS))
def test_kaneda_send_says_in_one_line_where_and_what_to_check(name: str, closed_port: int) -> None:
    url = URLS[name].format(port=closed_port)
    err = io.StringIO()
    with redirect_stderr(err):
        assert main(["send", url, "gauge", "g", "1"]) == 1
    said = err.getvalue()
    assert said.count("\n") == 1, said
    assert f"127.0.0.1:{closed_port}" in said.partition(" failed: ")[2], said
    assert CHECK[name] in said, said
    assert "qz7xk9" not in said


@pytest.mark.parametrize("name", sorted(URLS))
def test_an_outage_is_one_line_and_the_logged_drops_are_the_counted_ones(
    name: str, closed_port: int
) -> None:
    url = URLS[name].format(port=closed_port)
    with every_log_line() as logged:
        metrics = connect(
            url,
            retry=RetryPolicy(attempts=3, initial_delay=0.05, max_delay=0.1),
            max_buffer=10,
            flush_interval=60,
        )
        for number in range(100):
            metrics.gauge("g", number)
        metrics.flush(timeout=20)
        metrics.close(timeout=5)
    lines = logged.getvalue().splitlines()
    stats = metrics.stats()
    # Most of the 100 are dropped; the worker, woken to report the drops, may take what is
    # queued at that moment (a slow machine lets it run mid-loop): those fail instead.
    assert stats.dropped + stats.failed == 100 and stats.sent == 0 and stats.dropped >= 50
    foreign = [line for line in lines if not line.startswith("kaneda: ")]
    assert foreign == [], "the client library logged lines of its own"
    assert len([line for line in lines if "cannot deliver" in line]) == 1, lines
    dropped = [int(n) for n in re.findall(r"(\d+) metrics dropped so far", "\n".join(lines))]
    assert dropped and dropped[-1] == stats.dropped
    assert "qz7xk9" not in logged.getvalue()
