"""Genuine kaneda 1.0, from PyPI, run beside this project for comparison.

kaneda 1.0's package is also called ``kaneda``, so it runs in a subprocess whose
``sys.path`` starts with its sources: there ``import kaneda`` is 1.0's, never this
project's face. The sdist is ``$KANEDA1_SDIST`` when set, else ``pip download --no-deps
kaneda==1.0`` into a cache folder, once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("KANEDA1_CACHE", Path(tempfile.gettempdir()) / "kaneda1-sdist"))
SDIST_NAME = "kaneda-1.0.tar.gz"
PIP_DOWNLOAD = (sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "kaneda==1.0")
PIP_DOWNLOAD += ("--no-binary", ":all:")


def kaneda1_sdist() -> Path:
    """kaneda 1.0's sdist: ``$KANEDA1_SDIST``, or downloaded from PyPI into the cache."""
    given = os.environ.get("KANEDA1_SDIST")
    if given:
        return Path(given)
    sdist = CACHE / SDIST_NAME
    if not sdist.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*PIP_DOWNLOAD, "-d", str(CACHE)],
            check=True,
            timeout=300,
        )
    return sdist


def kaneda1_source() -> Path:
    """The unpacked sdist (``kaneda/``, ``tests/`` ...), unpacked once."""
    root = CACHE / "kaneda-1.0"
    if not (root / "kaneda" / "__init__.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=CACHE))
        with tarfile.open(kaneda1_sdist()) as archive:
            archive.extractall(staging, filter="data")
        if not root.exists():
            (staging / "kaneda-1.0").rename(root)
    return root


def run_kaneda1(script: str, timeout: float = 60) -> Any:
    """Run ``script`` with kaneda 1.0 importable as ``kaneda``; the JSON it prints last.

    The script prints its result with ``print(json.dumps(...))``.
    """
    source = kaneda1_source()
    prelude = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(source)!r})
        import kaneda
        assert kaneda.__version__ == "1.0", kaneda.__file__
        assert kaneda.__file__.startswith({str(source)!r}), kaneda.__file__
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"kaneda 1.0 script failed:\n{done.stdout}\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1])
