"""Producer processes -> Redis -> RQ workers -> the real InfluxDB, counted by query."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from brokers import RedisServer
from influx import InfluxServer, count_points
from processes import Processes, wait_until
from redis import Redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry

from scripts import PAUSING_WORKER, PRODUCER

PATIENT = json.dumps(
    {"flush_interval": 0.05, "retry": {"attempts": 500, "initial_delay": 0.05, "max_delay": 0.5}}
)


def rq_url(server: RedisServer, queue_name: str = "kaneda") -> str:
    return f"rq://127.0.0.1:{server.port}/0?queue_name={queue_name}"


def final_stats(log: str) -> dict[str, int]:
    # The last JSON line: log lines (at the process's exit) may follow it.
    last = [line for line in log.strip().splitlines() if line.startswith("{")][-1]
    return json.loads(last)  # type: ignore[no-any-return]


def test_several_producers_two_workers_every_metric_stored_once(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    queue_name = f"e2e-{os.urandom(3).hex()}"
    url = rq_url(redis_server, queue_name)
    workers = [processes.worker(url, influx_url) for _ in range(2)]
    # Both listening before the first job: a worker slow to start (a loaded machine)
    # would otherwise find the other had taken every job.
    connection = Redis.from_url(redis_server.url)
    queue = Queue(queue_name, connection=connection)
    wait_until(lambda: len(Worker.all(queue=queue)) == 2, 60, workers[1].log)
    connection.close()
    producers = [processes.python("producer", PRODUCER, url, "3000", f"app{n}") for n in range(3)]
    for producer in producers:
        assert producer.popen.wait(120) == 0, producer.log()
        assert final_stats(producer.log())["sent"] == 3000
    wait_until(lambda: count_points(influx_server, influx_db) == 9000, 60, workers[0].log)
    stored = []
    for worker in workers:
        asked = time.monotonic()
        assert worker.stop() == 0
        assert time.monotonic() - asked < 10  # within docker stop's grace
        stored.append(final_stats(worker.log())["stored"])
    assert sum(stored) == 9000 and all(stored), stored  # both workers took jobs


def test_rqs_own_worker_delivers_to_the_backend_kaneda_url_names(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    queue_name = f"native-{os.urandom(3).hex()}"
    producer = processes.python(
        "producer", PRODUCER, rq_url(redis_server, queue_name), "2500", "app"
    )
    assert producer.popen.wait(60) == 0, producer.log()
    rq = str(Path(sys.executable).parent / "rq")
    worker = processes.start(
        "rq-worker",
        [rq, "worker", "--url", redis_server.url, "--burst", queue_name],
        env={**os.environ, "KANEDA_URL": influx_url},
    )
    assert worker.popen.wait(120) == 0, worker.log()
    assert count_points(influx_server, influx_db) == 2500


def test_redis_down_at_start_and_mid_stream_loses_nothing(
    processes: Processes, own_redis: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    url = rq_url(own_redis)
    own_redis.stop()
    worker = processes.worker(url, influx_url)  # waits for Redis
    env = {**os.environ, "PRODUCE_SECONDS": "4"}
    producer = processes.python("producer", PRODUCER, url, "2000", "app", PATIENT, env=env)
    time.sleep(1)
    own_redis.start()  # up: the buffered batches go, the worker starts
    wait_until(lambda: count_points(influx_server, influx_db) > 0, 30, worker.log, alive=worker)
    own_redis.stop()  # down mid-stream: the application keeps reporting into its buffer
    time.sleep(1)
    assert producer.alive()
    own_redis.start()
    assert producer.popen.wait(120) == 0, producer.log()
    stats = final_stats(producer.log())
    assert stats["left"] == 0 and stats["failed"] == 0 and stats["retried"] > 0
    wait_until(lambda: count_points(influx_server, influx_db) == 2000, 60, worker.log)
    assert worker.stop() == 0


def test_a_worker_killed_mid_batch_gives_its_job_back(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    queue_name = f"killed-{os.urandom(3).hex()}"
    url = rq_url(redis_server, queue_name)
    producer = processes.python("producer", PRODUCER, url, "3000", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    connection = Redis.from_url(redis_server.url)
    queue = Queue(queue_name, connection=connection)
    # Batches of up to 1,000: a flush interval that passes mid-stream (a slow machine)
    # sends a shorter one, so the number of jobs is counted, not assumed.
    jobs = queue.count
    assert jobs >= 3
    marker = tmp_path / "delivering"
    pausing = processes.python("pausing", PAUSING_WORKER, str(marker), url, "--to", influx_url)
    wait_until(marker.exists, 30, pausing.log, alive=pausing)
    pausing.kill()
    started = StartedJobRegistry(queue=queue)
    assert len(started.get_job_ids(cleanup=False)) == 1  # the job it held, unacknowledged
    # RQ gives a dead worker's job back once its heartbeat has lapsed (about 90 s), at
    # its next maintenance; ask for that maintenance as if those seconds had passed.
    started.cleanup(timestamp=time.time() + 3600)
    assert queue.count == jobs
    worker = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 3000, 60, worker.log)
    assert worker.stop() == 0
    connection.close()


def test_with_a_buffer_path_the_worker_acknowledges_once_on_disk_and_survives_a_kill(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    from brokers import free_port

    queue_name = f"buffered-{os.urandom(3).hex()}"
    url = rq_url(redis_server, queue_name)
    producer = processes.python("producer", PRODUCER, url, "1500", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    buffer = str(tmp_path / "worker-buffer.sqlite")
    # The store is not there: the worker takes every job off the queue into its disk buffer.
    down = f"influxdb://127.0.0.1:{free_port()}/{influx_db}?timeout=1"
    first = processes.worker(url, down, "--buffer-path", buffer)
    queue = Queue(queue_name, connection=Redis.from_url(redis_server.url))
    wait_until(
        lambda: queue.count == 0 and not StartedJobRegistry(queue=queue).count, 30, first.log
    )
    first.kill()
    assert count_points(influx_server, influx_db) == 0
    # Another worker on the same buffer delivers them once the store is there.
    second = processes.worker(url, influx_url, "--buffer-path", buffer)
    wait_until(lambda: count_points(influx_server, influx_db) == 1500, 60, second.log)
    assert second.stop() == 0


def test_the_worker_logs_an_outage_of_redis_once_and_its_end_once(
    processes: Processes,
) -> None:
    redis = RedisServer()  # its port is chosen, nothing listens there yet
    try:
        worker = processes.worker(f"rq://127.0.0.1:{redis.port}/0", "memory://")
        worker.wait_for_log("Redis is not reachable")
        time.sleep(4)  # the worker tries again after 0.5, 1 and 2 s
        redis.start()
        worker.wait_for_log("Redis answers again")
        worker.stop()
    finally:
        redis.destroy()
    log = worker.log()
    assert log.count("Redis is not reachable") == 1, log
    assert f"127.0.0.1:{redis.port}" in log and "Check that redis-server runs" in log


def test_a_worker_asked_to_stop_while_the_store_is_down_puts_its_job_back_at_once(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    """The job at hand waited out its retries (about 30 s) first: past docker stop's 10 s."""
    from brokers import free_port

    url = rq_url(redis_server, f"stopping-{os.urandom(3).hex()}")
    producer = processes.python("producer", PRODUCER, url, "500", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    down = f"influxdb://127.0.0.1:{free_port()}/{influx_db}?timeout=1"
    worker = processes.worker(url, down)
    worker.wait_for_log("retrying with backoff", 60)  # inside the job, the store down
    asked = time.monotonic()
    assert worker.stop() == 0
    assert time.monotonic() - asked < 8, worker.log()
    assert "the worker is stopping" in worker.log()
    # Nothing lost: the job went back, and a worker with the store up stores it all.
    second = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 500, 60, second.log)
    assert second.stop() == 0


def test_a_worker_on_a_redis_over_maxmemory_waits_for_room_and_then_drains_the_queue(
    processes: Processes, own_redis: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    # RQ's worker registration is a write a full Redis refuses: the worker exited at once
    # with a traceback, as often as a supervisor started it, and the queue never drained.
    url = rq_url(own_redis, "full")
    producer = processes.python("producer", PRODUCER, url, "1000", "app")
    assert producer.popen.wait(60) == 0, producer.log()
    redis = Redis.from_url(own_redis.url)
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", "1")
    worker = processes.worker(url, influx_url)
    worker.wait_for_log("maxmemory")
    time.sleep(1.5)
    assert worker.alive(), worker.log()
    redis.config_set("maxmemory", "0")
    wait_until(lambda: count_points(influx_server, influx_db) == 1000, 60, worker.log)
    assert worker.stop() == 0
    assert "Traceback" not in worker.log()


def test_a_worker_asked_to_stop_while_redis_does_not_answer_still_exits(
    processes: Processes, own_redis: RedisServer,
) -> None:  # fmt: skip
    # A frozen Redis (SIGSTOP here; a hung server or a partition that drops packets)
    # held RQ's stop, which writes to it, for ever.
    import signal

    from kaneda_rq.worker import STOP_GRACE

    worker = processes.worker(rq_url(own_redis, "frozen"), "memory://")
    queue = Queue("frozen", connection=Redis.from_url(own_redis.url))
    wait_until(lambda: len(Worker.all(queue=queue)) == 1, 60, worker.log)
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        asked = time.monotonic()
        code = worker.stop(timeout=STOP_GRACE + 15)
        took = time.monotonic() - asked
    finally:
        own_redis.process.send_signal(signal.SIGCONT)
    assert code == 1 and STOP_GRACE - 1 < took < STOP_GRACE + 10, (code, took)
    assert "Redis still holds it" in worker.log()
