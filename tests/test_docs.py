"""Every code block in the README and the docs runs as written.

How a page's blocks are run, visible in the markdown itself:

- a ```` ```python ```` block whose first line is a comment naming a file
  (``# kaneda_statsd/backend.py``) is written to that file in a fresh folder;
- the other ```` ```python ```` blocks run in order, as one script, in that folder (with
  the folder on the import path, so they can import the files);
- when a file was written under ``tests/``, pytest then runs those tests there;
- ```` ```toml ```` blocks must parse;
- a block preceded by ``<!-- not run: why -->`` is not run (the reason is required);
- blocks in other languages (``bash``, ``sql``, ``text``) are not run here: the install
  commands are tested in test_install_commands.py.

New pages under docs/ and new plugin READMEs are picked up without touching this file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("plugins/*/README.md")],
)
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*\Z", re.DOTALL)
FILE_COMMENT = re.compile(r"\A# (?P<path>[\w./-]+\.py)\n")


class Block(NamedTuple):
    """One fenced code block of a page."""

    page: Path
    line: int
    language: str
    code: str
    not_run: str | None  # the reason given in <!-- not run: ... -->, if any


def blocks(page: Path) -> list[Block]:
    text = page.read_text("utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        marker = NOT_RUN.search(before[-300:])
        found.append(
            Block(
                page,
                text.count("\n", 0, match.start()) + 1,
                match["info"].strip().split(" ")[0],
                match["code"],
                marker["reason"] if marker else None,
            )
        )
    return found


def runnable(page: Path) -> bool:
    return any(b.language == "python" and b.not_run is None for b in blocks(page))


def test_the_pages_are_found() -> None:
    names = {str(page.relative_to(ROOT)) for page in PAGES}
    assert {"README.md", "docs/writing-a-backend.md", "docs/hooks.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_that_is_not_run_says_why(page: Path) -> None:
    for block in blocks(page):
        if block.not_run is not None:
            assert block.not_run, f"{page.name}:{block.line}: <!-- not run: --> needs a reason"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_toml_blocks_parse(page: Path) -> None:
    for block in blocks(page):
        if block.language == "toml" and block.not_run is None:
            tomllib.loads(block.code)


@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_python_blocks_run_as_written(page: Path, tmp_path: Path) -> None:
    script: list[str] = []
    tests_written = False
    for block in blocks(page):
        if block.language != "python" or block.not_run is not None:
            continue
        named = FILE_COMMENT.match(block.code)
        if named:
            target = tmp_path / named["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, "utf-8")
            tests_written |= named["path"].startswith("tests/")
        else:
            # Keep the page's line numbers in tracebacks: pad up to the block's first line.
            padding = block.line - sum(part.count("\n") for part in script)
            script.append("\n" * max(padding, 0) + block.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANEDA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    if script:
        source = tmp_path / f"{page.stem}_blocks.py"
        source.write_text("".join(script), "utf-8")
        done = subprocess.run(
            [sys.executable, str(source)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{page.relative_to(ROOT)}:\n{done.stdout}\n{done.stderr}"
    if tests_written:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{page.relative_to(ROOT)}'s tests:\n{done.stdout}"
        assert " passed" in done.stdout and "failed" not in done.stdout
