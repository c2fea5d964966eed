"""Every install command in the README, the docs and the plugin READMEs works from a clone.

A command that names a folder of this repository must name a folder that exists, and a
plugin's folder must come with the core's (``.``), since ``kaneda-core`` is not on PyPI
yet. A command with a published name (``pip install kaneda-influx``) must say it is for
once the packages are published. tests/test_packaging.py runs the commands that matter
in a fresh environment.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("plugins/*/README.md"),
        *ROOT.glob("examples/*/README.md"),
    ]
)
COMMAND = re.compile(r"pip install (?P<args>[^`#\n|]*)")
FLAGS_WITH_VALUE = {"-r", "--requirement", "-c", "--constraint"}


def install_commands(page: Path) -> list[tuple[int, str, str]]:
    """(line number, arguments, the paragraph around it) for each pip install on ``page``."""
    text = page.read_text("utf-8")
    paragraphs = re.split(r"\n\s*\n", text)
    found = []
    for paragraph in paragraphs:
        for match in COMMAND.finditer(paragraph):
            line = text.count("\n", 0, text.index(paragraph)) + paragraph.count(
                "\n", 0, match.start()
            )
            found.append((line + 1, match["args"].split("&&")[0].strip(), paragraph))
    return found


def test_the_pages_hold_install_commands() -> None:
    assert sum(len(install_commands(page)) for page in PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_install_commands_work_from_a_clone(page: Path) -> None:
    for line, args, paragraph in install_commands(page):
        where = f"{page.relative_to(ROOT)}:{line}: pip install {args}"
        words = shlex.split(args)
        targets = []
        skip = False
        for word in words:
            if skip:
                assert (ROOT / word).exists(), f"{where}: {word} does not exist"
                skip = False
            elif word in FLAGS_WITH_VALUE:
                skip = True
            elif not word.startswith("-"):
                targets.append(word)
        local = [t for t in targets if t.startswith((".", "/"))]
        published = [t for t in targets if t not in local]
        for target in local:
            folder = (ROOT / target.split("[")[0]).resolve()
            assert (folder / "pyproject.toml").exists(), f"{where}: {target} is no distribution"
            if folder != ROOT:
                assert "." in targets, f"{where}: {target} needs the core (.) in the same command"
        if published:
            said = paragraph.lower()
            assert "published" in said or "pypi" in said, (
                f"{where}: {published} are not on PyPI yet; say the command is for once they are"
            )
