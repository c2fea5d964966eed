"""kaneda 1.0's ZeroMQ queue and worker: this project's and genuine kaneda 1.0's, either way round.

kaneda 1.0's producer binds a PUSH socket and its worker connects a PULL socket; one
JSON object per metric. Genuine kaneda 1.0 comes from PyPI (see tests/support/kaneda1.py).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from brokers import free_port
from influx import InfluxServer, count_points
from kaneda1 import kaneda1_environment
from processes import Processes, wait_until

#: ``python legacy_producer.py ENDPOINT COUNT VERSION``: kaneda 1.0's API, whichever kaneda
#: is importable (VERSION says which it must be).
LEGACY_PRODUCER = """
import sys, time
import kaneda
from kaneda import Metrics
from kaneda.queues import ZMQQueue

endpoint, count, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
assert kaneda.__version__ == version, kaneda.__version__
queue = ZMQQueue(connection_url=endpoint)
time.sleep(1)  # the worker connects to the bound socket
metrics = Metrics(queue=queue)
for n in range(count):
    metrics.gauge("legacy.zmq", n, tags={"n": str(n)})
time.sleep(1)  # what is queued in the socket leaves before the process does
print("reported", count, flush=True)
"""

#: kaneda 1.0's own zmqworker (click 6.6), from genuine kaneda 1.0.
KANEDA1_WORKER = """
import sys
from kaneda.tasks import zmq_task
zmq_task()
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


def zmqworker() -> str:
    """The ``zmqworker`` command kaneda-zmq installs beside this interpreter."""
    command = Path(sys.executable).parent / "zmqworker"
    assert command.exists(), "kaneda-zmq installs the zmqworker command"
    return str(command)


def test_the_face_to_our_zmqworker_which_sleeps_when_idle(
    processes: Processes, influx_server: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    influx_settings(tmp_path, influx_server, influx_db)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = processes.start("zmqworker", [zmqworker(), "--connection_url", endpoint], env=env)
    worker.wait_for_log(f"Running ZMQ worker - listening at {endpoint}.")
    assert "Using InfluxBackend." in worker.log()
    producer = processes.python("producer", LEGACY_PRODUCER, endpoint, "200", "2.0.0", env=env)
    assert producer.popen.wait(60) == 0, producer.log()
    wait_until(lambda: count_points(influx_server, influx_db) == 200, 30, worker.log)
    before = worker.cpu_seconds()
    time.sleep(2)
    assert worker.cpu_seconds() - before < 0.1  # kaneda 1.0's spun at 100 % here
    assert worker.stop() == 0


def test_genuine_kaneda_1_producer_to_our_zmqworker(
    processes: Processes, influx_server: InfluxServer, influx_db: str, kaneda1: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    influx_settings(tmp_path, influx_server, influx_db)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    worker = processes.start("zmqworker", [zmqworker(), "-u", endpoint], env=env)
    worker.wait_for_log("Running ZMQ worker")
    producer = processes.python(
        "kaneda1-producer",
        LEGACY_PRODUCER,
        endpoint,
        "200",
        "1.0",
        env=kaneda1_environment(kaneda1),
    )
    assert producer.popen.wait(60) == 0, producer.log()
    wait_until(lambda: count_points(influx_server, influx_db) == 200, 30, worker.log)
    assert worker.stop() == 0


def test_our_face_to_genuine_kaneda_1_zmqworker(
    processes: Processes, influx_server: InfluxServer, influx_db: str, kaneda1: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    influx_settings(tmp_path, influx_server, influx_db)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    theirs = kaneda1_environment(kaneda1, old_click=True, PYTHONPATH=str(tmp_path))
    worker = processes.python(
        "kaneda1-zmqworker", KANEDA1_WORKER, "--connection_url", endpoint, env=theirs
    )
    worker.wait_for_log("Running ZMQ worker")
    producer = processes.python(
        "producer", LEGACY_PRODUCER, endpoint, "200", "2.0.0", env={**os.environ}
    )
    assert producer.popen.wait(60) == 0, producer.log()
    wait_until(lambda: count_points(influx_server, influx_db) == 200, 30, worker.log)
    worker.kill()  # kaneda 1.0's worker has no way to stop but a signal


#: ``python poison_producer.py ENDPOINT``: 50 kaneda 1.0 messages, a frame of JSON nested
#: deeper than Python reads, 50 more.
POISON_PRODUCER = """
import json, sys, time, zmq
socket = zmq.Context().socket(zmq.PUSH)
socket.bind(sys.argv[1])
time.sleep(1)  # the worker connects to the bound socket
def good(n):
    socket.send_json({"name": "legacy.zmq", "metric": "gauge", "value": n,
                      "tags": {"n": str(n)}, "id_": None})
for n in range(50):
    good(n)
socket.send(b"[" * 100000 + b"]" * 100000)
for n in range(50, 100):
    good(n)
time.sleep(1)
print("sent", flush=True)
"""


def test_our_zmqworker_refuses_json_nested_too_deep_and_goes_on(
    processes: Processes, influx_server: InfluxServer, influx_db: str, tmp_path: Path
) -> None:
    # json.loads raises RecursionError, not ValueError, on such a frame: the worker
    # exited with it, losing the metrics of its round.
    influx_settings(tmp_path, influx_server, influx_db)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    worker = processes.start("zmqworker", [zmqworker(), "--connection_url", endpoint], env=env)
    worker.wait_for_log("Running ZMQ worker")
    producer = processes.python("producer", POISON_PRODUCER, endpoint, env=env)
    assert producer.popen.wait(60) == 0, producer.log()
    wait_until(lambda: count_points(influx_server, influx_db) == 100, 30, worker.log, alive=worker)
    assert worker.alive(), worker.log()
    assert worker.stop() == 0, worker.log()
    assert "poison=1" in worker.log(), worker.log()
    assert "nested too deep" in worker.log() or "recursion" in worker.log().lower()


def test_our_zmqworker_stores_into_kaneda_url_in_kaneda_1s_layout_unless_it_names_one(
    processes: Processes, influx_server: InfluxServer, kaneda1: Path
) -> None:
    # kaneda 1.0's worker stored the name as a field; into KANEDA_URL's database this
    # one stored it as a tag (this version's layout), which 1.0's queries missed.
    for layout, where in (("", "field"), ("&layout=kaneda2", "tag")):
        database = f"kaneda_{os.urandom(6).hex()}"
        url = f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=10{layout}"
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        env = {**os.environ, "KANEDA_URL": url}
        worker = processes.start("zmqworker", [zmqworker(), "-u", endpoint], env=env)
        worker.wait_for_log("Running ZMQ worker")
        producer = processes.python(
            "kaneda1-producer", LEGACY_PRODUCER, endpoint, "30", "1.0",
            env=kaneda1_environment(kaneda1),
        )  # fmt: skip
        assert producer.popen.wait(60) == 0, producer.log()
        wait_until(lambda: count_points(influx_server, database) == 30, 30, worker.log)  # noqa: B023
        assert worker.stop() == 0
        query = f"SELECT count(value) FROM gauge WHERE \"name\"::{where} = 'legacy.zmq'"
        [series] = influx_server.query(query, db=database)["results"][0]["series"]
        assert series["values"][0][1] == 30
