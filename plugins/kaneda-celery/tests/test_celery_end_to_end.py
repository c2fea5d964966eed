"""Producer processes -> Redis or RabbitMQ -> Celery workers -> the real InfluxDB, counted."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from brokers import RabbitMQServer, RedisServer
from celery import Celery
from influx import InfluxServer, count_points
from kombu import Connection
from processes import Processes, wait_until

from scripts import PAUSING_WORKER, PRODUCER

PATIENT = json.dumps(
    {"flush_interval": 0.05, "retry": {"attempts": 500, "initial_delay": 0.05, "max_delay": 0.5}}
)


def celery_url(broker: str, queue_name: str, **options: object) -> str:
    query = "&".join(
        f"{key}={value}" for key, value in {"queue_name": queue_name, **options}.items()
    )
    return f"celery+{broker}?{query}"


def final_stats(log: str) -> dict[str, int]:
    lines = [line for line in log.splitlines() if line.startswith('{"failed"')]
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def queue_length(broker: str, queue_name: str) -> int:
    """Messages waiting in ``queue_name`` (0 when it does not exist, or no longer)."""
    from amqp.exceptions import ChannelError

    with Connection(broker) as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue_name, passive=True).message_count)
        except ChannelError:  # NOT_FOUND
            return 0
        finally:
            channel.close()


@pytest.fixture(params=["redis", "amqp"])
def broker(request: pytest.FixtureRequest) -> str:
    server: RedisServer | RabbitMQServer = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "rabbitmq_server"
    )
    return server.url


def test_several_producers_two_workers_every_metric_stored_once(
    processes: Processes, broker: str, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    url = celery_url(broker, f"e2e-{os.urandom(3).hex()}")
    workers = [processes.worker(url, influx_url) for _ in range(2)]
    # Both consuming before the first message: on one host, the second of two workers
    # named alike stopped at once on RabbitMQ (its remote-control queue locked).
    for worker in workers:
        worker.wait_for_log(" ready.", 60)
        assert worker.alive(), worker.log()
    producers = [processes.python("producer", PRODUCER, url, "3000", f"app{n}") for n in range(3)]
    for producer in producers:
        assert producer.popen.wait(120) == 0, producer.log()
        assert producer.last_json()["sent"] == 3000
    wait_until(lambda: count_points(influx_server, influx_db) == 9000, 60, workers[0].log)
    stored = []
    for worker in workers:
        assert worker.stop() == 0
        stored.append(final_stats(worker.log())["stored"])
    assert sum(stored) == 9000 and all(stored), stored  # both workers took messages


def test_celerys_own_worker_delivers_to_the_backend_kaneda_url_names(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    queue_name = f"native-{os.urandom(3).hex()}"
    url = celery_url(redis_server.url, queue_name)
    producer = processes.python("producer", PRODUCER, url, "2500", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    celery = str(Path(sys.executable).parent / "celery")
    worker = processes.start(
        "celery-worker",
        [celery, "-A", "kaneda_celery.worker", "-b", redis_server.url, "worker",
         "-Q", queue_name, "--pool", "solo", "--without-gossip", "--without-mingle"],
        env={**os.environ, "KANEDA_URL": influx_url},
    )  # fmt: skip
    wait_until(lambda: count_points(influx_server, influx_db) == 2500, 60, worker.log)
    assert worker.stop() == 0


def test_a_worker_killed_mid_batch_gives_its_message_back(
    processes: Processes, broker: str, influx_server: InfluxServer, influx_db: str,
    influx_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    # On Redis a dead worker's messages come back after the visibility timeout.
    url = celery_url(broker, f"killed-{os.urandom(3).hex()}", visibility_timeout=1)
    producer = processes.python("producer", PRODUCER, url, "3000", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    marker = tmp_path / "delivering"
    pausing = processes.python("pausing", PAUSING_WORKER, str(marker), url, "--to", influx_url)
    wait_until(marker.exists, 30, pausing.log, alive=pausing)
    pausing.kill()
    time.sleep(1.5)  # past the visibility timeout
    worker = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 3000, 60, worker.log)
    assert worker.stop() == 0


def test_a_poison_message_is_moved_aside_and_the_worker_carries_on(
    processes: Processes, broker: str, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    queue_name = f"poison-{os.urandom(3).hex()}"
    url = celery_url(broker, queue_name)
    app = Celery(broker=broker, set_as_current=False)
    app.send_task("kaneda.deliver", args=("not a batch",), queue=queue_name)
    app.send_task("kaneda.deliver", args=({"kaneda": 7, "metrics": []},), queue=queue_name)
    producer = processes.python("producer", PRODUCER, url, "500", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    worker = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 500, 60, worker.log)
    wait_until(lambda: queue_length(broker, f"{queue_name}.dead") == 2, 30, worker.log)
    assert worker.alive() and queue_length(broker, queue_name) == 0
    assert worker.stop() == 0
    assert final_stats(worker.log())["poison"] == 2
    assert "message moved aside: message is not JSON" in worker.log()
    app.close()


def test_a_task_called_with_the_wrong_arguments_is_moved_aside_too(
    processes: Processes, broker: str, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    # Celery raised TypeError calling the task before any of Kaneda's code ran, and
    # acknowledged the message: it was lost, neither moved aside nor counted.
    queue_name = f"arity-{os.urandom(3).hex()}"
    url = celery_url(broker, queue_name)
    app = Celery(broker=broker, set_as_current=False)
    app.send_task("kaneda.deliver", args=(), queue=queue_name)
    app.send_task("kaneda.deliver", args=("a", "b"), queue=queue_name)
    app.send_task("kaneda.deliver", kwargs={"msg": "x"}, queue=queue_name)
    app.send_task("kaneda.tasks.celery.report", args=("n", "gauge"), queue=queue_name)
    app.send_task(
        "kaneda.tasks.celery.report", args=("n", "gauge", 1, None, None, 6), queue=queue_name
    )
    producer = processes.python("producer", PRODUCER, url, "500", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    worker = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 500, 60, worker.log)
    wait_until(lambda: queue_length(broker, f"{queue_name}.dead") == 5, 30, worker.log)
    assert worker.alive() and queue_length(broker, queue_name) == 0
    assert worker.stop() == 0
    assert final_stats(worker.log())["poison"] == 5
    assert "kaneda.deliver takes one argument" in worker.log()
    assert "kaneda.tasks.celery.report takes" in worker.log()
    app.close()


def test_rabbitmq_down_at_start_and_mid_stream_loses_nothing(
    processes: Processes, influx_server: InfluxServer, influx_db: str, influx_url: str,
) -> None:  # fmt: skip
    # Not on Redis: Celery's Redis transport takes a message off the list (BRPOP) before
    # it records it as unacknowledged, so a message in flight when the connection breaks
    # is lost (kombu's known limitation; the README says so). RabbitMQ keeps it.
    rabbitmq = RabbitMQServer()  # not started: the broker is down when the application starts
    try:
        url = celery_url(rabbitmq.url, "kaneda")
        worker = processes.worker(url, influx_url)  # waits for the broker
        env = {**os.environ, "PRODUCE_SECONDS": "20"}  # RabbitMQ takes seconds to boot
        producer = processes.python("producer", PRODUCER, url, "2000", "app", PATIENT, env=env)
        time.sleep(1)
        rabbitmq.start()
        wait_until(lambda: count_points(influx_server, influx_db) > 0, 60, worker.log, alive=worker)
        rabbitmq.stop()  # down mid-stream: the application keeps reporting into its buffer
        assert producer.alive()
        rabbitmq.start()  # the same node, its queue and persistent messages kept
        assert producer.popen.wait(120) == 0, producer.log()
        stats = producer.last_json()
        assert stats["left"] == 0 and stats["failed"] == 0 and stats["retried"] > 0
        wait_until(lambda: count_points(influx_server, influx_db) == 2000, 90, worker.log)
        assert worker.stop() == 0
    finally:
        rabbitmq.destroy()


REPORTING_TASKS = """
import os
from celery import Celery
from kaneda_core import Metrics

app = Celery("reporting_tasks", broker=os.environ["BROKER"])
app.conf.worker_hijack_root_logger = False
# Made at import, in the worker's main process, before the prefork pool forks; a long
# flush interval: only a child's exit can deliver what its task reported.
metrics = Metrics(os.environ["KANEDA_URL"], flush_interval=60, batch_size=100_000)


@app.task
def work(task, calls):
    for call in range(calls):
        metrics.gauge("task", call, tags={"task": str(task), "pid": str(os.getpid())})
"""


def test_celery_prefork_children_deliver_when_they_are_recycled_and_at_shutdown(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Celery's pool children leave through os._exit() (recycled by --max-tasks-per-child,
    or at the worker's shutdown) without running their finalizers: what their tasks
    reported was lost, with no log line. Kaneda delivers at Celery's
    worker_process_shutdown, in the child."""
    (tmp_path / "reporting_tasks.py").write_text(REPORTING_TASKS)
    env = {
        **os.environ,
        "BROKER": redis_server.url,
        "KANEDA_URL": influx_url,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    celery = str(Path(sys.executable).parent / "celery")
    queue_name = f"tasks-{os.urandom(3).hex()}"
    worker = processes.start(
        "celery-prefork",
        [celery, "-A", "reporting_tasks", "worker", "-P", "prefork", "-c", "2",
         "--max-tasks-per-child=1", "-Q", queue_name, "--without-gossip", "--without-mingle",
         "--loglevel=WARNING"],
        env=env,
    )  # fmt: skip
    app = Celery("reporting_tasks", broker=redis_server.url)
    tasks, calls = 8, 50
    for task in range(tasks):
        app.send_task("reporting_tasks.work", args=(task, calls), queue=queue_name)
    # Each child runs one task and is recycled: its exit delivers what the task reported.
    wait_until(lambda: count_points(influx_server, influx_db) == tasks * calls, 60, worker.log)
    assert worker.stop() == 0
    assert count_points(influx_server, influx_db) == tasks * calls, worker.log()


SHORT_LIVED = """
import sys
from kaneda_core import connect

metrics = connect(sys.argv[1])
for i in range(2500):
    metrics.gauge("cron", i)
# no close(): the exit handler sends what is queued, the first send of this process
"""


def test_a_short_lived_producer_that_never_closes_sends_everything_at_exit(
    processes: Processes, broker: str
) -> None:
    """A cron job, a command: its first send happens at interpreter exit, where kombu's
    import of the Redis transport (redis-py, concurrent.futures) could no longer register
    its exit hook and failed: every metric was lost. The transport is imported when the
    backend is made."""
    queue_name = f"cron-{os.urandom(3).hex()}"
    producer = processes.python("short-lived", SHORT_LIVED, celery_url(broker, queue_name))
    assert producer.popen.wait(60) == 0, producer.log()
    assert "not delivered" not in producer.log(), producer.log()
    assert queue_length(broker, queue_name) == 3, producer.log()  # 1,000 + 1,000 + 500


def test_a_worker_asked_to_stop_while_the_store_is_down_puts_its_task_back_at_once(
    processes: Processes, broker: str, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    """The task at hand waited out its retries (about 30 s) first, and on RabbitMQ took
    the task back after the warm shutdown for another round: past docker stop's 10 s."""
    from brokers import free_port

    url = celery_url(broker, f"stopping-{os.urandom(3).hex()}")
    producer = processes.python("producer", PRODUCER, url, "500", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    down = f"influxdb://127.0.0.1:{free_port()}/{influx_db}?timeout=1"
    worker = processes.worker(url, down)
    worker.wait_for_log("retrying with backoff", 60)  # inside the task, the store down
    asked = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - asked < 8, worker.log()
    assert "the worker is stopping" in worker.log()
    second = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 500, 60, second.log)
    assert second.stop() == 0


def test_a_worker_asked_to_stop_while_rabbitmq_does_not_answer_still_exits(
    processes: Processes, rabbitmq_server: RabbitMQServer,
) -> None:  # fmt: skip
    # A frozen node (SIGSTOP here; a hung broker or a partition that drops packets) held
    # Celery's warm shutdown, which cancels its consumers there, for ever.
    import signal

    from kaneda_core.worker import STOP_GRACE

    url = celery_url(rabbitmq_server.url, f"frozen-{os.urandom(3).hex()}")
    worker = processes.worker(url, "memory://")
    worker.wait_for_log("ready", 60)
    assert rabbitmq_server.process is not None
    group = rabbitmq_server.process.pid  # the node's processes share its session
    os.killpg(group, signal.SIGSTOP)
    try:
        asked = time.monotonic()
        code = worker.stop(timeout=STOP_GRACE + 15)
        took = time.monotonic() - asked
    finally:
        os.killpg(group, signal.SIGCONT)
    assert code == 1 and took < STOP_GRACE + 10, (code, took, worker.log())
    assert "the broker still holds it" in worker.log()
