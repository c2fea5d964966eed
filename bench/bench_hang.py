"""Per-call latency while the backend hangs: a server that accepts and never answers.

    python3 bench/bench_hang.py

A TCP server on loopback accepts connections and never replies. The backend under test
sends each batch over a socket to it and waits for an answer (with a 30 s timeout), so
its worker hangs on the first batch. Meanwhile the application keeps calling
``metrics.increment(...)`` at full speed; the table shows the per-call latency
percentiles during the hang, and how long ``flush(0.5)`` and ``close(0.5)`` took.
With ``--influx``, the backend is kaneda-influx pointed at the silent server instead.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from collections.abc import Sequence

from kaneda_core import Backend, Metric, Metrics


def silent_server() -> tuple[socket.socket, int]:
    """A listening socket that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


class SocketBackend(Backend):
    """Sends each batch as a line and waits for the server's reply."""

    def __init__(self, port: int) -> None:
        self.port = port

    def send(self, batch: Sequence[Metric]) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
            conn.sendall(f"{len(batch)} metrics\n".encode())
            conn.recv(1)  # the server never answers: this hangs


def pct(latencies: list[int], p: float) -> float:
    """The ``p`` quantile of sorted nanosecond latencies, in microseconds."""
    return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--influx", action="store_true")
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    server, port = silent_server()
    if args.influx:
        from kaneda_core import create_backend

        backend = create_backend(f"influxdb://127.0.0.1:{port}/bench?timeout=30")
        label = "kaneda-influx"
    else:
        backend = SocketBackend(port)
        label = "socket backend"
    metrics = Metrics(backend, batch_size=1000, max_buffer=100_000)
    metrics.increment("warmup")
    metrics.flush(0.2)  # the worker is now stuck in the first send
    clock = time.perf_counter_ns
    phases = []
    # Phase 1 fills the buffer (100,000) to 90%; phase 2 overflows it (drop_oldest).
    for phase, calls in (("buffer filling", 90_000), ("buffer full, dropping oldest", args.calls)):
        latencies = []
        for _ in range(calls):
            start = clock()
            metrics.increment("requests", tags={"route": "/", "code": "200"})
            latencies.append(clock() - start)
        latencies.sort()
        phases.append((phase, latencies))

    started = time.perf_counter()
    left_flush = metrics.flush(0.5)
    flush_s = time.perf_counter() - started
    started = time.perf_counter()
    left_close = metrics.close(0.5)
    close_s = time.perf_counter() - started
    stats = metrics.stats()
    print(f"{label}, calls while the server never answers (the worker is stuck in a send)\n")
    print("| phase | calls | p50 µs | p99 µs | p99.9 µs | max µs | mean µs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for phase, latencies in phases:
        print(
            f"| {phase} | {len(latencies):,} | {pct(latencies, 0.50):.2f} "
            f"| {pct(latencies, 0.99):.2f} | {pct(latencies, 0.999):.2f} "
            f"| {latencies[-1] / 1000:.0f} | {statistics.fmean(latencies) / 1000:.2f} |"
        )
    print(
        f"\nflush(0.5) returned after {flush_s:.2f}s with {left_flush:,} left; "
        f"close(0.5) after {close_s:.2f}s with {left_close:,} left; "
        f"dropped (buffer of 100,000 full): {stats.dropped:,}"
    )
    server.close()


if __name__ == "__main__":
    main()
