"""CeleryBackend on real brokers: one Celery task message per batch, failures, a fork."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from brokers import RabbitMQServer, RedisServer, free_port
from kaneda_celery import CeleryBackend
from kombu import Connection

from kaneda_core import ConfigurationError, Metric, Metrics, RetryPolicy, connect
from kaneda_core.message import decode_batch
from kaneda_core.model import timestamp_from_ns


def produced(name: str) -> Metric:
    ns = 1_600_000_000_000_000_001
    return Metric(name, "gauge", 1, {"zone": "eu"}, timestamp_from_ns(ns), "app-7", None, ns)


def take_messages(broker: str, queue_name: str, expected: int) -> list[Any]:
    """Take ``expected`` messages off ``queue_name`` (and acknowledge them)."""
    taken = []
    with Connection(broker) as connection:
        queue = connection.SimpleQueue(queue_name)
        for _ in range(expected):
            message = queue.get(timeout=10)
            message.ack()
            taken.append(message)
        queue.close()
    return taken


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> str:
    server: RedisServer | RabbitMQServer = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "rabbitmq_server"
    )
    return server.url


# -- URLs ----------------------------------------------------------------------------


def test_urls_name_the_broker_and_the_queue() -> None:
    backend = connect("celery+amqp://app:s3cret@mq.example:5672/prod?queue_name=metrics").backend
    assert isinstance(backend, CeleryBackend)
    assert backend.broker == "amqp://app:s3cret@mq.example:5672/prod"
    assert backend.queue_name == "metrics"
    assert "s3cret" not in repr(backend) and "s3cret" not in backend.redact("login s3cret")
    redis = CeleryBackend.from_url("celery+redis://h:6379/1?visibility_timeout=60")
    assert (redis.broker, redis.visibility_timeout) == ("redis://h:6379/1", 60.0)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("celery://h:6379/0", "not a Celery queue URL"),
        ("celery+redis://h:6379/0?queue_name=", "queue_name must be a non-empty string"),
        ("celery+redis://h:6379/0?timeout=-1", "timeout must be above zero"),
        (
            "celery+amqp://u:pw@h//?colour=red",
            r"Unknown option 'colour' in celery\+amqp://u:\*\*\*@",
        ),
    ],
)
def test_bad_urls_are_refused_naming_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        connect(url)


# -- one task per batch ----------------------------------------------------------------


def test_a_batch_is_one_celery_task_carrying_every_metrics_host_time_and_id(broker: str) -> None:
    queue_name = f"kaneda-{os.urandom(4).hex()}"
    backend = CeleryBackend(broker, queue_name)
    backend.send([produced("a"), produced("b")])
    [message] = take_messages(broker, queue_name, 1)
    assert message.headers["task"] == "kaneda.deliver"
    args, _kwargs, _embed = message.payload
    first, second = decode_batch(args[0])
    assert (first.name, first.host, first.epoch_ns) == ("a", "app-7", 1_600_000_000_000_000_001)
    assert second.name == "b" and first.id != second.id
    assert message.properties.get("delivery_mode") == 2  # persistent
    backend.close()


def test_a_batch_published_whose_answer_was_lost_is_sent_again_with_the_same_ids(
    broker: str,
) -> None:
    # The broker has the task, and the connection drops before the application hears
    # so: the batch is sent again, and both tasks are stored. A store keying by id keeps
    # one copy only if they carry the same ids.
    from kombu.exceptions import OperationalError

    queue_name = f"kaneda-{os.urandom(4).hex()}"
    backend = CeleryBackend(broker, queue_name)
    app = backend.app()
    publish = app.send_task
    lost = []

    def published_then_dropped(*args: Any, **kwargs: Any) -> Any:
        result = publish(*args, **kwargs)
        if not lost:
            lost.append(result)
            raise OperationalError("connection reset by peer after the publish")
        return result

    app.send_task = published_then_dropped  # type: ignore[method-assign]
    metrics = Metrics(backend, retry=RetryPolicy(attempts=3, initial_delay=0.05), flush_interval=60)
    metrics.gauge("load", 0.5)
    metrics.increment("requests")
    assert metrics.flush(10) == 0
    metrics.close()
    first, second = (decode_batch(m.payload[0][0]) for m in take_messages(broker, queue_name, 2))
    assert [m.name for m in first] == [m.name for m in second] == ["load", "requests"]
    assert [m.id for m in first] == [m.id for m in second]
    assert first[0].id != first[1].id


def test_a_broker_that_is_down_fails_the_batch_for_now() -> None:
    backend = CeleryBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(Exception) as caught:
        backend.send([produced("a")])
    assert backend.is_retryable(caught.value)
    metrics = Metrics(backend, batching=False)
    metrics.gauge("x", 1)  # the application never sees it
    assert metrics.stats().failed == 1
    backend.close()


def test_a_wrong_password_is_not_retried(rabbitmq_server: RabbitMQServer) -> None:
    backend = CeleryBackend(f"amqp://guest:wrong-one@127.0.0.1:{rabbitmq_server.port}//")
    with pytest.raises(Exception) as caught:
        backend.send([produced("a")])
    assert not backend.is_retryable(caught.value)
    assert "wrong-one" not in backend.redact(str(caught.value))
    backend.close()


def test_a_forked_child_sends_on_connections_of_its_own(redis_server: RedisServer) -> None:
    queue_name = f"kaneda-{os.urandom(4).hex()}"
    backend = CeleryBackend(redis_server.url, queue_name)
    backend.send([produced("parent")])
    parent_app = backend.app()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            backend.send([produced("child")])  # no after_fork: the pid guard notices
            code = 0 if backend.app() is not parent_app else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    backend.send([produced("parent-again")])
    names = sorted(
        decode_batch(m.payload[0][0])[0].name
        for m in take_messages(redis_server.url, queue_name, 3)
    )
    assert names == ["child", "parent", "parent-again"]
    backend.close()


class _WorkerStoppedOnAnError:
    """Celery's app as run_worker sees it: worker_main answers the worker's exit status
    (1 when it stopped on an unrecoverable error, such as RabbitMQ's RESOURCE_LOCKED)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.argv: list[str] = []

    def worker_main(self, argv: list[str]) -> int:
        self.argv = argv
        return self.status


def test_a_celery_worker_stopped_on_an_error_makes_kaneda_worker_fail() -> None:
    from kaneda_celery.app import run_worker

    from kaneda_core import KanedaError

    app = _WorkerStoppedOnAnError(1)
    with pytest.raises(KanedaError, match="exit status 1"):
        run_worker(app, "kaneda")  # type: ignore[arg-type]
    # A node name of its own: two workers on one host no longer share celery@host.
    assert f"--hostname=kaneda-{os.getpid()}@%h" in app.argv
    run_worker(_WorkerStoppedOnAnError(0), "kaneda")  # type: ignore[arg-type]  # a stop


def test_a_redis_out_of_memory_is_said_so_and_retried(own_redis: RedisServer) -> None:
    """Redis at maxmemory (noeviction) answers every write with an OOM error: it was
    reported as unreachable, with advice about the network and the credentials."""
    import redis

    from kaneda_core.errors import DeliveryError

    client = redis.Redis.from_url(own_redis.url)
    client.set("filler", b"x" * 1_000_000)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + 10_000)
    backend = CeleryBackend(own_redis.url, f"oom-{os.urandom(3).hex()}")
    metric = Metric("g", "gauge", 1, {}, timestamp_from_ns(1), "h", None, 1)
    try:
        with pytest.raises(DeliveryError) as raised:
            backend.send([metric] * 200)
    finally:
        client.config_set("maxmemory", 0)
        client.close()
        backend.close()
    message = str(raised.value)
    assert "out of memory" in message and "unreachable" not in message, message
    assert raised.value.retryable


def test_a_rabbitmq_that_blocks_publishers_fails_the_send_within_its_timeout(
    rabbitmq_server: RabbitMQServer,
) -> None:
    # A memory or disk alarm blocks publishers (connection.blocked): the send waited for
    # the confirm without end, the worker thread with it, and nothing was logged.
    import subprocess

    ctl = ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", rabbitmq_server.node]
    env = rabbitmq_server.environment()

    def watermark(value: str) -> None:
        done = subprocess.run(
            [*ctl, "set_vm_memory_high_watermark", value], env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr

    backend = CeleryBackend(rabbitmq_server.url, queue_name="blocked", timeout=1)
    backend.send([produced("before")])  # connected before the alarm, as in production
    watermark("0.0000001")
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            backend.send([produced("during")])
        assert time.monotonic() - started < 8
        assert backend.is_retryable(caught.value)
    finally:
        watermark("0.2")
    backend.close()
