"""RQBackend and its jobs on a real Redis, run by RQ's own worker in this process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from brokers import RedisServer, free_port
from kaneda_rq import RQBackend
from kaneda_rq.backend import JOB
from redis import Redis
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.registry import FailedJobRegistry

from kaneda_core import ConfigurationError, Metric, Metrics, RetryPolicy, connect
from kaneda_core.backends import MemoryBackend
from kaneda_core.message import decode_batch
from kaneda_core.model import timestamp_from_ns
from kaneda_core.worker import MessageHandler, install_handler


class DownBackend(MemoryBackend):
    """A store that is down."""

    def send(self, batch: Sequence[Metric]) -> None:
        raise ConnectionRefusedError("store down")


@pytest.fixture
def queue_name() -> str:
    return f"kaneda-{os.urandom(4).hex()}"


@pytest.fixture
def queue(redis_server: RedisServer, queue_name: str) -> Iterator[Queue]:
    connection = Redis.from_url(redis_server.url)
    yield Queue(queue_name, connection=connection)
    connection.close()


def handler_on(backend: MemoryBackend) -> MessageHandler:
    handler = MessageHandler(Metrics(backend, retry=RetryPolicy(attempts=1)))
    install_handler(handler)
    return handler


def work(queue: Queue) -> None:
    """RQ's own worker, in this process, until the queue is empty."""
    SimpleWorker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")


def produced(name: str) -> Metric:
    ns = 1_600_000_000_000_000_001
    return Metric(name, "gauge", 1, {"zone": "eu"}, timestamp_from_ns(ns), "app-7", None, ns)


# -- URLs ----------------------------------------------------------------------------


def test_urls_name_the_redis_server_and_the_queue() -> None:
    backend = connect("rq://:s3cret@redis.example:6380/2?queue_name=metrics&timeout=2").backend
    assert isinstance(backend, RQBackend)
    assert backend.redis_url == "redis://:s3cret@redis.example:6380/2"
    assert (backend.queue_name, backend.timeout) == ("metrics", 2.0)
    assert "s3cret" not in repr(backend) and "s3cret" not in backend.redact("auth s3cret failed")
    assert RQBackend.from_url("rq+tls://h:6379/0").redis_url == "rediss://h:6379/0"
    assert RQBackend.from_url("rq://").redis_url == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("rq://h:6379/0?queue_name=", "queue_name must be a non-empty string"),
        ("rq://h:6379/0?retries=-1", "retries must be an integer >= 0"),
        ("rq://h:6379/0?timeout=0", "timeout must be above zero"),
        ("rq://:pw@h:6379/0?colour=red", r"Unknown option 'colour' in rq://:\*\*\*@h:6379/0"),
        (
            "rq://:pw@h:6379/metrics",
            r"rq://:\*\*\*@h:6379/metrics names a Redis database that is not a number",
        ),
    ],
)
def test_bad_urls_are_refused_naming_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        connect(url)


# -- one job per batch ---------------------------------------------------------------


def test_a_batch_is_one_job_carrying_every_metrics_host_time_and_id(
    redis_server: RedisServer, queue: Queue, queue_name: str
) -> None:
    backend = RQBackend(redis_server.url, queue_name)
    backend.send([produced("a"), produced("b")])
    [job] = queue.get_jobs()
    assert job.func_name == JOB == "kaneda_rq.jobs.deliver"
    first, second = decode_batch(job.args[0])
    assert (first.name, first.host, first.epoch_ns) == ("a", "app-7", 1_600_000_000_000_000_001)
    assert first.id != second.id and str(first.id).startswith(backend.new_id.token)
    assert job.retries_left == 3  # a job whose worker dies runs again, three times at most
    backend.close()


def test_rqs_worker_delivers_the_job_and_the_job_ends_well(
    redis_server: RedisServer, queue: Queue, queue_name: str
) -> None:
    handler = handler_on(MemoryBackend())
    try:
        metrics = Metrics(RQBackend(redis_server.url, queue_name), batching=False)
        metrics.gauge("queue.depth", 13, tags={"worker": "w1"})
        work(queue)
        [stored] = handler.metrics.backend.metrics  # type: ignore[attr-defined]
        assert (stored.name, stored.value, stored.tags) == ("queue.depth", 13, {"worker": "w1"})
        assert queue.count == 0 and FailedJobRegistry(queue=queue).count == 0
    finally:
        handler.close()
        install_handler(None)


def test_a_poison_job_goes_to_the_failed_registry_at_once_and_the_next_one_is_delivered(
    queue: Queue,
) -> None:
    handler = handler_on(MemoryBackend())
    try:
        from rq import Retry

        poison = queue.enqueue(JOB, "not a batch", retry=Retry(max=3))
        queue.enqueue(JOB, '{"kaneda": 1, "metrics": [["ok", "gauge", 1, {}, "i", 1, "h"]]}')
        work(queue)
        assert [m.name for m in handler.metrics.backend.metrics] == ["ok"]  # type: ignore[attr-defined]
        failed = FailedJobRegistry(queue=queue)
        assert failed.get_job_ids() == [poison.id]  # moved aside, not retried
        poison.refresh()
        assert "PoisonMessage" in (poison.latest_result().exc_string or "")
        assert handler.stats.poison == 1
    finally:
        handler.close()
        install_handler(None)


def test_a_job_the_store_cannot_take_now_goes_back_to_the_queue(
    redis_server: RedisServer, queue: Queue, queue_name: str
) -> None:
    handler = handler_on(DownBackend())
    try:
        RQBackend(redis_server.url, queue_name, retries=0).send([produced("a")])
        SimpleWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
        assert queue.count == 1  # back in the queue, however many times it failed
        assert FailedJobRegistry(queue=queue).count == 0
        assert handler.stats.requeued == 1
    finally:
        handler.close()
        install_handler(None)
    delivered = handler_on(MemoryBackend())
    try:
        work(queue)
        assert [m.name for m in delivered.metrics.backend.metrics] == ["a"]  # type: ignore[attr-defined]
    finally:
        delivered.close()
        install_handler(None)


# -- Redis down, a wrong password, a fork ----------------------------------------------


def test_redis_down_fails_the_batch_for_now() -> None:
    backend = RQBackend(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(Exception) as caught:
        backend.send([produced("a")])
    assert backend.is_retryable(caught.value)
    metrics = Metrics(backend, batching=False)
    metrics.gauge("x", 1)  # the application never sees it
    assert metrics.stats().failed == 1


def test_a_wrong_password_is_not_retried_and_never_shown() -> None:
    server = RedisServer(password="right-one")
    server.start()
    try:
        backend = RQBackend(f"redis://:wrong-one@127.0.0.1:{server.port}/0")
        with pytest.raises(Exception) as caught:
            backend.send([produced("a")])
        assert not backend.is_retryable(caught.value)
        metrics = Metrics(backend, batching=False)
        metrics.gauge("x", 1)
        assert metrics.stats().failed == 1 and metrics.stats().retried == 0
    finally:
        server.destroy()


def test_a_forked_child_enqueues_on_connections_of_its_own(
    redis_server: RedisServer, queue: Queue, queue_name: str
) -> None:
    backend = RQBackend(redis_server.url, queue_name)
    backend.send([produced("parent")])
    parent_queue = backend.queue()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            backend.send([produced("child")])  # no after_fork: the pid guard notices
            code = 0 if backend.queue() is not parent_queue else 2
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0
    backend.send([produced("parent-again")])
    names = [decode_batch(job.args[0])[0].name for job in queue.get_jobs()]
    assert sorted(names) == ["child", "parent", "parent-again"]


# -- a worker that loses Redis while it holds a job -------------------------------------


def test_a_job_held_when_redis_went_away_is_given_back(
    redis_server: RedisServer, queue: Queue, queue_name: str
) -> None:
    from kaneda_rq.worker import JobKeepingWorker, give_back

    RQBackend(redis_server.url, queue_name).send([produced("a")])
    worker = JobKeepingWorker([queue], connection=queue.connection)
    job, _ = worker.dequeue_job_and_maintain_ttl(1)
    # Taken off the queue, not yet started: as when Redis goes away right then.
    assert worker.held == [job.id] and queue.count == 0
    assert queue.intermediate_queue.get_job_ids() == [job.id]
    give_back(queue, job.id)
    assert queue.get_job_ids() == [job.id] and queue.intermediate_queue.get_job_ids() == []
    handler = handler_on(MemoryBackend())
    try:
        work(queue)
        assert [m.name for m in handler.metrics.backend.metrics] == ["a"]  # type: ignore[attr-defined]
    finally:
        handler.close()
        install_handler(None)
    give_back(queue, job.id)  # finished: not given back again
    assert queue.count == 0


def test_a_job_redis_moved_for_a_worker_that_lost_the_answer_is_given_back(
    redis_server: RedisServer, queue: Queue, queue_name: str
) -> None:
    from kaneda_rq.worker import JobKeepingWorker

    RQBackend(redis_server.url, queue_name).send([produced("lost")])
    # Redis moved the job to the intermediate list; its answer never reached the worker.
    queue.connection.lmove(queue.key, queue.intermediate_queue.key)
    assert queue.count == 0 and len(queue.intermediate_queue.get_job_ids()) == 1
    worker = JobKeepingWorker([queue], connection=queue.connection)
    started = time.monotonic()
    job, _ = worker.dequeue_job_and_maintain_ttl(1)  # a starting worker looks first
    assert time.monotonic() - started >= 1.5  # it gave any worker time to start it
    assert worker.held == [job.id]
    assert decode_batch(job.args[0])[0].name == "lost"


def test_a_job_another_worker_starts_within_the_grace_is_left_to_it(
    redis_server: RedisServer, queue: Queue, queue_name: str
) -> None:
    from kaneda_rq.worker import give_back_orphans

    RQBackend(redis_server.url, queue_name).send([produced("busy")])
    queue.connection.lmove(queue.key, queue.intermediate_queue.key)
    job = queue.fetch_job(queue.intermediate_queue.get_job_ids()[0])
    assert job is not None

    def other_worker_starts_it() -> None:
        time.sleep(0.1)
        with queue.connection.pipeline() as pipeline:  # as RQ's worker starts a job
            Execution.create(job, ttl=60, pipeline=pipeline, worker_name="other")
            pipeline.execute()

    other = threading.Thread(target=other_worker_starts_it)
    other.start()
    give_back_orphans(queue, exclude=[], grace=0.5)
    other.join()
    assert queue.count == 0 and queue.intermediate_queue.get_job_ids() == [job.id]


def test_a_stopping_worker_is_not_held_a_minute_by_its_command_listener(queue: Queue) -> None:
    from kaneda_rq.worker import JobKeepingWorker

    # With RQ's SimpleWorker in its place (rq 3.0, redis 8.2), unsubscribe() took 60 s.
    worker = JobKeepingWorker([queue], connection=queue.connection)
    worker.subscribe()
    # The listener has taken the answer to an unsubscribe and waits for a subscription:
    # where RQ's worker stops after a SIGTERM, redis-py 8.2's stop() waits for that wait.
    worker.pubsub.unsubscribe()
    deadline = time.monotonic() + 10
    while worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 5  # docker stop waits 10 s; RQ's listener slept 60
    assert not worker.pubsub_thread.is_alive()


def test_a_redis_over_maxmemory_is_retried_not_refused_for_good(own_redis: RedisServer) -> None:
    # A full Redis (maxmemory, noeviction) refuses writes until workers take the queue:
    # for now, not for good (each batch was halved down to single metrics and failed).
    redis = Redis.from_url(own_redis.url)
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", "1")
    backend = RQBackend(own_redis.url, queue_name="full")
    with pytest.raises(Exception) as caught:
        backend.send([produced("a"), produced("b")])
    assert backend.is_retryable(caught.value)
    assert "maxmemory" in str(caught.value) and "is sent again" in str(caught.value)
    retry = RetryPolicy(attempts=20, initial_delay=0.05, max_delay=0.1)
    metrics = Metrics(backend, retry=retry, batch_size=100)
    for i in range(100):
        metrics.gauge("g", i)
    metrics.flush(0)
    time.sleep(0.3)
    redis.config_set("maxmemory", "0")  # room again: workers took the queue
    assert metrics.flush(10) == 0
    stats = metrics.stats()
    assert (stats.sent, stats.failed) == (100, 0) and stats.retried > 0
    assert Queue("full", connection=redis).count == 1  # one job, not a hundred
    metrics.close()
