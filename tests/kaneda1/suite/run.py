"""Run kaneda 1.0's own test suite against this project, with a real InfluxDB and Redis.

    python3 tests/kaneda1/suite/run.py [pytest arguments]   (or scripts/kaneda1-suite.sh)

The suite is taken from kaneda 1.0's sdist (PyPI, see ``tests/kaneda1/genuine.py``),
copied to a temporary folder and adapted only where today's pytest or client libraries
break a fixture (``adaptations.py`` lists each change and why; no test is changed). Its
settings name fixed ports (InfluxDB on localhost:8086, Redis on localhost:6379), so when
the runner may (root, ``unshare``) it runs in a network namespace of its own, where
those ports are its alone; otherwise they must be free. It starts a throwaway
``influxd`` and ``redis-server`` there, installs what the suite needs
(``requirements.txt`` here), runs pytest, and sorts the results: the tests that need an
Elasticsearch, MongoDB or RethinkDB server (none runs here), those that need
``kaneda.queues`` or ``django_kaneda`` while they are not installed, and the others,
which must all pass. The exit status is 0 when they do.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path[:0] = [str(HERE), str(HERE.parent), str(ROOT / "plugins" / "kaneda-influx" / "tests")]

from adaptations import adapt  # noqa: E402
from genuine import kaneda1_sdist  # noqa: E402
from influx_server import InfluxServer  # noqa: E402

INFLUX_PORT, REDIS_PORT = 8086, 6379
IN_NAMESPACE = "KANEDA1_SUITE_IN_NAMESPACE"

#: Tests that need a server no package provides here, by node id prefix.
NEEDS_SERVER = {
    "Elasticsearch": (
        "tests/integration/test_backends.py::TestBackends::test_elasticsearch_connection",
        "tests/integration/test_metrics.py::TestMetrics::test_elasticsearch_metric",
        "tests/integration/django/test_django.py::TestDjango::test_django_kaneda_with_backend",
    ),
    "MongoDB": (
        "tests/integration/test_backends.py::TestBackends::test_mongo_connection",
        "tests/integration/test_metrics.py::TestMetrics::test_mongo_metric",
    ),
    "RethinkDB": (
        "tests/integration/test_backends.py::TestBackends::test_rethink_connection",
        "tests/integration/test_metrics.py::TestMetrics::test_rethink_metric",
    ),
}
NEEDS_DJANGO_KANEDA = ("tests/integration/django/test_django.py",)
#: Tests that need a server and would fail here even with one, and why (each is a
#: difference from kaneda 1.0 that docs/migrating-from-kaneda-1.md states).
#: Tests that need a server and would fail with one too, and why (none known today:
#: the face's RethinkBackend connects when constructed, as 1.0's did).
FAILS_WITH_A_SERVER: dict[str, str] = {}


def main(pytest_args: list[str]) -> int:
    if os.environ.get(IN_NAMESPACE) is None:
        # What needs the network first: the namespace has none.
        _install_requirements()
        kaneda1_sdist()
        if _can_unshare():
            command = ["unshare", "--net", sys.executable, __file__, *pytest_args]
            return subprocess.call(command, env={**os.environ, IN_NAMESPACE: "1"})
        print("No network namespace (needs root and unshare): using this machine's ports.")
    else:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for port in (INFLUX_PORT, REDIS_PORT):
        if not _free(port):
            print(f"Port {port} is in use; kaneda 1.0's suite needs it free.", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="kaneda1-suite-"))
    try:
        suite = _unpack_suite(work)
        for adaptation in adapt(suite):
            print(f"adapted {adaptation.path}: {adaptation.why}")
        with _influxd(work), _redis(work):
            outcomes = _run_pytest(suite, work, pytest_args)
        return _report(outcomes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _install_requirements() -> None:
    missing = [
        line.split("#")[0].strip()
        for line in (HERE / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    modules = {"pytest-mock": "pytest_mock", "Django": "django"}
    missing = [name for name in missing if importlib.util.find_spec(modules[name]) is None]
    if missing:
        print(f"installing what kaneda 1.0's suite needs: {', '.join(missing)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)


def _unpack_suite(work: Path) -> Path:
    suite = work / "kaneda-1.0"
    with tarfile.open(kaneda1_sdist()) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith("kaneda-1.0/tests/")]
        archive.extractall(work, members=members, filter="data")
    # An ini of its own: neither this project's pytest settings nor any other apply.
    (suite / "pytest.ini").write_text("[pytest]\n")
    return suite


@contextmanager
def _influxd(work: Path) -> Iterator[None]:
    (work / "influxd").mkdir()
    server = InfluxServer(root=work / "influxd")
    server.port = INFLUX_PORT
    server.config.write_text(server._config_text())
    server.start()
    try:
        yield
    finally:
        server.destroy()


@contextmanager
def _redis(work: Path) -> Iterator[None]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    data = work / "redis"
    data.mkdir()
    options = ("--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "")
    options += ("--appendonly", "no", "--dir", str(data))
    process = subprocess.Popen([binary, *options], stdout=subprocess.DEVNULL)
    try:
        _wait_for_redis(process)
        yield
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_redis(process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", REDIS_PORT), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not answer")


def _run_pytest(suite: Path, work: Path, pytest_args: list[str]) -> dict[str, str]:
    junit = work / "results.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "KANEDA1_SUITE_DESELECTED": str(work / "deselected.txt"),
    }
    env.pop("KANEDA_URL", None)
    env.pop("KANEDA_SETTINGS_MODULE", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "kaneda1_suite_plugin",
        "-p",
        "no:cacheprovider",
    ]
    command += ["-c", str(suite / "pytest.ini"), "--rootdir", str(suite), "-rA"]
    # A module that cannot load (django_kaneda missing) must not stop the others.
    command += ["--continue-on-collection-errors", "--junitxml"]
    command += [str(junit), "tests", *pytest_args]
    subprocess.run(command, cwd=suite, env=env, check=False)
    outcomes = _outcomes(junit)
    deselected = work / "deselected.txt"
    if deselected.exists():
        for nodeid in deselected.read_text().split():
            outcomes[nodeid] = "not run"
    return outcomes


def _outcomes(junit: Path) -> dict[str, str]:
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        path = case.get("classname", "").replace(".", "/")
        name = case.get("name", "")
        module, _, cls = path.rpartition("/")
        if not path:  # a module that failed to load
            nodeid = name.replace(".", "/") + ".py"
        elif cls[:1].isupper():  # TestClass
            nodeid = f"{module}.py::{cls}::{name}"
        else:
            nodeid = f"{path}.py::{name}"
        if case.find("skipped") is not None:
            outcome = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        else:
            outcome = "passed"
        outcomes[nodeid] = outcome
    return outcomes


def _reason(nodeid: str, outcome: str) -> str | None:
    """Why a test that did not pass may fail here; None when it should have passed."""
    if outcome == "not run":
        return "needs kaneda.queues (the queue plugins), not installed"
    for server, prefixes in NEEDS_SERVER.items():
        if nodeid.startswith(prefixes):
            reason = (
                f"needs an {server} server" if server[0] in "AEIOU" else f"needs a {server} server"
            )
            if nodeid in FAILS_WITH_A_SERVER:
                reason += f"; with one it would still fail: {FAILS_WITH_A_SERVER[nodeid]}"
            return reason
    if nodeid.startswith(NEEDS_DJANGO_KANEDA) and importlib.util.find_spec("django_kaneda") is None:
        return "needs django_kaneda (kaneda-django), not installed"
    if nodeid.startswith("tests/integration/benchmarks/") and outcome == "skipped":
        return "a benchmark: kaneda 1.0 runs them only with --run-benchmark"
    return None


def _report(outcomes: dict[str, str], work: Path) -> int:
    passed = sorted(n for n, o in outcomes.items() if o == "passed")
    expected, unexpected = [], []
    for nodeid, outcome in sorted(outcomes.items()):
        if outcome == "passed":
            continue
        reason = _reason(nodeid, outcome)
        (expected if reason else unexpected).append((nodeid, outcome, reason))
    if not outcomes:
        print("kaneda 1.0's suite did not run (collection failed?)", file=sys.stderr)
        return 1
    print(f"\nkaneda 1.0's suite on this project: {len(passed)} passed")
    print(f"not passing, for a reason outside this project ({len(expected)}):")
    for nodeid, outcome, reason in expected:
        print(f"  {outcome:7} {nodeid}  -- {reason}")
    if unexpected:
        print(f"FAILING ({len(unexpected)}):")
        for nodeid, outcome, _ in unexpected:
            print(f"  {outcome:7} {nodeid}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
