"""Backends loaded by name through the kaneda.backends entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kaneda_core import BackendNotFound, available_backends, load_backend
from kaneda_core.backends import LoggerBackend, MemoryBackend
from kaneda_core.errors import BackendLoadError


def fake_distribution(site: Path, name: str, entry_points: str, module: str = "") -> None:
    """Write an installed-looking distribution (metadata and a module) under ``site``."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module:
        (site / f"{name.replace('-', '_')}.py").write_text(textwrap.dedent(module))


def run_python(code: str, site: Path | None = None) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (``site`` on its path); it prints one JSON object."""
    env_path = [str(site)] if site else []
    prelude = f"import sys; sys.path[:0] = {env_path!r}\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_built_in_backends_load_by_name() -> None:
    assert load_backend("logger") is LoggerBackend
    assert load_backend("memory") is MemoryBackend


def test_an_unknown_name_lists_what_is_installed() -> None:
    with pytest.raises(BackendNotFound) as caught:
        load_backend("nosuchbackend")
    message = str(caught.value)
    assert "'nosuchbackend'" in message and "logger" in message and "memory" in message


@pytest.mark.parametrize(
    ("name", "distribution"),
    [
        ("influxdb", "kaneda-influx"),
        ("mongo", "kaneda-mongo"),
        ("rethinkdb", "kaneda-rethink"),
        ("elasticsearch", "kaneda-elasticsearch"),
    ],
)
def test_a_known_but_missing_backend_says_what_to_install(
    name: str, distribution: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaneda_core import registry

    real = registry._entry_points
    monkeypatch.setattr(
        registry, "_entry_points", lambda: {k: v for k, v in real().items() if k != name}
    )
    monkeypatch.setattr(registry, "_loaded", {})
    # stevedore reads entry points itself; hide the plugin from it too.
    from stevedore import driver

    original = driver.DriverManager._load_plugins

    def without(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return [ext for ext in original(self, *args, **kwargs) if ext.name != name]

    monkeypatch.setattr(driver.DriverManager, "_load_plugins", without)
    with pytest.raises(BackendNotFound, match=f"pip install {distribution}"):
        load_backend(name)


def test_loading_one_backend_imports_no_other_plugin(tmp_path: Path) -> None:
    fake_distribution(
        tmp_path,
        "kaneda-fake-a",
        "[kaneda.backends]\nfake_a = kaneda_fake_a:A\n",
        "from kaneda_core.backends.memory import MemoryBackend\nclass A(MemoryBackend): pass\n",
    )
    fake_distribution(
        tmp_path,
        "kaneda-fake-b",
        "[kaneda.backends]\nfake_b = kaneda_fake_b:B\n",
        "raise RuntimeError('kaneda_fake_b must not be imported')\n",
    )
    result = run_python(
        """
        import json, sys
        import kaneda_core
        before = sorted(m for m in sys.modules if m.startswith(('stevedore', 'pluggy')))
        cls = kaneda_core.load_backend('fake_a')
        print(json.dumps({
            'before': before,
            'class': cls.__name__,
            'b_imported': 'kaneda_fake_b' in sys.modules,
            'plugins': sorted(m for m in sys.modules if m.startswith('kaneda_')
                              and m.partition('.')[0] != 'kaneda_core'),
        }))
        """,
        tmp_path,
    )
    assert result["before"] == []  # importing kaneda_core loads neither stevedore nor pluggy
    assert result["class"] == "A"
    assert result["b_imported"] is False
    assert result["plugins"] == ["kaneda_fake_a"]


def test_a_broken_plugin_names_its_distribution_and_the_others_still_load(tmp_path: Path) -> None:
    fake_distribution(
        tmp_path,
        "kaneda-broken",
        "[kaneda.backends]\nbroken = kaneda_broken:Broken\n",
        "import a_module_that_does_not_exist\n",
    )
    result = run_python(
        """
        import json
        from kaneda_core import load_backend, available_backends
        from kaneda_core.errors import BackendLoadError
        try:
            load_backend('broken')
        except BackendLoadError as error:
            message = str(error)
        infos = {i.name: (i.loads, i.distribution, i.error) for i in available_backends()}
        print(json.dumps({'message': message, 'memory': load_backend('memory').__name__,
                          'infos': infos}))
        """,
        tmp_path,
    )
    message = str(result["message"])
    assert "kaneda-broken" in message and "a_module_that_does_not_exist" in message
    assert "ModuleNotFoundError" in message
    assert result["memory"] == "MemoryBackend"
    infos = result["infos"]
    assert infos["broken"][0] is False and infos["broken"][1] == "kaneda-broken"  # type: ignore[index]
    assert infos["memory"][0] is True  # type: ignore[index]


def test_an_entry_point_that_is_not_a_backend_is_refused(tmp_path: Path) -> None:
    fake_distribution(
        tmp_path,
        "kaneda-notabackend",
        "[kaneda.backends]\nodd = kaneda_notabackend:Odd\n",
        "class Odd: pass\n",
    )
    result = run_python(
        """
        import json
        from kaneda_core import load_backend
        try:
            load_backend('odd')
            print(json.dumps({'error': None}))
        except Exception as error:
            print(json.dumps({'error': type(error).__name__ + ': ' + str(error)}))
        """,
        tmp_path,
    )
    assert str(result["error"]).startswith(
        "BackendLoadError"
    ) and "not a kaneda_core.Backend" in str(result["error"])


def test_available_backends_describes_each_installed_backend() -> None:
    infos = {info.name: info for info in available_backends()}
    memory = infos["memory"]
    assert memory.class_path == "kaneda_core.backends.memory:MemoryBackend"
    assert memory.distribution == "kaneda-core" and memory.version and memory.loads
    assert memory.error is None


def test_aliases_are_the_other_names_of_the_same_class() -> None:
    infos = {info.name: info for info in available_backends()}
    for info in infos.values():
        for alias in info.aliases:
            assert infos[alias].class_path == info.class_path


def test_load_error_is_an_import_error() -> None:
    assert issubclass(BackendLoadError, ImportError)
