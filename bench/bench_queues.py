"""Metrics per second end to end through each queue, next to the direct path and kaneda 1.0.

    python3 bench/bench_queues.py [--metrics 200000] [--kaneda1-metrics 1000]

Starts a throwaway InfluxDB, Redis and RabbitMQ (Debian's packages) on free loopback
ports. Each row is one producer process that reports ``--metrics`` gauges with two tags
as fast as it can (each its own point: they differ in time), and the time runs from its
first call until ``SELECT count(*)`` finds every point in InfluxDB:

- direct: ``connect("influxdb://...")`` in the producer, no queue;
- rq, celery+redis, celery+amqp, zmq: ``connect(QUEUE_URL)`` in the producer (one
  message per batch) and one ``kaneda worker QUEUE_URL --to influxdb://...``;
- kaneda 1.0 from PyPI, on the same brokers: its ``RQQueue``, ``CeleryQueue`` and
  ``ZMQQueue`` (one message per metric) and its own workers (``rqworker``, ``celery -A
  kaneda.tasks.celery worker``, ``zmqworker``) writing with its ``InfluxBackend``
  (fewer metrics: one HTTP request each).

Producers and workers batch 5,000 metrics. Every process shares the machine's cores
with InfluxDB and the broker, as they would on one host.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from brokers import RabbitMQServer, RedisServer, free_port  # noqa: E402
from influx import InfluxServer, count_points  # noqa: E402
from kaneda1 import check_is_kaneda1, kaneda1_environment, kaneda1_site  # noqa: E402
from processes import Process, Processes  # noqa: E402

BATCH = 5000

#: ``python producer.py URL COUNT BATCH``: prints the time of its first call and of its
#: last, then flushes.
PRODUCER = """
import json, sys, time
from kaneda_core import connect

url, count, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
metrics = connect(url, batch_size=batch, max_buffer=count + 1, exit_timeout=600)
gauge = metrics.gauge
tags = {"route": "/checkout", "region": "eu-west-1"}
print("start", time.time(), flush=True)
for n in range(count):
    gauge("checkout.total", n, tags=tags)
print("called", time.time(), flush=True)
left = metrics.flush(600)
print("flushed", time.time(), json.dumps(metrics.stats().as_dict()), flush=True)
"""

#: kaneda 1.0's own API (genuine kaneda 1.0 on PYTHONPATH), one message per metric.
KANEDA1_PRODUCER = """
import sys, time
from kaneda import Metrics
from kaneda.queues import CeleryQueue, RQQueue, ZMQQueue

kind, where, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "rq":
    queue = RQQueue(redis_url=where, queue_name="kaneda")
elif kind == "celery":
    queue = CeleryQueue(broker=where, queue_name="celery")
else:
    queue = ZMQQueue(connection_url=where)
    time.sleep(1)  # its worker connects to the bound socket
metrics = Metrics(queue=queue)
print("start", time.time(), flush=True)
for n in range(count):
    metrics.gauge("checkout.total", n, tags={"route": "/checkout", "region": "eu-west-1"})
print("called", time.time(), flush=True)
time.sleep(3 if kind == "zmq" else 0)  # what the PUSH socket holds leaves first
"""

KANEDA1_RQ_WORKER = """
import sys
from redis import Redis
from rq import Worker

Worker(["kaneda"], connection=Redis.from_url(sys.argv[1])).work()
"""

KANEDA1_ZMQ_WORKER = """
from kaneda.tasks import zmq_task
zmq_task()
"""


class Bench:
    """The servers, and one InfluxDB database per row."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes = Processes(folder)
        self.influx = InfluxServer()
        self.redis = RedisServer()
        self.rabbitmq = RabbitMQServer()

    def start(self) -> None:
        self.influx.start()
        self.redis.start()
        self.rabbitmq.start()

    def stop(self) -> None:
        self.processes.stop_all()
        for server in (self.influx, self.redis, self.rabbitmq):
            server.destroy()

    def database(self) -> tuple[str, str]:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        return name, f"influxdb://127.0.0.1:{self.influx.port}/{name}?timeout=60"

    def timed(self, producer: Process, database: str, count: int) -> tuple[float, float]:
        """(end-to-end metrics/s, producer calls/s) once ``count`` points are stored."""
        deadline = time.time() + 900
        while "start" not in producer.log():
            if not producer.alive() or time.time() > deadline:
                raise RuntimeError(producer.log())
            time.sleep(0.05)
        started = float(producer.log().split("start", 1)[1].split()[0])
        while count_points(self.influx, database) < count:
            if time.time() > deadline:
                raise RuntimeError(f"only {count_points(self.influx, database)} of {count}")
            time.sleep(0.1)
        stored = time.time()
        called = float(producer.log().split("called", 1)[1].split()[0])
        return count / (stored - started), count / (called - started)

    def direct(self, count: int) -> tuple[float, float]:
        name, url = self.database()
        producer = self.processes.python("direct", PRODUCER, url, str(count), str(BATCH))
        result = self.timed(producer, name, count)
        producer.popen.wait(60)
        return result

    def queue(self, queue_url: str, count: int, workers: int = 1) -> tuple[float, float]:
        name, url = self.database()
        options = ("--batch-size", str(BATCH), "--max-buffer", str(count + 1))
        worker_urls, producer_url = [queue_url] * workers, queue_url
        if queue_url.startswith("zmq+"):  # a ZeroMQ worker binds its own endpoint
            query = queue_url.partition("?")[2]
            ports = [free_port() for _ in range(workers)]
            worker_urls = [f"zmq+tcp://127.0.0.1:{port}?{query}" for port in ports]
            endpoints = ",".join(f"127.0.0.1:{port}" for port in ports)
            producer_url = f"zmq+tcp://{endpoints}?{query}"
        started = [self.processes.worker(u, url, *options) for u in worker_urls]
        time.sleep(2)  # the workers are up
        producer = self.processes.python("producer", PRODUCER, producer_url, str(count), str(BATCH))
        result = self.timed(producer, name, count)
        producer.popen.wait(60)
        for worker in started:
            worker.stop()
        return result

    def kaneda1(self, kind: str, count: int) -> tuple[float, float]:
        site = kaneda1_site()
        check_is_kaneda1(site)
        name, _ = self.database()
        folder = self.folder / f"kaneda1-{kind}"
        folder.mkdir()
        (folder / "kanedasettings.py").write_text(
            "BACKEND = 'kaneda.backends.InfluxBackend'\n"
            f"INFLUX_DATABASE = {name!r}\nINFLUX_HOST = '127.0.0.1'\n"
            f"INFLUX_PORT = {self.influx.port}\nINFLUX_TIMEOUT = 60\n"
        )
        broker = self.redis.url.replace("/0", "/7")
        (folder / "celeryconfig.py").write_text(f"broker_url = {broker!r}\n")
        env = kaneda1_environment(site, old_click=kind == "zmq", PYTHONPATH=str(folder))
        if kind == "rq":
            where = self.redis.url
            worker = self.processes.python("kaneda1-rq", KANEDA1_RQ_WORKER, where, env=env)
        elif kind == "celery":
            where = broker
            celery = str(Path(sys.executable).parent / "celery")
            command = [celery, "-A", "kaneda.tasks.celery", "worker", "--pool", "solo",
                       "--without-gossip", "--without-mingle"]  # fmt: skip
            worker = self.processes.start("kaneda1-celery", command, env={**env})
        else:
            where = f"tcp://127.0.0.1:{free_port()}"
            worker = self.processes.python(
                "kaneda1-zmq", KANEDA1_ZMQ_WORKER, "--connection_url", where, env=env
            )
        time.sleep(3)  # the worker is up
        producer = self.processes.python(
            f"kaneda1-{kind}-producer", KANEDA1_PRODUCER, kind, where, str(count), env=env
        )
        result = self.timed(producer, name, count)
        producer.popen.wait(60)
        worker.kill()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=200_000)
    parser.add_argument("--kaneda1-metrics", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each 2.0 row (median)")
    parser.add_argument("--only", default="", help="row names separated by ; for a quick look")
    args = parser.parse_args()
    import statistics
    import tempfile

    bench = Bench(Path(tempfile.mkdtemp(prefix="kaneda-bench-queues-")))
    bench.start()
    redis, rabbitmq = bench.redis.port, bench.rabbitmq.url
    # InfluxDB keys points by series and time: the queues run with assign_ids=false, as
    # their READMEs advise for it; one row shows what the default (an id each) costs.
    influx = "queue_name=bench&assign_ids=false"
    queues = {
        "rq": f"rq://127.0.0.1:{redis}/0?{influx}",
        "rq, an id per metric (default)": f"rq://127.0.0.1:{redis}/0?queue_name=bench",
        "celery+redis": f"celery+redis://127.0.0.1:{redis}/1?{influx}",
        "celery+amqp": f"celery+{rabbitmq}?{influx}",
        "zmq": f"zmq+tcp://127.0.0.1:{free_port()}?assign_ids=false",
    }
    wanted = set(filter(None, args.only.split(";")))
    # name -> (metrics, run); the 2.0 rows take turns, run after run, so that a machine
    # whose speed drifts (a shared virtual machine) slows them alike.
    planned: dict[str, tuple[int, Any]] = {
        "direct": (args.metrics, lambda: bench.direct(args.metrics))
    }
    for name, url in queues.items():
        planned[name] = (args.metrics, lambda url=url: bench.queue(url, args.metrics))
    for name, url in queues.items():
        if "default" not in name:
            planned[f"{name}, 2 workers"] = (
                args.metrics,
                lambda url=url: bench.queue(url, args.metrics, workers=2),
            )
    planned = {name: plan for name, plan in planned.items() if not wanted or name in wanted}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in planned}
    rows: list[tuple[str, int, list[float], list[float]]] = []
    try:
        for run in range(args.runs):
            for name, (_, measure) in planned.items():
                results[name].append(measure())
                print(f"run {run + 1}: {name} {results[name][-1][0]:,.0f}/s", flush=True)
        for name, (count, _) in planned.items():
            done = results[name]
            rows.append((name, count, [r[0] for r in done], [r[1] for r in done]))
        for kind in ("rq", "celery", "zmq"):
            name = f"kaneda 1.0: {kind}"
            if wanted and name not in wanted:
                continue
            count = args.kaneda1_metrics if kind != "rq" else args.kaneda1_metrics // 4
            end, calls = bench.kaneda1(kind, count)
            rows.append((name, count, [end], [calls]))
    finally:
        bench.stop()
    direct = next((statistics.median(r[2]) for r in rows if r[0] == "direct"), None)
    print("\n| path | metrics | end to end metrics/s (median, range) | vs direct | calls/s |")
    print("|---|---:|---:|---:|---:|")
    for name, count, ends, calls in rows:
        median = statistics.median(ends)
        spread = f" ({min(ends):,.0f} to {max(ends):,.0f})" if len(ends) > 1 else ""
        versus = f"{median / direct:.2f}x" if direct else "-"
        print(
            f"| {name} | {count:,} | {median:,.0f}{spread} | {versus} "
            f"| {statistics.median(calls):,.0f} |"
        )
    print(json.dumps({"cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
