"""A process out of file descriptors when Kaneda looks up its plugins (EMFILE).

Python's importlib.metadata reads a folder it cannot open as an empty one and keeps
that: a scan made then found no plugin for the rest of the process. Each test runs in a
child process whose descriptor limit is low, with its own folder of slot lock files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: A hook plugin installed in a folder of its own: it drops "debug." metrics.
FILTER = """
from kaneda_core.hookspecs import hookimpl

@hookimpl
def kaneda_filter_metric(metric):
    return False if metric.name.startswith("debug.") else None

@hookimpl
def kaneda_default_tags(backend):
    return {"service": "shop"}
"""

#: Run first in each child: the plugin's folder on the path, slot files in ``tmp``, a
#: low descriptor limit, and ``exhaust()`` / ``free()`` to use up every descriptor.
PRELUDE = """
import json, os, resource, sys
sys.path.insert(0, {site!r})
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from kaneda_core import stamps
stamps.SHARED_MEMORY = {tmp!r}
held = []

def exhaust():
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass

def free():
    while held:
        os.close(held.pop())

def stored(metrics=None):
    from kaneda_core import Metrics
    from kaneda_core.backends.memory import MemoryBackend
    metrics = metrics or Metrics(MemoryBackend(), batching=False)
    metrics.increment("debug.noise")
    metrics.increment("app.requests")
    return [[m.name, m.tags] for m in metrics.backend.metrics]
"""


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    info = site / "kaneda_fd_filter-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kaneda-fd-filter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kaneda]\nfdfilter = kaneda_fd_filter\n")
    (site / "kaneda_fd_filter.py").write_text(FILTER)
    return site


def _run(tmp_path: Path, code: str) -> dict[str, object]:
    prelude = PRELUDE.format(site=str(_site(tmp_path)), tmp=str(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANEDA_")}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,  # not a source tree, whose egg-info Python reads at every scan
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_hook_plugins_looked_up_without_descriptors_raise_and_load_once_freed(
    tmp_path: Path,
) -> None:
    # The application implements a hook itself: pluggy and importlib.metadata are loaded.
    out = _run(
        tmp_path,
        """
        import importlib.metadata
        from kaneda_core import ConfigurationError, Metrics
        from kaneda_core.backends.memory import MemoryBackend
        from kaneda_core.hookspecs import hookimpl
        import kaneda_core.metrics
        exhaust()
        try:
            Metrics(MemoryBackend(), batching=False)
            error = None
        except ConfigurationError as caught:
            error = str(caught)
        free()
        print(json.dumps({"error": error, "stored": stored()}))
        """,
    )
    assert out["error"] is not None
    assert "cannot look up the installed Kaneda hook plugins" in out["error"]  # type: ignore[operator]
    assert "too many open files" in out["error"]  # type: ignore[operator]
    assert out["stored"] == [["app.requests", {"service": "shop"}]]


def test_a_scan_the_application_made_without_descriptors_is_not_kept(tmp_path: Path) -> None:
    # importlib.metadata kept the empty scan: Kaneda's own would have found no plugin.
    out = _run(
        tmp_path,
        """
        import importlib.metadata
        from kaneda_core import Metrics
        from kaneda_core.backends.memory import MemoryBackend
        exhaust()
        seen = len(list(importlib.metadata.distributions()))
        free()
        print(json.dumps({"seen": seen, "stored": stored()}))
        """,
    )
    assert out["seen"] == 0  # (what Python does: the reason for the test)
    assert out["stored"] == [["app.requests", {"service": "shop"}]]


def test_a_slot_taken_without_descriptors_is_warned_of_not_raised(tmp_path: Path) -> None:
    # fcntl is imported with the first slot: an ImportError escaped _take_slot.
    out = _run(
        tmp_path,
        """
        import logging
        logging.basicConfig(stream=sys.stdout, format="LOG %(message)s")
        exhaust()
        slot = stamps.process_slot()
        free()
        print(json.dumps({"slot": slot}))
        """,
    )
    assert 0 <= out["slot"] < 100  # type: ignore[operator]


def test_a_backend_looked_up_without_descriptors_raises_and_loads_once_freed(
    tmp_path: Path,
) -> None:
    # An application that already uses entry points (pytest, any plugin host).
    out = _run(
        tmp_path,
        """
        import importlib.metadata, pluggy, stevedore.driver
        from kaneda_core import ConfigurationError, connect, load_backend
        exhaust()
        try:
            load_backend("memory")
            error = None
        except ConfigurationError as caught:
            error = str(caught)
        free()
        print(json.dumps({"error": error, "stored": stored(connect("memory://", batching=False))}))
        """,
    )
    assert "cannot look up the installed Kaneda backends" in out["error"]  # type: ignore[operator]
    assert "too many open files" in out["error"]  # type: ignore[operator]
    assert out["stored"] == [["app.requests", {"service": "shop"}]]


def test_a_backend_scan_the_application_made_without_descriptors_is_not_kept(
    tmp_path: Path,
) -> None:
    out = _run(
        tmp_path,
        """
        from stevedore import ExtensionManager
        from kaneda_core import load_backend
        exhaust()
        seen = len(ExtensionManager("kaneda.backends").names())
        free()
        print(json.dumps({"seen": seen, "loaded": load_backend("memory").__name__}))
        """,
    )
    assert out == {"seen": 0, "loaded": "MemoryBackend"}


def test_metrics_made_without_descriptors_before_its_modules_are_imported(
    tmp_path: Path,
) -> None:
    # connect() and Metrics() import what they use on first use: an OSError came out.
    out = _run(
        tmp_path,
        """
        from kaneda_core import ConfigurationError, connect
        exhaust()
        try:
            connect("memory://", batching=False)
            error = None
        except ConfigurationError as caught:
            error = str(caught)
        free()
        print(json.dumps({"error": error, "stored": stored(connect("memory://", batching=False))}))
        """,
    )
    assert "cannot make a Metrics: too many open files" in out["error"]  # type: ignore[operator]
    assert out["stored"] == [["app.requests", {"service": "shop"}]]
