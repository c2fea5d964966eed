"""kaneda 1.0's Celery queue and task: this project's and genuine kaneda 1.0's, either way round.

kaneda 1.0 sent the task ``kaneda.tasks.celery.report(name, metric, value, tags, id_)``,
one per metric, to the queue named by ``queue_name`` (Celery's default queue,
``celery``, when empty), and ran ``celery -A kaneda.tasks.celery worker`` with a
``celeryconfig`` module. Genuine kaneda 1.0 comes from PyPI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from brokers import RedisServer
from influx import InfluxServer, count_points
from kaneda1 import kaneda1_environment
from processes import Process, Processes, wait_until

#: ``python legacy_producer.py BROKER COUNT VERSION``: kaneda 1.0's API, with the queue
#: from the settings module (QUEUE = 'kaneda.queues.CeleryQueue', queue_name '').
LEGACY_PRODUCER = """
import sys
import kaneda
from kaneda import Metrics

broker, count, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
assert kaneda.__version__ == version, kaneda.__version__
with open("legacysettings.py", "w") as settings:
    settings.write(
        "QUEUE = 'kaneda.queues.CeleryQueue'\\n"
        f"CELERY_BROKER = {broker!r}\\n"
        "CELERY_QUEUE_NAME = ''\\n"
    )
metrics = Metrics()
for n in range(count):
    metrics.gauge("legacy.celery", n, tags={"n": str(n)})
print("reported", count, flush=True)
"""


def settings_folder(folder: Path, server: InfluxServer, database: str, broker: str) -> None:
    """kaneda 1.0's worker settings (InfluxDB) and its celeryconfig, in ``folder``."""
    (folder / "kanedasettings.py").write_text(
        "BACKEND = 'kaneda.backends.InfluxBackend'\n"
        f"INFLUX_DATABASE = {database!r}\n"
        "INFLUX_HOST = '127.0.0.1'\n"
        f"INFLUX_PORT = {server.port}\n"
        "INFLUX_TIMEOUT = 10\n"
    )
    (folder / "celeryconfig.py").write_text(f"broker_url = {broker!r}\n")


def celery_worker(env: dict[str, str], processes: Processes, name: str) -> Process:
    """``celery -A kaneda.tasks.celery worker``, kaneda 1.0's command, in ``env``."""
    celery = str(Path(sys.executable).parent / "celery")
    command = [celery, "-A", "kaneda.tasks.celery", "worker", "--pool", "solo", "-l", "INFO",
               "--without-gossip", "--without-mingle"]  # fmt: skip
    return processes.start(name, command, env=env)


def producer_env(folder: Path, base: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(folder), base.get("PYTHONPATH", "")) if p)
    return {**base, "PYTHONPATH": path, "KANEDA_SETTINGS_MODULE": "legacysettings"}


def test_genuine_kaneda_1_tasks_are_delivered_by_kaneda_worker(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str, kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    broker = redis_server.url.replace("/0", "/3")  # a database of its own: queue "celery"
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python("kaneda1-producer", LEGACY_PRODUCER, broker, "100", "1.0", env=env)
    assert producer.popen.wait(60) == 0, producer.log()
    worker = processes.worker(f"celery+{broker}?queue_name=celery", influx_url)
    wait_until(lambda: count_points(influx_server, influx_db) == 100, 60, worker.log)
    assert worker.stop() == 0


def test_genuine_kaneda_1_tasks_are_delivered_by_kaneda_1s_command_on_our_task(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    broker = redis_server.url.replace("/0", "/4")
    env = producer_env(tmp_path, kaneda1_environment(kaneda1))
    producer = processes.python("kaneda1-producer", LEGACY_PRODUCER, broker, "30", "1.0", env=env)
    assert producer.popen.wait(60) == 0, producer.log()
    settings_folder(tmp_path, influx_server, influx_db, broker)
    worker = celery_worker({**os.environ, "PYTHONPATH": str(tmp_path)}, processes, "ours")
    wait_until(lambda: count_points(influx_server, influx_db) == 30, 60, worker.log)
    assert worker.stop() == 0


def test_our_face_to_genuine_kaneda_1s_task(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    kaneda1: Path, tmp_path: Path,
) -> None:  # fmt: skip
    broker = redis_server.url.replace("/0", "/5")
    env = producer_env(tmp_path, {**os.environ})
    producer = processes.python("producer", LEGACY_PRODUCER, broker, "30", "2.0.0", env=env)
    assert producer.popen.wait(60) == 0, producer.log()
    settings_folder(tmp_path, influx_server, influx_db, broker)
    theirs = kaneda1_environment(kaneda1, PYTHONPATH=str(tmp_path))
    worker = celery_worker(theirs, processes, "kaneda1-celery")
    wait_until(lambda: count_points(influx_server, influx_db) == 30, 60, worker.log)
    worker.stop()
    # kaneda 1.0's own module ran the task (its worker does not speak of a "Kaneda worker").
    assert "Task kaneda.tasks.celery.report" in worker.log() and "Kaneda" not in worker.log()


def test_a_kaneda_1_task_delivered_twice_carries_one_id(
    processes: Processes, redis_server: RedisServer, influx_server: InfluxServer, influx_db: str,
    influx_url: str,
) -> None:  # fmt: skip
    # A task comes back when its worker is killed before it acknowledged, with the same
    # task id. Its metric had no id, so document stores kept both copies; it now has
    # TASK_ID-0. Celery keeps no time for a message: InfluxDB, keying by time, keeps two.
    from celery import Celery

    queue_name = f"legacy-{os.urandom(3).hex()}"
    app = Celery(broker=redis_server.url, set_as_current=False)
    for _ in range(2):  # the same message, delivered twice
        app.send_task(
            "kaneda.tasks.celery.report", args=("twice", "gauge", 1, {"a": "b"}, None),
            queue=queue_name, task_id="task-7",
        )  # fmt: skip
    app.send_task(
        "kaneda.tasks.celery.report", args=("own", "gauge", 2, None, "mine"), queue=queue_name
    )
    url = f"celery+{redis_server.url}?queue_name={queue_name}"
    worker = processes.worker(url, f"{influx_url}&layout=kaneda2")
    wait_until(lambda: count_points(influx_server, influx_db) == 3, 60, worker.log)
    assert worker.stop() == 0
    answer = influx_server.query('SELECT "name"::tag, id FROM gauge', db=influx_db)
    rows = sorted((row[1], row[2]) for row in answer["results"][0]["series"][0]["values"])
    assert rows == [("own", "mine"), ("twice", "task-7-0"), ("twice", "task-7-0")]
    app.close()
