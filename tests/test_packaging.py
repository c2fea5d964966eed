"""`pip install .` installs the core alone."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ("elasticsearch", "pymongo", "rethinkdb", "influxdb")


def test_pip_install_dot_installs_the_core_and_no_storage_client(tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert "kaneda-core" in names
    assert not names & set(CLIENTS), f"a storage client came with the core: {names}"
    check = (
        "from kaneda_core import connect\n"
        "from kaneda import Metrics\n"
        "from kaneda.backends import LoggerBackend\n"
        "m = connect('memory://', batching=False); m.increment('x')\n"
        "print(len(m.backend.metrics))\n"
        "try:\n"
        "    from kaneda.backends import InfluxBackend\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [str(python), "-c", check], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.splitlines()[0] == "1"
    assert "pip install kaneda-influx" in out
    assert sys.version_info >= (3, 10)
