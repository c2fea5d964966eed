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
        ("gauge", "1e400", "'1e400'"),
        ("custom:order", '{"a": [1e400]}', "'1e400'"),
    ],
)
def test_send_refuses_values_it_cannot_parse(
    kind: str, value: str, advice: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", kind, "g", value]) == 1
    assert advice in capsys.readouterr().err
    assert not path.exists()


def test_send_refuses_a_tag_given_twice_naming_both_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    argv = ["send", f"logger://{path}", "gauge", "g", "1", "--tag", "k=1", "--tag", "k=2"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--tag k" in err and "twice" in err and "'1' and '2'" in err, err
    assert not path.exists()


@pytest.mark.parametrize("kind", ["custom:q", "gauge"])
def test_send_says_an_integer_too_long_to_read_is_valid_but_too_long(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    digits = "7" * 5000
    assert main(["send", f"logger://{path}", kind, "s", digits]) == 1
    err = capsys.readouterr().err
    assert "digits" in err and "not valid JSON" not in err and "is JSON:" not in err, err
    assert digits not in err and len(err) < 600, err
    assert "5000 characters" in err, err
    assert not path.exists()


def test_send_shortens_a_long_value_it_cannot_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = "{" + "x" * 5000
    assert main(["send", f"logger://{tmp_path / 'm.jsonl'}", "custom:q", "s", raw]) == 1
    err = capsys.readouterr().err
    assert "the value of a custom metric is JSON" in err and raw not in err and len(err) < 600


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


@pytest.mark.parametrize(
    ("kind", "advice"),
    [
        ("increment", "Did you mean 'counter'?"),
        ("decrement", "Did you mean 'counter'?"),
        ("timer", "Did you mean 'timing'?"),
        ("timed", "Did you mean 'timing'?"),
        ("Custom:order", "Did you mean 'custom:order'?"),
        ("CUSTOM:order", "Did you mean 'custom:order'?"),
        ("custom=order", "Did you mean 'custom:order'?"),
    ],
)
def test_send_names_the_kind_behind_an_api_word_or_a_miscased_prefix(
    kind: str, advice: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", kind, "g", "1"]) == 1
    assert advice in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize("kind", ["gauge", "counter", "timing", "event"])
def test_send_refuses_an_id_that_only_custom_metrics_keep(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", kind, "g", "1", "--id", "x-1"]) == 1
    assert "--id is for custom metrics" in capsys.readouterr().err
    assert not path.exists()


def test_command_names_match_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    done = run("Send", f"logger://{path}", "gauge", "g", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(path.read_text())["value"] == 1


@pytest.mark.parametrize("requests", ["-5", "many"])
def test_demo_refuses_a_request_count_that_is_not_a_whole_number_of_at_least_one(
    requests: str, tmp_path: Path
) -> None:
    done = run("demo", "--file", str(tmp_path / "d.jsonl"), "--requests", requests)
    assert done.returncode != 0
    assert "--requests" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.parametrize("target", ["folder", "file-in-a-file", "dev-full"])
def test_demo_fails_at_once_in_one_line_whatever_the_path_cannot_take(
    target: str, tmp_path: Path
) -> None:
    if target == "folder":
        path = tmp_path
    elif target == "file-in-a-file":
        (tmp_path / "plain").write_text("")
        path = tmp_path / "plain" / "x.jsonl"
    else:
        path = Path("/dev/full")
        if not path.exists():
            pytest.skip("no /dev/full here")
    started = time.monotonic()
    done = run("demo", "--file", str(path), "--requests", "300")
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert str(path) in done.stderr and "Traceback" not in done.stderr


def test_demo_into_a_read_only_file_fails_at_once_in_one_line(tmp_path: Path) -> None:
    import os

    path = tmp_path / "ro.jsonl"
    path.write_text("")
    path.chmod(0o444)
    if os.geteuid() == 0:
        # root writes anyway: run the demo as nobody, if that user can run Python here.
        os.chmod(tmp_path, 0o755)
        for parent in tmp_path.parents:
            if parent == Path("/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(
            [*command, sys.executable, "-c", "import kaneda_core.demo"],
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip("cannot run the demo as an unprivileged user here")
    else:
        command = []
    done = subprocess.run(
        [*command, sys.executable, "-m", "kaneda_core", "demo", "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert str(path) in done.stderr and "Permission denied" in done.stderr


def test_a_worker_with_a_misspelt_backend_says_so_in_one_line() -> None:
    done = run("worker", "rq://127.0.0.1:6379/0", "--to", "influxd://localhost:8086/metrics")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Did you mean 'influxdb'?" in done.stderr
