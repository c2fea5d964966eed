"""Every Python block of the kaneda-web pages runs as written, each in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PAGES = [
    ROOT / "docs" / "flask.md",
    ROOT / "docs" / "fastapi.md",
    ROOT / "docs" / "wsgi-asgi.md",
    ROOT / "plugins" / "kaneda-web" / "README.md",
]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text()), 1):
            found.append((f"{page.name}:{number}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[where for where, _ in blocks()])
def test_the_block_runs(where: str, code: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANEDA_")}
    result = subprocess.run(
        [sys.executable, "-"],
        input=code,
        text=True,
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stderr}"


def test_every_page_has_blocks_to_run() -> None:
    assert {where.split(":")[0] for where, _ in blocks()} == {page.name for page in PAGES}
