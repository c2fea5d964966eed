"""Every install command in the README, the docs and the plugin READMEs works from a clone.

Each ``pip install`` is found wherever it is written: a line of a fenced block, an
inline code span (also one that a line break cuts in two), a table row. A command that
names a folder of this repository must name a distribution there, and must name, in the
same command, the folder of every distribution of this repository it depends on
(``kaneda-core`` is ``.``; ``kaneda-django`` needs ``kaneda-web``): none of them is on
PyPI yet, so pip could not find them. A command with a published name of this project
(``pip install kaneda-influx``) must say, in its paragraph or table row, that it is for
once the packages are published. tests/test_packaging.py runs the commands that matter
in a fresh environment.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("plugins/*/README.md"),
        *ROOT.glob("examples/*/README.md"),
    ]
)
FENCE = re.compile(r"^```[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"\bpip3? install\s+(?P<args>[^`#\n|;)]*)")
FLAGS_WITH_VALUE = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable"}


class Command(NamedTuple):
    """One ``pip install``: where it is, its arguments, and the text around it."""

    line: int
    args: str
    context: str


def units(text: str) -> list[tuple[int, str]]:
    """(line, text) of each place a command can be read from, whole.

    A fenced block gives one unit per line; a table, one per row; any other paragraph
    is one unit with its lines joined, so an inline command cut by a line break is whole.
    """
    found: list[tuple[int, str]] = []

    def line_of(offset: int) -> int:
        return text.count("\n", 0, offset) + 1  # the same in ``prose``, which keeps lines

    for block in FENCE.finditer(text):
        first = line_of(block.start("code"))
        found += [(first + i, line) for i, line in enumerate(block["code"].splitlines())]
    prose = FENCE.sub(lambda block: "\n" * block[0].count("\n"), text)
    text = prose
    for paragraph in re.finditer(r"(?:^[^\n]*\S[^\n]*(?:\n|$))+", prose, re.MULTILINE):
        lines = paragraph[0].splitlines()
        first = line_of(paragraph.start())
        if all(line.lstrip().startswith("|") for line in lines):
            found += [(first + i, line) for i, line in enumerate(lines)]
        else:
            found.append((first, " ".join(line.strip() for line in lines)))
    return found


def install_commands(text: str) -> list[Command]:
    """Every ``pip install`` in a page's text."""
    return [
        Command(line, match["args"].split("&&")[0].strip(), unit)
        for line, unit in units(text)
        for match in COMMAND.finditer(unit)
    ]


def distribution(folder: Path) -> tuple[str, dict[str, list[str]]]:
    """A folder's distribution name, and its dependencies ("" for the required ones)."""
    project = tomllib.loads((folder / "pyproject.toml").read_text("utf-8"))["project"]
    needs = {"": project.get("dependencies", [])}
    needs.update(project.get("optional-dependencies", {}))
    return project["name"], needs


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower()


#: The distributions of this repository (not on PyPI yet), and their folders.
FOLDERS = {
    distribution(path.parent)[0]: path.parent
    for path in [ROOT / "pyproject.toml", *ROOT.glob("*/*/pyproject.toml")]
}
OURS = set(FOLDERS)


def targets(args: str) -> list[str]:
    """The requirements and folders ``pip install ARGS`` installs (``-r`` files read)."""
    found = []
    words = shlex.split(args)
    flag = None
    for word in words:
        if flag in ("-r", "--requirement"):
            path = ROOT / word
            assert path.exists(), f"{word} does not exist"
            for line in path.read_text("utf-8").splitlines():
                line = line.split("#")[0].strip()
                if line:
                    found += targets(line)
        elif flag in ("-e", "--editable"):
            found.append(word if word.startswith((".", "/")) else f"./{word}")
        elif flag is None and not word.startswith("-"):
            found.append(word)
        flag = word if word in FLAGS_WITH_VALUE else None
    return found


def check(command: Command) -> None:
    """Raise AssertionError when ``command`` cannot work as written from a clone."""
    wanted = targets(command.args)
    local = [t for t in wanted if t.startswith((".", "/"))]
    published = [requirement_name(t) for t in wanted if t not in local]
    provided: dict[str, list[str]] = {}
    for target in local:
        folder_text, _, extras = target.partition("[")
        folder = (ROOT / folder_text).resolve()
        assert (folder / "pyproject.toml").exists(), f"{target} is no distribution"
        name, needs = distribution(folder)
        provided[name] = [""] + [e.strip() for e in extras.rstrip("]").split(",") if e.strip()]
        provided[name] = [e for e in provided[name] if e in needs]
    for name, extras in provided.items():
        needs = distribution(FOLDERS[name])[1]
        for extra in extras:
            for requirement in needs[extra]:
                dependency = requirement_name(requirement)
                assert dependency not in OURS or dependency in provided, (
                    f"{name} needs {dependency}, which is not on PyPI yet: name its folder "
                    "in the same command"
                )
    for name in published:
        if name in OURS:
            said = command.context.lower()
            assert "published" in said or "pypi" in said, (
                f"{name} is not on PyPI yet: say the command is for once it is published"
            )


def test_the_pages_hold_install_commands() -> None:
    found = [c for page in PAGES for c in install_commands(page.read_text("utf-8"))]
    assert len(found) >= 30


def test_commands_are_found_in_blocks_in_code_cut_by_a_line_break_and_in_table_rows() -> None:
    page = (
        "```bash\npip install . ./plugins/kaneda-rq   # a comment\n```\n\n"
        "Then `pip install\nkaneda-django` and keep going.\n\n"
        "| a | b |\n|---|---|\n| one | `pip install kaneda` |\n"
        "| two | `python3 -m pip install . ./plugins/kaneda-web` once published |\n"
    )
    found = install_commands(page)
    assert [(c.line, c.args) for c in found] == [
        (2, ". ./plugins/kaneda-rq"),
        (5, "kaneda-django"),
        (10, "kaneda"),
        (11, ". ./plugins/kaneda-web"),
    ]
    assert "published" not in found[1].context and "published" not in found[2].context


@pytest.mark.parametrize(
    ("args", "context", "problem"),
    [
        ("./plugins/kaneda-influx", "", "needs kaneda-core"),
        (". ./plugins/kaneda-django", "", "needs kaneda-web"),
        ("kaneda-influx", "install it", "not on PyPI yet"),
        (". ./plugins/kaneda-nothing", "", "no distribution"),
        ("-r no-such-file.txt", "", "does not exist"),
    ],
)
def test_the_check_refuses_what_pip_could_not_do(args: str, context: str, problem: str) -> None:
    with pytest.raises(AssertionError, match=problem):
        check(Command(1, args, context))


@pytest.mark.parametrize(
    "args",
    [
        ". ./plugins/kaneda-web ./plugins/kaneda-django ./plugins/kaneda-influx",
        "-r requirements-dev.txt",
        "pytest",
        "kaneda",  # kaneda 1.0 is on PyPI
    ],
)
def test_the_check_accepts_what_pip_can_do(args: str) -> None:
    check(Command(1, args, ""))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_install_commands_work_from_a_clone(page: Path) -> None:
    for command in install_commands(page.read_text("utf-8")):
        try:
            check(command)
        except AssertionError as error:
            where = f"{page.relative_to(ROOT)}:{command.line}: pip install {command.args}"
            raise AssertionError(f"{where}: {error}") from None
