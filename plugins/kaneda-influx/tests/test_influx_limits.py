"""Sizes InfluxDB refuses are refused at the call; a request the server cuts off for its
size fails its own metrics only. Against real influxd servers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from influx_server import InfluxServer, stored_metrics
from kaneda_influx import InfluxBackend
from kaneda_influx.line_protocol import MAX_KEY_BYTES, MAX_STRING_BYTES

from kaneda_core import DeliveryError, InvalidMetric, Metric, Metrics, RetryPolicy

ONCE = RetryPolicy(attempts=1, initial_delay=0.01, max_delay=0.01)


@pytest.fixture(scope="module")
def default_limit_server() -> Iterator[InfluxServer]:
    """An influxd with InfluxDB's default [http] max-body-size, 25 MB."""
    server = InfluxServer(max_body_size=25_000_000)
    server.start()
    yield server
    server.destroy()


def test_a_text_over_the_limit_once_escaped_is_refused_at_the_call(
    default_limit_server: InfluxServer,
) -> None:
    """Every quote is written as two: 16 MiB of quotes is a 32 MiB line, over 25 MB."""
    database = f"big_{uuid.uuid4().hex[:8]}"
    backend = InfluxBackend(database, host="127.0.0.1", port=default_limit_server.port, timeout=10)
    with Metrics(backend, flush_interval=60, retry=ONCE) as metrics:
        quotes = '"' * (MAX_STRING_BYTES - 10)
        with pytest.raises(InvalidMetric) as refused:
            metrics.event("dump", quotes)
        message = str(refused.value)
        assert "text" in message and f"{2 * len(quotes)} bytes" in message, message
        with pytest.raises(InvalidMetric, match=r"value\['blob'\]"):
            metrics.custom("dump", "report", {"blob": "\\" * (MAX_STRING_BYTES // 2 + 1)})
        metrics.event("fits", "ab" * (MAX_STRING_BYTES // 4))  # half the limit, no escapes
        metrics.gauge("small", 1.0)
        assert metrics.flush(60) == 0
        assert (metrics.stats().sent, metrics.stats().failed) == (2, 0)
    stored = stored_metrics(default_limit_server, database)
    assert sorted(m.name for m in stored) == ["fits", "small"]


def test_a_request_the_server_cuts_off_for_its_size_fails_its_own_metrics_only(
    default_limit_server: InfluxServer,
) -> None:
    """influxd answers 413 and closes the connection while a body over max-body-size is
    still being sent: the write fails with a broken pipe, which is not "unreachable"."""
    database = f"cut_{uuid.uuid4().hex[:8]}"
    backend = InfluxBackend(database, host="127.0.0.1", port=default_limit_server.port, timeout=10)
    # Each string is under the limit; the point (30 MB) is over the server's 25 MB.
    huge = Metric.create("dump", "report", {"a": "y" * 15_000_000, "b": "z" * 15_000_000})
    backend.check(huge)
    small = [Metric.create("small", "gauge", i) for i in range(3)]
    with pytest.raises(DeliveryError) as caught:
        backend.send([small[0], huge, *small[1:]])
    error = caught.value
    assert error.metrics == [huge] and not error.retryable, str(error)
    assert "max-body-size" in str(error) and "unreachable" not in str(error)
    assert sorted(m.value for m in stored_metrics(default_limit_server, database)) == [0, 1, 2]


# -- InfluxDB's key limit: series key + "#!~#" + field key ---------------------------------


def pad_to(backend: InfluxBackend, size: int, **fields: object) -> str:
    """A tag value that makes the series key of gauge "n" (tag "big") ``size`` bytes."""
    probe = Metric.create("n", "gauge", 1.0, {"big": "x"})
    base = len(backend.layout.series(probe).encode("utf-8")) - 1
    return "x" * (size - base)


@pytest.mark.parametrize("layout", ["kaneda2", "kaneda1"])
def test_a_series_key_too_long_with_its_field_key_is_refused_at_the_call(
    influx_server: InfluxServer, database: str, layout: str
) -> None:
    backend = InfluxBackend(
        database, host="127.0.0.1", port=influx_server.port, timeout=10, layout=layout
    )
    with Metrics(backend, flush_interval=60, retry=ONCE) as metrics:
        # The series key alone is under 65,535 bytes; with "#!~#value" it is over.
        with pytest.raises(InvalidMetric) as refused:
            metrics.gauge("n", 1.0, tags={"big": pad_to(backend, 65_530)})
        message = str(refused.value)
        assert "tags['big']" in message and "65530" in message, message
        assert f"{65_530 + 4 + 5}" in message and str(MAX_KEY_BYTES) in message, message
        # A custom metric: a 1,000-byte field key and a 64,600-byte tag.
        with pytest.raises(InvalidMetric) as refused:
            metrics.custom("n", "gauge", {"k" * 1000: 1.0}, tags={"big": "x" * 64_600})
        message = str(refused.value)
        assert "tags['big']" in message and "value key 'kkkk" in message, message
        assert "1000 bytes" in message, message
        # Exactly at the limit: stored.
        exact = pad_to(backend, MAX_KEY_BYTES - 4 - len("value"))
        metrics.gauge("n", 2.0, tags={"big": exact})
        assert metrics.flush(30) == 0
        assert (metrics.stats().sent, metrics.stats().failed) == (1, 0)
    [stored] = stored_metrics(influx_server, database)
    assert stored.tags == {"big": exact}
