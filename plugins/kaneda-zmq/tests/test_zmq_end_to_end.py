"""Producer processes -> ZeroMQ -> ``kaneda worker`` -> the real InfluxDB, counted by query."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from brokers import free_port
from influx import InfluxServer, count_points, stored_metrics
from processes import Processes, wait_until

from scripts import PAUSING_WORKER, PRODUCER

PATIENT = json.dumps(
    {"flush_interval": 0.05, "retry": {"attempts": 200, "initial_delay": 0.05, "max_delay": 0.5}}
)


def zmq_url(port: int, **options: object) -> str:
    query = "&".join(f"{key}={value}" for key, value in options.items())
    return f"zmq+tcp://127.0.0.1:{port}" + (f"?{query}" if query else "")


def test_several_producers_one_worker_every_metric_stored_once(
    processes: Processes, influx_server: InfluxServer, influx_db: str, influx_url: str
) -> None:
    url = zmq_url(free_port())
    worker = processes.worker(url, influx_url)
    producers = [processes.python("producer", PRODUCER, url, "3000", f"app{n}") for n in range(3)]
    for producer in producers:
        assert producer.popen.wait(120) == 0, producer.log()
        stats = producer.last_json()
        assert stats["left"] == 0 and stats["sent"] == 3000 and stats["failed"] == 0
    assert count_points(influx_server, influx_db) == 9000
    stored = stored_metrics(influx_server, influx_db)
    assert {m.name for m in stored} == {"app0", "app1", "app2"}
    assert len({m.id for m in stored}) == 9000  # every metric carried an id of its own

    # Idle, the worker sleeps in poll: no CPU (kaneda 1.0's polled at 100 %).
    before = worker.cpu_seconds()
    time.sleep(2)
    assert worker.cpu_seconds() - before < 0.1
    assert worker.stop() == 0
    assert '"stored": 9000' in worker.log()


def test_a_worker_down_at_start_then_killed_mid_batch_loses_nothing(
    processes: Processes, influx_server: InfluxServer, influx_db: str, influx_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    url = zmq_url(free_port(), timeout=1)
    # The application starts first: no worker yet, its batches wait in its buffer.
    producer = processes.python("producer", PRODUCER, url, "2000", "app", PATIENT)
    time.sleep(1.5)
    assert producer.alive() and count_points(influx_server, influx_db) == 0
    # A worker comes up and hangs in its first delivery: it holds a batch unanswered.
    marker = tmp_path / "delivering"
    pausing = processes.python("pausing", PAUSING_WORKER, str(marker), url, "--to", influx_url)
    wait_until(marker.exists, 30, pausing.log, alive=pausing)
    pausing.kill()
    # Its replacement gets the batch again (the producer heard no answer) and the rest.
    worker = processes.worker(url, influx_url)
    assert producer.popen.wait(120) == 0, producer.log()
    stats = producer.last_json()
    assert stats["left"] == 0 and stats["failed"] == 0 and stats["retried"] > 0
    assert count_points(influx_server, influx_db) == 2000
    assert worker.stop() == 0


GUNICORN_APP = """
import os
from kaneda_core import connect

metrics = connect(os.environ["QUEUE_URL"], flush_interval=0.05)


def app(environ, start_response):
    metrics.increment("requests", tags={"n": environ["QUERY_STRING"], "pid": os.getpid()})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_a_pre_fork_server_reports_from_every_worker_process_on_one_endpoint(
    processes: Processes, influx_server: InfluxServer, influx_db: str, influx_url: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    url = zmq_url(free_port())
    worker = processes.worker(url, influx_url)
    (tmp_path / "webapp.py").write_text(GUNICORN_APP)
    port = free_port()
    # --preload: the Metrics is made in the master, before the fork, as many apps do.
    # --max-requests: each worker process exits (flushing) after 10 requests and a new
    # one is forked, so many processes report, whichever takes the requests.
    server = processes.start(
        "gunicorn",
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "3", "-b", f"127.0.0.1:{port}",
         "--max-requests", "10", "--chdir", str(tmp_path), "webapp:app"],
        env={**os.environ, "QUEUE_URL": url},
    )  # fmt: skip
    server.wait_for_log("Booting worker with pid", 30)
    pids = set()
    deadline = time.monotonic() + 30
    n = 0
    while n < 90 and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?{n}", timeout=5) as response:
                pids.add(response.read())
            n += 1
        except OSError:
            time.sleep(0.1)  # workers still booting
    assert n == 90
    wait_until(
        lambda: count_points(influx_server, influx_db) == 90,
        30,
        lambda: f"{count_points(influx_server, influx_db)} of 90 stored\n{worker.log()[-2000:]}",
    )
    assert len(pids) >= 3, pids  # several worker processes reported, through one endpoint
    stored = {m.tags["pid"] for m in stored_metrics(influx_server, influx_db)}
    assert stored == {pid.decode() for pid in pids}
    assert server.stop() == 0 and worker.stop() == 0


#: ``python exiting.py QUEUE_URL COUNT NAME``: reports COUNT metrics and exits, no flush().
EXITING_PRODUCER = """
import sys
from kaneda_core import connect

url, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
metrics = connect(url)
for n in range(count):
    metrics.custom("exiting", "seq", n, tags={"p": name}, id_=f"{name}-{n}")
"""


def test_producers_that_exit_at_once_deliver_batches_of_every_size(
    processes: Processes, influx_server: InfluxServer, influx_db: str, influx_url: str
) -> None:
    # The exit delivers the batches (1,000 metrics, about 100 KB: over ZeroMQ's
    # zero-copy size). Sent without a copy they failed at exit, and one id frame left
    # behind made the next message three frames: 4,500 of 60,000 stored.
    url = zmq_url(free_port(), timeout=5)
    worker = processes.worker(url, influx_url)
    producers = [
        processes.python(f"exiting{n}", EXITING_PRODUCER, url, "20000", f"p{n}") for n in range(3)
    ]
    for producer in producers:
        assert producer.popen.wait(120) == 0, producer.log()
    wait_until(lambda: count_points(influx_server, influx_db) >= 60_000, 60, worker.log)
    assert worker.stop() == 0
    assert count_points(influx_server, influx_db) == 60_000
    assert "moved aside" not in worker.log()
