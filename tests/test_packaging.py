"""`pip install .` installs the core alone; the documented commands install a plugin with it."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ("elasticsearch", "pymongo", "rethinkdb", "influxdb")
#: The queue plugins' engines: kaneda-core stays free of them too.
ENGINES = ("celery", "kombu", "rq", "redis", "pyzmq")


#: The environment of the fresh venv's processes: without PYTHONPATH, which would let this
#: checkout's packages (and their build metadata) in and hide what the venv lacks.
FRESH = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def make_venv(tmp_path: Path) -> Path:
    """A fresh virtual environment under ``tmp_path``; returns its python."""
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    return env / "bin" / "python"


def test_pip_install_dot_installs_the_core_and_no_storage_client(tmp_path: Path) -> None:
    python = make_venv(tmp_path)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)],
        env=FRESH,
        check=True,
        timeout=600,
        cwd=tmp_path,
    )
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        env=FRESH,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert "kaneda-core" in names
    assert not names & set(CLIENTS), f"a storage client came with the core: {names}"
    assert not names & set(ENGINES), f"a queue engine came with the core: {names}"
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
        [str(python), "-c", check],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=FRESH,
    ).stdout
    assert out.splitlines()[0] == "1"
    assert "pip install kaneda-influx" in out
    assert sys.version_info >= (3, 10)


def documented_command(page: str, target: str) -> str:
    """The ``pip install ...`` command ``page`` documents for ``target``, as written."""
    text = (ROOT / page).read_text("utf-8")
    for line in text.splitlines():
        if "pip install" in line and target in line:
            command = line[line.index("pip install") :].split("#")[0].split("`")[0].strip()
            return command
    raise AssertionError(f"{page} documents no pip install for {target}")


def test_the_documented_plugin_installs_work_in_a_fresh_environment(tmp_path: Path) -> None:
    """README's command for a plugin, then the example plugin's README command, verbatim."""
    python = make_venv(tmp_path)
    bin_dir = python.parent
    for page, target in (
        ("plugins/kaneda-influx/README.md", "./plugins/kaneda-influx"),
        ("examples/kaneda-example-plugin/README.md", "./examples/kaneda-example-plugin"),
    ):
        command = documented_command(page, target)
        assert command.startswith("pip install . ")
        subprocess.run(
            [str(python), "-m", *command.split(), "--quiet"],
            check=True,
            timeout=600,
            cwd=ROOT,
            env=FRESH,
        )
    listed = subprocess.run(
        [str(bin_dir / "kaneda"), "backends"],
        capture_output=True,
        text=True,
        timeout=60,
        env=FRESH,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines() if line}
    assert rows["influxdb"][-1] == "yes" and rows["csv"][-1] == "yes"
    sent = subprocess.run(
        [str(bin_dir / "kaneda"), "send", f"csv://{tmp_path}/m.csv", "gauge", "queue.depth", "12"],
        env=FRESH,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    assert "queue.depth" in (tmp_path / "m.csv").read_text()
