"""A third party's plugin (examples/kaneda-example-plugin), installed and used like any other."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kaneda_core import Metrics, connect, load_backend

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kaneda-example-plugin"


@pytest.fixture(scope="module", autouse=True)
def installed_example(install_distribution: Any) -> None:
    """Install the example distribution into this environment unless it already is."""
    install_distribution("kaneda-example-plugin", EXAMPLE, editable=True)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_used_by_name(tmp_path: Path) -> None:
    path = tmp_path / "by-name.csv"
    backend = load_backend("csv")(path=str(path))
    with Metrics(backend) as metrics:
        metrics.gauge("queue.depth", 12, tags={"worker": "w1"})
    [row] = rows(path)
    assert row["name"] == "queue.depth" and json.loads(row["value"]) == 12
    assert json.loads(row["tags"]) == {"worker": "w1"}


def test_used_by_url(tmp_path: Path) -> None:
    path = tmp_path / "by-url.csv"
    with connect(f"csv://{path}?write_header=false", batching=False) as metrics:
        metrics.event("deploy", "v2 rolled out")
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and "deploy" in lines[0] and "v2 rolled out" in lines[0]


def test_its_hooks_add_tags_filter_and_keep_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANEDA_EXAMPLE_TAGS", "service=shop,region=eu")
    monkeypatch.setenv("KANEDA_EXAMPLE_DROP", "debug.")
    dead_letter = tmp_path / "dead.jsonl"
    monkeypatch.setenv("KANEDA_EXAMPLE_DEAD_LETTER", str(dead_letter))
    path = tmp_path / "hooks.csv"
    with connect(f"csv://{path}") as metrics:
        metrics.increment("requests", tags={"route": "/"})
        metrics.increment("debug.cache_probe")
    [row] = rows(path)
    assert json.loads(row["tags"]) == {"service": "shop", "region": "eu", "route": "/"}
    assert metrics.stats().filtered == 1

    unwritable = connect(f"csv://{tmp_path}/missing-dir/x.csv", batching=False)
    unwritable.gauge("lost", 3)
    [record] = [json.loads(line) for line in dead_letter.read_text().splitlines()]
    assert record["name"] == "lost" and record["value"] == 3
    assert "No such file" in record["error"] and record["backend"] == "CsvBackend"


def test_listed_by_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kaneda_core", "backends"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "kaneda_example.backend:CsvBackend" in done.stdout
    assert "kaneda-example-plugin" in done.stdout
    line = next(x for x in done.stdout.splitlines() if x.startswith("example"))
    assert "kaneda_batch_failed" in line and "kaneda_default_tags" in line
