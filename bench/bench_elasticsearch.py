"""Documents per second into a local Elasticsearch endpoint: kaneda-elasticsearch vs the
raw client's ``helpers.bulk``, side by side in one run.

    python3 bench/bench_elasticsearch.py [--docs 100000]

The endpoint is the test suite's fake server (``plugins/kaneda-elasticsearch/tests``)
answering every ``_bulk`` with a canned success without storing, in a process of
its own: this measures the
client side (building documents, serializing NDJSON, the HTTP round trip), not a
server. Both writers use batches of 1,000 and the same documents' shape.

- kaneda-elasticsearch: ``metrics.gauge(...)`` calls with batching on, timed from the
  first call until ``flush()`` returns;
- ``elasticsearch.helpers.bulk`` with ``chunk_size=1000``, given the same documents as
  dicts built in the timed loop (an application reporting metrics that way).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins" / "kaneda-elasticsearch" / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hot_path import without_hook_plugins  # noqa: E402

BATCH = 1000
TAGS = {"route": "/checkout", "region": "eu-west-1"}


def run_kaneda(server: RemoteServer, docs: int) -> float:
    from kaneda_elasticsearch import ElasticsearchBackend

    from kaneda_core import Metrics

    without_hook_plugins()
    backend = ElasticsearchBackend("bench", "bench", connection_url=server.url, timeout=30)
    metrics = Metrics(backend, batch_size=BATCH, max_buffer=docs + 1)
    metrics.gauge("warmup", 0)
    metrics.flush()
    started = time.perf_counter()
    for i in range(docs):
        metrics.gauge("checkout.total", i, tags=TAGS)
    metrics.flush()
    elapsed = time.perf_counter() - started
    assert metrics.stats().sent == docs + 1
    metrics.close()
    return docs / elapsed


def run_helpers_bulk(server: RemoteServer, docs: int) -> float:
    from elasticsearch import Elasticsearch, helpers

    client = Elasticsearch(server.url, request_timeout=30)

    def actions():  # type: ignore[no-untyped-def]
        for i in range(docs):
            now = datetime.now(timezone.utc)
            yield {
                "_index": f"bench-{now:%Y.%m.%d}",
                "_source": {
                    "@timestamp": now.isoformat(),
                    "name": "checkout.total",
                    "metric": "gauge",
                    "host": "bench",
                    "app_name": "bench",
                    "tags": TAGS,
                    "value": i,
                    "value_type": "number",
                },
            }

    started = time.perf_counter()
    indexed, errors = helpers.bulk(client, actions(), chunk_size=BATCH)
    elapsed = time.perf_counter() - started
    assert indexed == docs and not errors
    client.close()
    return docs / elapsed


class RemoteServer:
    """The fake endpoint in a process of its own, so it does not share our GIL."""

    def __init__(self) -> None:
        tests = str(ROOT / "plugins" / "kaneda-elasticsearch" / "tests")
        code = (
            f"import sys; sys.path.insert(0, {tests!r})\n"
            "from fake_elasticsearch import FakeElasticsearch\n"
            "server = FakeElasticsearch(store=False)\n"
            "print(server.url, flush=True)\n"
            "import time\n"
            "while True: time.sleep(60)\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    args = parser.parse_args()
    server = RemoteServer()
    try:
        rows = [
            (
                "**kaneda-elasticsearch**, metrics.gauge() calls, batching",
                run_kaneda(server, args.docs),
            ),
            ("elasticsearch.helpers.bulk", run_helpers_bulk(server, args.docs)),
        ]
    finally:
        server.stop()
    raw = rows[1][1]
    print(f"{args.docs:,} documents, batches of {BATCH:,}, local fake endpoint (not stored)\n")
    print("| writer | docs/s | vs helpers.bulk |")
    print("|---|---:|---:|")
    for label, rate in rows:
        print(f"| {label} | {rate:,.0f} | {rate / raw:.2f}x |")


if __name__ == "__main__":
    main()
