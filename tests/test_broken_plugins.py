"""Third-party plugins that are broken the way installed packages break.

Each case installs a fake distribution (a ``.dist-info`` folder with its entry points, on
``PYTHONPATH``) and runs a fresh interpreter, so nothing leaks into this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def fake_distribution(folder: Path, name: str, entry_points: str, module: str) -> Path:
    """A distribution ``name`` 0.1 with ``entry_points.txt`` and a module of its name."""
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (folder / f"{name}.py").write_text(textwrap.dedent(module))
    return folder


def run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=env
    )


USE_METRICS = """
from kaneda_core import KanedaError, Metrics
try:
    Metrics("memory")
except KanedaError as error:
    print(type(error).__name__, error)
"""


def test_a_hook_plugin_missing_a_dependency_is_named_at_metrics(tmp_path: Path) -> None:
    folder = fake_distribution(
        tmp_path, "brokenhook", "[kaneda]\nbroken = brokenhook\n", "import not_installed_xyz\n"
    )
    done = run(folder, "-c", USE_METRICS)
    assert done.returncode == 0, done.stderr
    said = done.stdout
    assert said.startswith("PluginLoadError "), said
    assert "'broken'" in said and "brokenhook 0.1" in said and "not_installed_xyz" in said
    listing = run(folder, "-m", "kaneda_core", "backends")
    assert listing.returncode == 1 and "Traceback" not in listing.stderr, listing.stderr
    assert "brokenhook" in listing.stderr and "logger" in listing.stdout


def test_a_hook_with_arguments_the_spec_lacks_is_named(tmp_path: Path) -> None:
    module = """
    from kaneda_core.hookspecs import hookimpl

    @hookimpl
    def kaneda_filter_metric(m):
        return True
    """
    folder = fake_distribution(tmp_path, "badsig", "[kaneda]\nbadsig = badsig\n", module)
    said = run(folder, "-c", USE_METRICS).stdout
    assert said.startswith("PluginLoadError "), said
    assert "'badsig'" in said and "kaneda_filter_metric" in said and "\n" not in said.strip()


def test_a_backend_name_claimed_twice_names_both_distributions(tmp_path: Path) -> None:
    module = """
    from kaneda_core.backends import MemoryBackend

    class MyMemory(MemoryBackend):
        pass
    """
    folder = fake_distribution(
        tmp_path, "override", "[kaneda.backends]\nmemory = override:MyMemory\n", module
    )
    said = run(folder, "-c", USE_METRICS).stdout
    assert said.startswith("BackendLoadError "), said
    assert "kaneda-core" in said and "override (override:MyMemory)" in said
    # The other backends are not affected.
    sent = run(folder, "-m", "kaneda_core", "send", f"logger://{tmp_path / 'm.jsonl'}", "gauge",
               "g", "1")  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def test_a_plugin_whose_dependencies_warn_at_import_loads_under_warnings_as_errors(
    tmp_path: Path,
) -> None:
    """influxdb warns at import on Python 3.12 (datetime.utcfromtimestamp): under -W error,
    or pytest's filterwarnings = error, the backend failed to load, with advice to
    reinstall it; and stevedore's open() without an encoding failed every backend under
    -X warn_default_encoding. Shown, not raised."""
    folder = fake_distribution(
        tmp_path,
        "kaneda_warns",
        """
        [kaneda.backends]
        warns = kaneda_warns:WarnsBackend
        """,
        """
        import warnings
        warnings.warn("utcfromtimestamp() is deprecated", DeprecationWarning)
        from kaneda_core.backends import MemoryBackend

        class WarnsBackend(MemoryBackend):
            pass
        """,
    )
    script = """
import warnings
from kaneda_core import Metrics
metrics = Metrics("warns", batching=False)
metrics.increment("loaded")
print(len(metrics.backend.metrics))
metrics.close()
try:
    warnings.warn("the application's own", DeprecationWarning)
except DeprecationWarning:
    print("still an error")
"""
    done = run(folder, "-X", "warn_default_encoding", "-W", "error", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1", "still an error"], done.stdout + done.stderr
    assert "utcfromtimestamp() is deprecated" in done.stderr  # shown once
