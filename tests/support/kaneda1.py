"""Genuine kaneda 1.0, from PyPI, for the tests that check both directions against it.

``pip install --target`` puts kaneda 1.0 (and ``six``) in a folder of its own; a process
run with that folder first on ``PYTHONPATH`` imports kaneda 1.0's ``kaneda`` instead of
this project's, and the broker clients (celery, rq, redis, pyzmq, influxdb) of this
environment. kaneda 1.0 pins ``click==6.6`` for its ``zmqworker`` command alone; it goes
in a folder of its own too (``old_click=True``), since Celery's and RQ's commands need a
newer click. The folders are kept between test runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REQUIREMENTS = ("kaneda==1.0", "six")
CLICK = "click==6.6"


def kaneda1_site() -> Path:
    """The folder holding kaneda 1.0, installed from PyPI on first use."""
    version = f"{sys.version_info.major}{sys.version_info.minor}"
    site = Path(tempfile.gettempdir()) / f"kaneda-tests-kaneda1-py{version}"
    if (site / "kaneda" / "__init__.py").exists():
        return site
    building = Path(tempfile.mkdtemp(prefix="kaneda1-building-"))
    for folder, requirements in ((building, REQUIREMENTS), (building / "click6", (CLICK,))):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
                str(folder),
                *requirements,
            ],
            check=True,
            timeout=600,
        )
    try:
        building.rename(site)
    except OSError:  # another run finished first
        shutil.rmtree(building, ignore_errors=True)
    return site


def kaneda1_environment(site: Path, *, old_click: bool = False, **variables: str) -> dict[str, str]:
    """An environment whose Python imports kaneda 1.0 (from ``site``) as ``kaneda``.

    ``old_click`` adds kaneda 1.0's click 6.6, which its ``zmqworker`` needs.
    """
    folders = [str(site / "click6")] if old_click else []
    folders += [str(site), variables.pop("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(f for f in folders if f), **variables}


def check_is_kaneda1(site: Path) -> None:
    """Fail unless a process on ``site`` really imports kaneda 1.0."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import kaneda, kaneda.queues; print(kaneda.__version__, kaneda.__file__)",
        ],
        env=kaneda1_environment(site),
        cwd=site,  # not the repository, whose kaneda/ would come first
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    version, path = out.split()
    assert version == "1.0" and path.startswith(str(site)), out
