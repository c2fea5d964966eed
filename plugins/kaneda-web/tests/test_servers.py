"""End to end: real servers (gunicorn, uvicorn), real requests, a real InfluxDB, counted by query.

Each run starts the server on a free loopback port with ``KANEDA_URL`` pointing at a
fresh database, sends a fixed set of requests, stops the server with SIGTERM, and checks
that InfluxDB holds exactly one timing per request, under route templates only. The apps
flush every 60 s: what is stored was delivered while the server shut down. uvicorn ends
its process (and each gunicorn worker running it) by raising that SIGTERM again once it
has shut down: the ASGI middleware flushes at lifespan shutdown, and Kaneda's SIGTERM
handler (or, in a worker of ``uvicorn --workers``, the end of the server's shutdown)
delivers what every Metrics of the process has left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_helpers import drive, free_port, gunicorn_options, influx_counts, wait_for_port

APPS = Path(__file__).resolve().parent / "apps"

# What each run sends: path, method, expected (route, status), how many times.
LOAD = [
    *[(f"/items/{i}", "GET", ("{items}", "200"), 1) for i in range(60)],
    *[(f"/no/such/page/{i}", "GET", ("<unmatched>", "404"), 1) for i in range(20)],
    ("/boom", "GET", ("/boom", "500"), 10),
    ("/items/1", "POST", ("{items}", "405"), 10),
]
REQUESTS = sum(times for *_, times in LOAD)


def expected_counts(items_route: str, not_allowed_route: str) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for _, _, (route, status), times in LOAD:
        if route == "{items}":
            route = not_allowed_route if status == "405" else items_route
        counts[(route, status)] = counts.get((route, status), 0) + times
    return counts


@pytest.fixture
def database() -> str:
    return f"kaneda_web_{uuid.uuid4().hex[:12]}"


def start(command: list[str], database: str, influx: Any, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KANEDA_URL": f"influxdb://127.0.0.1:{influx.port}/{database}"}
    env.pop("KANEDA_SETTINGS_MODULE", None)
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=APPS, env=env, stdout=output, stderr=output)


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "server.log"
    yield log


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise


def run_load(
    command: list[str],
    port: int,
    database: str,
    influx: Any,
    log: Path,
    expected: dict[tuple[str, str], int],
) -> None:
    process = start(command, database, influx, log)
    try:
        wait_for_port(port, process, log)
        drive(port, LOAD)
        # The apps flush every 60 s: nothing need be stored yet. Shutting the server
        # down must deliver every queued metric before the process ends.
    finally:
        code = stop(process)
    # uvicorn ends by raising the SIGTERM it caught again, once it has shut down.
    assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
    # Exactly one timing per request, each under its route template, and the 500s counted.
    assert influx_counts(influx, database, "timing") == expected, log.read_text()[-3000:]
    assert sum(expected.values()) == REQUESTS
    assert influx_counts(influx, database, "counter", "http.request.exceptions") == {
        ("/boom", ""): 10
    }


def test_flask_under_gunicorn_into_influxdb(
    influx_server: Any, database: str, server_log: Path
) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", "2",
        "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", "20",
        *gunicorn_options(),
        "flask_app:app",
    ]  # fmt: skip
    # Flask names no rule for a method the rule does not allow (405): it is unmatched.
    expected = expected_counts("/items/<int:item_id>", "<unmatched>")
    run_load(command, port, database, influx_server, server_log, expected)


def test_fastapi_under_uvicorn_into_influxdb(
    influx_server: Any, database: str, server_log: Path
) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-access-log",
        "fastapi_app:app",
    ]  # fmt: skip
    expected = expected_counts("/items/{item_id}", "/items/{item_id}")
    run_load(command, port, database, influx_server, server_log, expected)


def test_http_only_asgi_app_under_uvicorn_into_influxdb(
    influx_server: Any, database: str, server_log: Path
) -> None:
    # The application raises on the lifespan scope; uvicorn still hears the middleware's
    # answers, and the shutdown still delivers.
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-access-log",
        "raw_asgi_app:app",
    ]  # fmt: skip
    expected = expected_counts("/items/{item_id}", "/items/{item_id}")
    run_load(command, port, database, influx_server, server_log, expected)
    assert "ASGI 'lifespan' protocol appears unsupported" not in server_log.read_text()


def test_fastapi_under_gunicorn_with_uvicorn_workers_into_influxdb(
    influx_server: Any, database: str, server_log: Path
) -> None:
    pytest.importorskip("uvicorn.workers")
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", "2",
        "--worker-class", "uvicorn.workers.UvicornWorker",
        "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", "20",
        *gunicorn_options(),
        "fastapi_app:app",
    ]  # fmt: skip
    expected = expected_counts("/items/{item_id}", "/items/{item_id}")
    run_load(command, port, database, influx_server, server_log, expected)


@pytest.mark.parametrize("lifespan", ["auto", "off"])
def test_every_metrics_of_uvicorn_workers_delivers_into_influxdb(
    influx_server: Any, database: str, server_log: Path, lifespan: str
) -> None:
    """``uvicorn --workers 2``: each worker imports the application while uvicorn holds
    SIGTERM, and ends by raising it again with the default action back. Without lifespan
    nothing was stored; with it, the middleware's Metrics only (here none of the 101
    counts of the application's own)."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--no-access-log",
        "--workers", "2",
        "--lifespan", lifespan,
        "two_metrics_app:app",
    ]  # fmt: skip
    expected = expected_counts("/items/{item_id}", "/items/{item_id}")
    expected[("/items/{item_id}", "200")] += 1  # the request that waits for a worker
    process = start(command, database, influx_server, server_log)
    try:
        wait_for_port(port, process, server_log)
        # The parent listens before its workers have imported the application: one
        # request, waited for, is served once a worker is up.
        drive(port, [("/items/0", "GET", None, 1)], workers=1, timeout=180)
        drive(port, LOAD)
    finally:
        code = stop(process)
    log = server_log.read_text()
    assert code == 0, log[-3000:]  # the parent exits once its workers are gone
    assert influx_counts(influx_server, database, "timing") == expected, log[-3000:]
    assert influx_counts(influx_server, database, "counter", "app.requests") == {
        ("any", ""): REQUESTS + 1
    }, log[-3000:]


def test_every_metrics_of_gunicorns_uvicorn_workers_with_preload_delivers_into_influxdb(
    influx_server: Any, database: str, server_log: Path
) -> None:
    """gunicorn ``-k uvicorn.workers.UvicornWorker --preload``: the application (and its
    Metrics) is made in the master; each worker puts SIGTERM's default back, then uvicorn
    takes it and ends the worker by raising it again. The application's own Metrics (not
    flushed at lifespan shutdown) lost what it had queued."""
    pytest.importorskip("uvicorn.workers")
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", "2",
        "--worker-class", "uvicorn.workers.UvicornWorker",
        "--preload",
        "--bind", f"127.0.0.1:{port}",
        "--graceful-timeout", "20",
        *gunicorn_options(),
        "two_metrics_app:app",
    ]  # fmt: skip
    expected = expected_counts("/items/{item_id}", "/items/{item_id}")
    process = start(command, database, influx_server, server_log)
    try:
        wait_for_port(port, process, server_log)
        drive(port, LOAD)
    finally:
        code = stop(process)
    log = server_log.read_text()
    assert code == 0, log[-3000:]
    assert influx_counts(influx_server, database, "timing") == expected, log[-3000:]
    assert influx_counts(influx_server, database, "counter", "app.requests") == {
        ("any", ""): REQUESTS
    }, log[-3000:]
