"""Helpers shared by the kaneda-web tests (on sys.path through conftest.py)."""

from __future__ import annotations

from typing import Any

from kaneda_core import Metric, Metrics

DURATION = "http.request.duration"
EXCEPTIONS = "http.request.exceptions"


def reported(metrics: Metrics, name: str = DURATION) -> list[Metric]:
    """What ``metrics`` stored under ``name`` (memory backend), in order."""
    backend: Any = metrics.backend
    return [m for m in backend.metrics if m.name == name]


def request_tags(metrics: Metrics, name: str = DURATION) -> list[dict[str, Any]]:
    """The tags of every metric stored under ``name``, in order."""
    return [dict(m.tags) for m in reported(metrics, name)]  # type: ignore[arg-type]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Any, *, timeout: float, what: str, log: Any = None) -> None:
    """Poll ``check()`` until it is true; fail naming ``what`` (and the server's log)."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def wait_for_port(port: int, process: Any, log: Any, timeout: float = 30) -> None:
    """Wait until a server accepts connections on ``port`` (without sending a request)."""
    import socket

    def accepting() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    wait_until(accepting, timeout=timeout, what=f"a server on port {port}", log=log)


def drive(
    port: int, load: list[tuple[str, str, Any, int]], workers: int = 4, timeout: float = 10
) -> None:
    """Send every request of ``load`` (path, method, _, times), a few at a time, each
    answered within ``timeout`` seconds."""
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def send(path: str, method: str) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as error:
            error.read()
            return int(error.code)

    calls = [(path, method) for path, method, _, times in load for _ in range(times)]
    with ThreadPoolExecutor(workers) as pool:
        statuses = list(pool.map(lambda call: send(*call), calls))
    assert len(statuses) == len(calls)


def influx_counts(
    server: Any, database: str, measurement: str, name: str = DURATION
) -> dict[tuple[str, str], int]:
    """``{(route, status): points}`` of ``name`` in ``measurement``, by an InfluxQL count."""
    answer = server.query(
        f'SELECT count("value") FROM "{measurement}" WHERE "name" = \'{name}\' '
        'GROUP BY "route", "status"',
        db=database,
    )
    result = answer["results"][0]
    if "error" in result:
        if "database not found" in result["error"]:
            return {}
        raise AssertionError(result["error"])
    counts: dict[tuple[str, str], int] = {}
    for series in result.get("series", []):
        key = (series["tags"]["route"], series["tags"]["status"])
        counts[key] = int(series["values"][0][1])
    return counts


def gunicorn_options() -> list[str]:
    """Options that keep a test's gunicorn to itself: no control socket in ``~/.gunicorn``."""
    from gunicorn.config import KNOWN_SETTINGS

    flags = {flag for setting in KNOWN_SETTINGS for flag in setting.cli or ()}
    return ["--no-control-socket"] if "--no-control-socket" in flags else []
