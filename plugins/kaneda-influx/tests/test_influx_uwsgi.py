"""A real uWSGI: its master loads the application and forks its workers in C.

Without Python's fork steps (``--py-call-uwsgi-fork-hooks``), a thread of Kaneda's in
the master that holds the GIL or a lock at a fork leaves the worker hung for ever.
Every count is checked by query against the real InfluxDB.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from influx_server import InfluxServer, free_port
from test_influx_deployment import _get, _wait_listening, count

APPS = Path(__file__).parent / "apps"
UWSGI = shutil.which("uwsgi") or str(Path(sys.executable).parent / "uwsgi")

pytestmark = pytest.mark.skipif(
    not Path(UWSGI).exists(), reason="uWSGI is not installed (it builds with a C compiler)"
)


def _serve(
    port: int, env: dict[str, str], options: tuple[str, ...], log: Path
) -> subprocess.Popen[bytes]:
    command = [
        UWSGI, "--http", f"127.0.0.1:{port}", "--wsgi-file", str(APPS / "uwsgi_app.py"),
        "--master", "--processes", "4", "--worker-reload-mercy", "10", *options,
    ]  # fmt: skip
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


def _wait_loaded(log: Path, loads: int, server: subprocess.Popen[bytes]) -> None:
    """Wait until the application is loaded ``loads`` times (once per worker with
    --lazy-apps: one stopped while it loads never ends, a matter of uWSGI's)."""
    deadline = time.monotonic() + 30
    while log.read_text().count("(default app)") < loads:
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


@pytest.mark.parametrize(
    "options",
    [(), ("--py-call-uwsgi-fork-hooks", "--enable-threads"), ("--lazy-apps",)],
    ids=["default", "fork-hooks", "lazy-apps"],
)
def test_uwsgi_workers_forked_after_the_master_reported_serve_and_store_everything(
    influx_server: InfluxServer, database: str, options: tuple[str, ...], tmp_path: Path
) -> None:
    """The master reported 1,000 metrics as it loaded the application: its worker thread
    held the GIL at a fork, and the worker forked then never served a request (all four
    hung, in 2 runs of 7; killed by uWSGI at its stop, their metrics lost)."""
    lazy = "--lazy-apps" in options
    env = {
        **os.environ,
        "KANEDA_URL": f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5",
        "IMPORT_METRICS": "1000",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    for attempt in range(3):  # a fork at a bad instant is a matter of luck: three masters
        port, log = free_port(), tmp_path / f"uwsgi-{attempt}.log"
        server = _serve(port, env, options, log)
        try:
            _wait_listening(port, server)
            _wait_loaded(log, 4 if lazy else 1, server)
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(_get, [port] * 200, [f"a={attempt}"] * 200))
            assert statuses == [200] * 200
        finally:
            started = time.monotonic()
            server.send_signal(signal.SIGINT)  # uWSGI's stop
            server.wait(60)
        output = log.read_text()
        assert server.returncode == 0, output
        assert "NO MERCY" not in output, output  # a worker that did not end
        assert time.monotonic() - started < 8, output
        where = f"WHERE \"name\" = 'request' AND \"q\" = 'a={attempt}'"
        assert count(influx_server, database, where) == 200, output
    imports = 4000 if lazy else 1000  # each worker loads the application, or the master
    assert count(influx_server, database, "WHERE \"name\" = 'import'") == 3 * imports


def test_uwsgi_workers_without_teardown_deliver_their_queue_when_they_end(
    influx_server: InfluxServer, database: str, tmp_path: Path
) -> None:
    """--skip-atexit-teardown: uWSGI calls uwsgi.atexit as a worker ends, and tears
    nothing down, so Python's exit callbacks never ran: each worker's queue was lost at
    every recycle and stop (0 of 2,000 stored)."""
    env = {
        **os.environ,
        "KANEDA_URL": f"influxdb://127.0.0.1:{influx_server.port}/{database}?timeout=5",
        "IMPORT_METRICS": "0",  # the workers batch: their queues wait for their exits
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    options = ("--skip-atexit-teardown", "--max-requests", "100", "--min-worker-lifetime", "0")
    port, log = free_port(), tmp_path / "uwsgi.log"
    server = _serve(port, env, options, log)
    try:
        _wait_listening(port, server)
        _wait_loaded(log, 1, server)
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(_get, [port] * 1000, ["a=1"] * 1000))
        assert statuses == [200] * 1000
        # A worker still busy with a request when uWSGI stops runs no exit handler at
        # all (see docs/wsgi-asgi.md): the stop comes once the last one is done.
        time.sleep(1)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    output = log.read_text()
    assert server.returncode == 0, output
    assert output.count("Respawned uWSGI worker") >= 4, output  # recycled mid-test
    assert count(influx_server, database, "WHERE \"name\" = 'request'") == 1000, output
