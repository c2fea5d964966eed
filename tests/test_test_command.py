"""The test command shows progress while it installs, and says why tests are skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_each_step_of_the_test_command_announces_itself() -> None:
    script = (ROOT / "scripts" / "test.sh").read_text()
    install = next(line for line in script.splitlines() if "pip install" in line)
    assert "--quiet" not in install and " -q " not in install, "the install must show progress"
    for step in ("Installing", "ruff check", "mypy", "pytest"):
        assert f'step "{step}' in script


def test_skipped_real_server_suites_say_how_to_run_them() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANEDA_TEST_")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-k", "RealServer and every_kind", "plugins"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
    for server, variable in (
        ("elasticsearch", "KANEDA_TEST_ELASTICSEARCH_URL=http://localhost:9200"),
        ("mongo", "KANEDA_TEST_MONGO_URL=mongodb://localhost:27017/"),
        ("rethinkdb", "KANEDA_TEST_RETHINKDB_URL=rethinkdb://localhost:28015/"),
    ):
        reason = f"docker compose up -d {server}, then set {variable}"
        assert any(
            line.startswith("SKIPPED") and reason in line for line in done.stdout.splitlines()
        ), f"no skip reason telling how to run the {server} suite in:\n{done.stdout}"


def test_the_install_step_shows_a_line_for_each_package_it_builds_and_installs() -> None:
    script = (ROOT / "scripts" / "test.sh").read_text()
    start = script.index("| sed ")
    end = script.index("\n\n", start)
    pipeline = script[start + 2 : end].replace("\\\n", " ")
    pip_output = "\n".join(
        [
            "Obtaining file:///repo",
            "  Installing build dependencies: started",
            "Requirement already satisfied: pluggy>=1.3 in ./venv (1.7.0)",
            "Collecting influxdb<6,>=5.3 (from kaneda-influx==2.0.0)",
            "Building wheels for collected packages: kaneda-core, kaneda-influx",
            "  Building editable for kaneda-core (pyproject.toml): started",
            "  Building editable for kaneda-core (pyproject.toml): finished with status 'done'",
            "  Created wheel for kaneda-core: filename=kaneda_core-2.0.0-0.editable-py3.whl",
            "Installing collected packages: influxdb, kaneda-core, kaneda-influx",
            "Successfully installed influxdb-5.3.2 kaneda-core-2.0.0 kaneda-influx-2.0.0",
        ]
    )
    shown = subprocess.run(
        ["bash", "-c", pipeline], input=pip_output, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert shown == [
        "  Obtaining file:///repo",
        "  Collecting influxdb<6,>=5.3 (from kaneda-influx==2.0.0)",
        "  Building wheels for collected packages: kaneda-core, kaneda-influx",
        "  Building editable for kaneda-core (pyproject.toml): started",
        "  Installing collected packages: influxdb, kaneda-core, kaneda-influx",
        "  Successfully installed influxdb-5.3.2 kaneda-core-2.0.0 kaneda-influx-2.0.0",
    ]
