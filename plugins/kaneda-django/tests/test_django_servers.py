"""End to end: the test project under gunicorn (WSGI) and uvicorn (ASGI), real requests,
a real InfluxDB, counted by query.

The project's settings name the backend with ``KANEDA_URL`` and flush only at exit, so
every timing InfluxDB holds was delivered by the server shutting down: a gunicorn worker
at interpreter exit, uvicorn at the end of its lifespan (it ends its process by raising
the signal again, and interpreter exit handlers never run).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# path, method, (route, status) expected, times
LOAD = [
    *[(f"/items/{i}/", "GET", ("/items/<int:pk>/", "200"), 1) for i in range(50)],
    *[(f"/api/users/u{i}/", "GET", ("/api/users/<str:name>/", "200"), 1) for i in range(10)],
    *[(f"/no/such/page/{i}", "GET", ("<unmatched>", "404"), 1) for i in range(20)],
    ("/boom/", "GET", ("/boom/", "500"), 10),
    ("/orders/", "POST", ("/orders/", "201"), 10),
]


def gunicorn_options() -> list[str]:
    """Options that keep a test's gunicorn to itself: no control socket in ``~/.gunicorn``."""
    from gunicorn.config import KNOWN_SETTINGS

    flags = {flag for setting in KNOWN_SETTINGS for flag in setting.cli or ()}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def send(port: int, path: str, method: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


def counts(influx: Any, database: str, measurement: str, name: str) -> dict[tuple[str, str], int]:
    answer = influx.query(
        f'SELECT count("value") FROM "{measurement}" WHERE "name" = \'{name}\' '
        'GROUP BY "route", "status"',
        db=database,
    )
    result = answer["results"][0]
    assert "error" not in result, result
    return {
        (s["tags"]["route"], s["tags"]["status"]): int(s["values"][0][1])
        for s in result.get("series", [])
    }


def serve_load(command: list[str], influx: Any, log: Path) -> tuple[str, int]:
    """Serve LOAD with ``command`` (listening on ``{port}``); the database used, the exit code."""
    database = f"kaneda_django_{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kaneda_test_project.settings",
        "KANEDA_TEST_URL": f"influxdb://127.0.0.1:{influx.port}/{database}",
    }
    command = [part.replace("{port}", str(port)) for part in command]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=HERE, env=env, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        calls = [(path, method) for path, method, _, times in LOAD for _ in range(times)]
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda call: send(port, *call), calls))
        assert statuses.count(500) == 10 and statuses.count(201) == 10
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    return database, code


def assert_every_request_stored(influx: Any, database: str, log: Path) -> None:
    expected: dict[tuple[str, str], int] = {}
    for _, _, key, times in LOAD:
        expected[key] = expected.get(key, 0) + times
    stored = counts(influx, database, "timing", "http.request.duration")
    assert stored == expected, log.read_text()[-3000:]
    assert counts(influx, database, "counter", "http.request.exceptions") == {("/boom/", ""): 10}


def test_django_under_gunicorn_into_influxdb(influx_server: Any, tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", "2",
        "--bind", "127.0.0.1:{port}",
        *gunicorn_options(),
        "kaneda_test_project.wsgi",
    ]  # fmt: skip
    database, code = serve_load(command, influx_server, log)
    assert code == 0, log.read_text()[-3000:]
    assert_every_request_stored(influx_server, database, log)


def test_django_under_uvicorn_into_influxdb(influx_server: Any, tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    command = [
        sys.executable, "-m", "uvicorn",
        "--host", "127.0.0.1",
        "--port", "{port}",
        "--no-access-log",
        "kaneda_test_project.asgi:application",
    ]  # fmt: skip
    database, code = serve_load(command, influx_server, log)
    # uvicorn ends by raising the SIGTERM it caught again, once it has shut down.
    assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert_every_request_stored(influx_server, database, log)
