"""The kaneda command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kaneda_core.cli import main


def test_backends_lists_installed_backends(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "NAME" in out and "memory" in out and "kaneda_core.backends.logger:LoggerBackend" in out
    assert "kaneda-core" in out


def test_send_stores_the_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.jsonl"
    status = main(
        [
            "send",
            f"logger://{path}",
            "gauge",
            "queue.depth",
            "12.5",
            "--tag",
            "worker=w1",
            "--tag",
            "zone=a",
        ]
    )
    assert status == 0
    record = json.loads(path.read_text())
    assert record["name"] == "queue.depth" and record["value"] == 12.5
    assert record["tags"] == {"worker": "w1", "zone": "a"} and record["metric"] == "gauge"
    assert "sent gauge queue.depth" in capsys.readouterr().out


def test_send_custom_parses_json(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", "custom:query_time", "search", '{"start": 1}']) == 0
    assert json.loads(path.read_text())["value"] == {"start": 1}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["send", "nosuch://", "gauge", "x", "1"], "No Kaneda backend named 'nosuch'"),
        (["send", "memory://", "gauge", "x", "lots"], "must be a number"),
        (["send", "memory://", "gauge", "x", "1", "--tag", "novalue"], "KEY=VALUE"),
        (["send", "memory://", "gauge", "", "1"], "name must be a non-empty string"),
    ],
)
def test_send_fails_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_send_to_a_server_that_is_down_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "logger:///nonexistent-dir/sub/m.jsonl", "gauge", "x", "1"]) == 1
    err = capsys.readouterr().err
    assert "failed" in err and "/nonexistent-dir/sub/m.jsonl" in err


def test_demo_writes_json_lines_and_summarizes(tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "kaneda_core", "demo", "--file", str(path), "--requests", "300"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = path.read_text().splitlines()
    kinds = {json.loads(line)["metric"] for line in lines}
    assert {"counter", "timing", "gauge", "event", "order"} <= kinds
    assert str(path) in done.stdout and f"{len(lines)} lines" in done.stdout
    assert "(0 failed)" in done.stdout


def test_send_stores_what_the_application_would_default_tags_and_filters_included(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], plugin: object
) -> None:
    # A metric sent by hand is the metric a Metrics call would store: the hook plugins'
    # default tags (the call's own win), and their filters, which may refuse to send it.
    from kaneda_core.hookspecs import hookimpl

    class Shop:
        @hookimpl
        def kaneda_default_tags(self) -> dict[str, str]:
            return {"service": "shop", "zone": "eu"}

        @hookimpl
        def kaneda_filter_metric(self, metric: object) -> bool:
            return not metric.name.startswith("debug.")  # type: ignore[attr-defined]

    plugin.register(Shop())  # type: ignore[attr-defined]
    path = tmp_path / "m.jsonl"
    assert main(["send", f"logger://{path}", "gauge", "q", "1", "--tag", "zone=us"]) == 0
    assert json.loads(path.read_text())["tags"] == {"service": "shop", "zone": "us"}
    assert main(["send", f"logger://{path}", "gauge", "debug.q", "1"]) == 1
    assert len(path.read_text().splitlines()) == 1
    err = capsys.readouterr().err
    assert "not sent" in err and "kaneda_filter_metric" in err
