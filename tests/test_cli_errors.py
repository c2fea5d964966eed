"""The kaneda command refuses mistakes with the valid forms and a non-zero exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaneda_core.cli import main


@pytest.mark.parametrize(
    ("kind", "advice"),
    [
        ("Gauge", "Did you mean 'gauge'?"),
        ("COUNTER", "Did you mean 'counter'?"),
        ("guage", "Did you mean 'gauge'?"),
        ("query_time", "For a custom metric, write custom:query_time"),
        ("custom:", "custom:METRIC"),
    ],
)
def test_send_refuses_unknown_and_miscased_kinds(
    kind: str, advice: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", kind, "g", "1"]) == 1
    err = capsys.readouterr().err
    assert advice in err
    assert "gauge, counter, timing, event, or custom:METRIC" in err
    assert not path.exists(), "nothing may be stored"


@pytest.mark.parametrize(
    ("kind", "value", "advice"),
    [
        ("custom:order", "{bad json", "the value of a custom metric is JSON"),
        ("custom:order", "hello", "a string in quotes"),
        ("gauge", "{bad json", "must be a number"),
        ("timing", "fast", "must be a number"),
        ("gauge", "nan", "value"),
    ],
)
def test_send_refuses_values_it_cannot_parse(
    kind: str, value: str, advice: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", kind, "g", value]) == 1
    assert advice in capsys.readouterr().err
    assert not path.exists()


def test_send_custom_kinds_store_the_metric_name_and_json(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", "custom:order", "shop", '"ok"', "--id", "o-1"]) == 0
    record = json.loads(path.read_text())
    assert (record["metric"], record["value"], record["id"]) == ("order", "ok", "o-1")


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kaneda_core", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_is_plain_text_with_a_description_for_every_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    assert "``" not in done.stdout and ":func:" not in done.stdout
    assert "examples:" in done.stdout
    # Every subcommand the help lists, so commands added later are held to this too.
    commands = re.findall(r"^    (\w+)  +\S", done.stdout, re.MULTILINE)
    assert {"backends", "send", "demo"} <= set(commands)
    for command in commands:
        sub = run(command, "--help")
        assert sub.returncode == 0
        description = sub.stdout.split("\n\n")[1]
        assert len(description.split()) >= 8, f"{command} --help has no description"
        assert "``" not in sub.stdout


def test_demo_into_a_missing_folder_fails_at_once_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "dir" / "x.jsonl"
    started = time.monotonic()
    done = run("demo", "--file", str(target))
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert str(target) in done.stderr and "No such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


def test_output_piped_into_a_reader_that_stops_early_ends_quietly() -> None:
    done = subprocess.run(
        f"{sys.executable} -m kaneda_core backends | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("NAME")
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr
