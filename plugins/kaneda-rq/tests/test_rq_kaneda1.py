"""kaneda 1.0's RQ queue and job: this project's and genuine kaneda 1.0's, either way round.

kaneda 1.0 enqueued the job ``kaneda.tasks.rq.report(name, metric, value, tags, id_)``,
one per metric, on the queue ``kaneda``. Genuine kaneda 1.0 comes from PyPI.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from brokers import RedisServer
from influx import InfluxServer, count_points
from kaneda1 import kaneda1_environment
from processes import Processes, wait_until

#: ``python legacy_producer.py REDIS_URL QUEUE_NAME COUNT VERSION``: kaneda 1.0's API,
#: with the queue from the settings module (QUEUE = 'kaneda.queues.RQQueue').
LEGACY_PRODUCER = """
import sys
import kaneda
from kaneda import Metrics

redis_url, queue_name, count, version = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert kaneda.__version__ == version, kaneda.__version__
with open("legacysettings.py", "w") as settings:
    settings.write(
        "QUEUE = 'kaneda.queues.RQQueue'\\n"
        f"RQ_REDIS_URL = {redis_url!r}\\n"
        f"RQ_QUEUE_NAME = {queue_name!r}\\n"
    )
metrics = Metrics()
for n in range(count):
    metrics.gauge("legacy.rq", n, tags={"n": str(n)})
print("reported", count, flush=True)
"""

#: RQ's worker, as kaneda 1.0's users ran it (``rqworker``: a process forked per job, which
#: is slow, so these tests send few), until the queue is empty.
RQ_WORKER = """
import sys
from redis import Redis
from rq import Worker

Worker([sys.argv[2]], connection=Redis.from_url(sys.argv[1])).work(burst=True)
"""


def influx_settings(folder: Path, server: InfluxServer, database: str) -> None:
    """A kaneda 1.0 settings module in ``folder`` naming the InfluxDB backend."""
    (folder / "kanedasettings.py").write_text(
        "BACKEND = 'kaneda.backends.InfluxBackend'\n"
        f"INFLUX_DATABASE = {database!r}\n"
        "INFLUX_HOST = '127.0.0.1'\n"
        f"INFLUX_PORT = {server.port}\n"
        "INFLUX_TIMEOUT = 10\n"
    )


def producer_env(folder: Path, base: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(folder), base.get("PYTHONPATH", "")) if p)
    return {**base, "PYTHONPATH": path, "KANEDA_SETTINGS_MODULE": "legacysettings"}


def test_genuine_kaneda_1_jobs_are_delivered_by_kaneda_worker(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    queue_name = f"legacy-{os.urandom(3).hex()}"
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python(
        "kaneda1-producer", LEGACY_PRODUCER, redis_server.url, queue_name, "100", "1.0", env=env
    )
    assert producer.popen.wait(60) == 0, producer.log()
    url = f"rq://127.0.0.1:{redis_server.port}/0?queue_name={queue_name}"
    worker = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 100, 60, worker.log)
    assert worker.stop() == 0


def test_genuine_kaneda_1_jobs_are_delivered_by_rqs_worker_with_our_task(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    queue_name = f"legacy-{os.urandom(3).hex()}"
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python(
        "kaneda1-producer", LEGACY_PRODUCER, redis_server.url, queue_name, "12", "1.0", env=env
    )
    assert producer.popen.wait(60) == 0, producer.log()
    # Our kaneda.tasks.rq.report, storing into the settings module's backend as 1.0 did.
    influx_settings(tmp_path, influx_server, influx_db)
    ours = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = processes.python("rq-worker", RQ_WORKER, redis_server.url, queue_name, env=ours)
    assert worker.popen.wait(120) == 0, worker.log()
    assert count_points(influx_server, influx_db) == 12


def test_our_face_to_genuine_kaneda_1s_job(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    queue_name = f"legacy-{os.urandom(3).hex()}"
    env = producer_env(tmp_path, {**os.environ})
    producer = processes.python(
        "producer", LEGACY_PRODUCER, redis_server.url, queue_name, "12", "2.0.0", env=env
    )
    assert producer.popen.wait(60) == 0, producer.log()
    # kaneda 1.0's kaneda.tasks.rq.report, storing with kaneda 1.0's InfluxBackend.
    influx_settings(tmp_path, influx_server, influx_db)
    theirs = kaneda1_environment(kaneda1, PYTHONPATH=str(tmp_path))
    worker = processes.python(
        "kaneda1-rq-worker", RQ_WORKER, redis_server.url, queue_name, env=theirs
    )
    assert worker.popen.wait(120) == 0, worker.log()
    assert "kaneda.tasks.rq.report" in worker.log()
    assert count_points(influx_server, influx_db) == 12


def name_as(server: InfluxServer, database: str, name: str) -> dict[str, int]:
    """How many gauges ``database`` holds under ``name`` as a field (kaneda 1.0's layout)
    and as a tag (this version's)."""

    def count(kind: str) -> int:
        query = f"SELECT count(value) FROM gauge WHERE \"name\"::{kind} = '{name}'"
        series = server.query(query, db=database)["results"][0].get("series", [])
        return int(series[0]["values"][0][1]) if series else 0

    return {"field": count("field"), "tag": count("tag")}


#: ``python producer.py RQ_URL COUNT NAME``: one batch of COUNT gauges, in this format.
BATCH_PRODUCER = """
import sys
from kaneda_core import connect

metrics = connect(sys.argv[1])
for n in range(int(sys.argv[2])):
    metrics.gauge(sys.argv[3], n, tags={"n": str(n)})
assert metrics.close(timeout=30) == 0
"""


def test_kaneda_worker_stores_kaneda_1s_jobs_in_kaneda_1s_layout_and_batches_in_this_ones(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    # A genuine kaneda 1.0 worker stores them in its layout (the name a field): stored in
    # this version's (the name a tag), a 1.0 dashboard's WHERE "name" = '...' missed them.
    queue_name = f"legacy-{os.urandom(3).hex()}"
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python(
        "kaneda1-producer", LEGACY_PRODUCER, redis_server.url, queue_name, "40", "1.0", env=env
    )
    assert producer.popen.wait(60) == 0, producer.log()
    url = f"rq://127.0.0.1:{redis_server.port}/0?queue_name={queue_name}"
    batches = processes.python("producer", BATCH_PRODUCER, url, "30", "batch.rq")
    assert batches.popen.wait(60) == 0, batches.log()
    worker = processes.worker(url, influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 70, 60, worker.log)
    assert worker.stop() == 0
    assert name_as(influx_server, influx_db, "legacy.rq") == {"field": 40, "tag": 0}
    assert name_as(influx_server, influx_db, "batch.rq") == {"field": 0, "tag": 30}
    assert "kaneda 1.0's messages are stored in kaneda 1.0's layout" in worker.log()


def test_a_layout_the_worker_url_names_is_the_one_kaneda_1s_jobs_are_stored_in(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    queue_name = f"legacy-{os.urandom(3).hex()}"
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python(
        "kaneda1-producer", LEGACY_PRODUCER, redis_server.url, queue_name, "20", "1.0", env=env
    )
    assert producer.popen.wait(60) == 0, producer.log()
    url = f"rq://127.0.0.1:{redis_server.port}/0?queue_name={queue_name}"
    worker = processes.worker(url, f"{influx_url}&layout=kaneda2")
    wait_until(lambda: count_points(influx_server, influx_db) == 20, 60, worker.log)
    assert worker.stop() == 0
    assert name_as(influx_server, influx_db, "legacy.rq") == {"field": 0, "tag": 20}


def test_rqs_own_worker_stores_kaneda_1s_jobs_into_kaneda_url_in_kaneda_1s_layout(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    queue_name = f"legacy-{os.urandom(3).hex()}"
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python(
        "kaneda1-producer", LEGACY_PRODUCER, redis_server.url, queue_name, "12", "1.0", env=env
    )
    assert producer.popen.wait(60) == 0, producer.log()
    ours = {**os.environ, "KANEDA_URL": influx_url}
    worker = processes.python("rq-worker", RQ_WORKER, redis_server.url, queue_name, env=ours)
    assert worker.popen.wait(120) == 0, worker.log()
    assert name_as(influx_server, influx_db, "legacy.rq") == {"field": 12, "tag": 0}


def test_a_kaneda_1_job_run_twice_is_stored_once(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    # A job comes back when its worker is killed before it finished. Stamped at arrival
    # and given no id, its metric was stored again (a new time, a new document); it now
    # keeps its job's creation time and id.
    from redis import Redis
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    queue_name = f"legacy-{os.urandom(3).hex()}"
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python(
        "kaneda1-producer", LEGACY_PRODUCER, redis_server.url, queue_name, "20", "1.0", env=env
    )
    assert producer.popen.wait(60) == 0, producer.log()
    url = f"rq://127.0.0.1:{redis_server.port}/0?queue_name={queue_name}"
    to = f"{influx_url}&layout=kaneda2"  # stores the id, as the document stores do
    worker = processes.worker(url, to)
    wait_until(lambda: count_points(influx_server, influx_db) == 20, 60, worker.log)
    assert worker.stop() == 0
    queue = Queue(queue_name, connection=Redis.from_url(redis_server.url))
    job_ids = FinishedJobRegistry(queue=queue).get_job_ids()
    assert len(job_ids) == 20
    for job_id in job_ids:  # delivered again, as after a kill
        job = queue.fetch_job(job_id)
        assert job is not None
        queue.enqueue_job(job)
    worker = processes.worker(url, to)

    def all_finished() -> bool:
        jobs = [queue.fetch_job(job_id) for job_id in job_ids]
        return all(job is not None and job.get_status() == "finished" for job in jobs)

    wait_until(lambda: not queue.count and all_finished(), 60, worker.log)
    time.sleep(1)  # the last one's metric reaches InfluxDB before the job ends: settled
    assert worker.stop() == 0
    assert count_points(influx_server, influx_db) == 20
    answer = influx_server.query("SELECT id FROM gauge", db=influx_db)
    stored_ids = {row[1] for row in answer["results"][0]["series"][0]["values"]}
    assert stored_ids == {f"{job_id}-0" for job_id in job_ids}
