"""Backend names -> backend classes, through the ``kaneda.backends`` entry-point group.

Listing reads entry-point metadata only; loading goes through stevedore and imports
just the plugin asked for, so an application pays only for the backend it uses.
"""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

from . import descriptors
from .errors import BackendLoadError, BackendNotFound
from .forking import reinit_after_fork

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from .backend import Backend

GROUP = "kaneda.backends"
_LOOK_UP = "look up the installed Kaneda backends"

#: Where the backends this project publishes live, for install advice.
KNOWN_DISTRIBUTIONS = {
    "elasticsearch": "kaneda-elasticsearch",
    "mongo": "kaneda-mongo",
    "mongodb": "kaneda-mongo",
    "rethink": "kaneda-rethink",
    "rethinkdb": "kaneda-rethink",
    "influx": "kaneda-influx",
    "influxdb": "kaneda-influx",
    "rq": "kaneda-rq",
    "celery": "kaneda-celery",
    "zmq": "kaneda-zmq",
}

_loaded: dict[str, type[Backend]] = {}
_lock = threading.Lock()


@reinit_after_fork
def _new_lock_in_child() -> None:
    # A thread of the parent may have been loading a plugin at the fork.
    global _lock
    _lock = threading.Lock()


class BackendInfo(NamedTuple):
    """What :func:`available_backends` knows of one installed backend."""

    name: str
    aliases: tuple[str, ...]
    class_path: str
    distribution: str | None
    version: str | None
    loads: bool
    error: str | None = None


def _entry_points() -> dict[str, EntryPoint]:
    # Imported here: scanning metadata costs ~10 ms, paid when a backend is looked up.
    with descriptors.importing(_LOOK_UP):
        from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def installed_names() -> list[str]:
    """The names of every installed backend, sorted."""
    return sorted(_entry_points())


def installed_class_paths() -> list[str]:
    """Every installed backend's class as a dotted path (``kaneda_influx.backend.X``)."""
    return sorted({ep.value.replace(":", ".") for ep in _entry_points().values()})


def install_advice(name: str) -> str:
    """How to get the backend called ``name``, as a sentence (empty if unknown)."""
    distribution = KNOWN_DISTRIBUTIONS.get(name)
    if not distribution:
        return ""
    # Until the plugins are on PyPI, a clone of the repository installs them with the core.
    return (
        f" Install it with: pip install . ./plugins/{distribution} at the root of a clone of "
        f"the Kaneda repository (pip install {distribution} once it is published on PyPI)"
    )


def load_backend(name: str) -> type[Backend]:
    """The backend class installed under ``name``; imports that plugin and no other.

    Raises :class:`BackendNotFound` (listing what is installed and what to install)
    or :class:`BackendLoadError` (naming the distribution and the import error).
    """
    cls = _loaded.get(name)
    if cls is not None:
        return cls
    with _lock:
        if name not in _loaded:
            # Not scanned without a descriptor: Python would keep the scan, empty.
            descriptors.check(_LOOK_UP)
            _loaded[name] = _load(_registered_spelling(name))
    return _loaded[name]


def _registered_spelling(name: str) -> str:
    """``name`` as installed, matched without regard to case (``InfluxDB`` -> ``influxdb``)."""
    if not isinstance(name, str):
        return name
    points = _entry_points()
    if name in points:
        return name
    by_case = {installed.lower(): installed for installed in points}
    return by_case.get(name.lower(), name)


def _suggestion(name: str) -> str:
    """ " Did you mean 'influxdb'?", from the installed and the known names (or "")."""
    from difflib import get_close_matches

    if not isinstance(name, str):
        return ""
    candidates = sorted(set(installed_names()) | set(KNOWN_DISTRIBUTIONS))
    close = get_close_matches(name.lower(), candidates, n=1, cutoff=0.6)
    if not close or close[0] == name.lower():
        return ""
    advice = "" if close[0] in installed_names() else install_advice(close[0])
    return f" Did you mean {close[0]!r}?{advice}"


def _load(name: str, *, fresh: bool = False) -> type[Backend]:
    with descriptors.importing(_LOOK_UP):
        from stevedore import driver
        from stevedore.exception import MultipleMatches, NoMatches

    failures: list[tuple[EntryPoint, BaseException]] = []

    def on_failure(_manager: object, entry_point: EntryPoint, error: BaseException) -> None:
        failures.append((entry_point, error))

    try:
        with warnings.catch_warnings():
            # What the plugin's dependencies warn of as they are imported (influxdb's
            # datetime.utcfromtimestamp on Python 3.12, stevedore's open() without an
            # encoding) is shown, not raised: under -W error, or pytest's
            # filterwarnings = error, it failed the backend's import, with advice to
            # reinstall it that could not help.
            warnings.simplefilter("default")
            manager: driver.DriverManager[Any] = driver.DriverManager(
                GROUP,
                name,
                invoke_on_load=False,
                on_load_failure_callback=on_failure,
            )
    except MultipleMatches:
        raise _claimed_twice(name) from None
    except NoMatches:
        # Descriptors ran out during the scan, or the import: said so, nothing kept.
        descriptors.check(_LOOK_UP, failures[0][1] if failures else None)
        if failures:
            entry_point, error = failures[0]
            raise _load_error(name, entry_point, error) from error
        if not fresh:
            # Installed after stevedore cached this process's entry points, or a scan
            # made without descriptors was kept empty (see descriptors): looked up afresh.
            _forget_scans()
            return _load(name, fresh=True)
        installed = ", ".join(installed_names()) or "none"
        raise BackendNotFound(
            f"No Kaneda backend named {name!r} is installed (installed: {installed})."
            + (install_advice(name.lower()) or _suggestion(name))
        ) from None
    cls: type[Backend] = _check_is_backend(name, manager.driver)
    return cls


def _claimed_twice(name: str) -> BackendLoadError:
    from importlib.metadata import entry_points

    claims = sorted(
        {
            f"{_distribution_of(ep) or 'an unnamed distribution'} ({ep.value})"
            for ep in entry_points(group=GROUP)
            if ep.name == name
        }
    )
    return BackendLoadError(
        f"Kaneda backend {name!r} is registered by more than one installed distribution: "
        f"{'; '.join(claims)}. Uninstall the one you do not mean to use."
    )


def _forget_scans() -> None:
    from stevedore import _cache, extension

    descriptors.forget_scans()

    extension.ExtensionManager.ENTRY_POINT_CACHE.pop(GROUP, None)
    internal = getattr(getattr(_cache, "_c", None), "_internal", None)
    if isinstance(internal, dict):
        internal.clear()


def _load_error(name: str, entry_point: EntryPoint, error: BaseException) -> BackendLoadError:
    # stevedore's cached entry points lack .dist; importlib.metadata's have it.
    distribution = _distribution_of(
        _entry_points().get(name, entry_point)
    ) or KNOWN_DISTRIBUTIONS.get(name, "its plugin")
    upgrade = f"pip install --upgrade {distribution}"
    if distribution in KNOWN_DISTRIBUTIONS.values():
        upgrade = (
            f"pip install --upgrade . ./plugins/{distribution} at the root of a clone of the "
            f"Kaneda repository ({upgrade} once it is published on PyPI)"
        )
    return BackendLoadError(
        f"The Kaneda backend {name!r} ({entry_point.value}) from {distribution} failed to "
        f"import: {type(error).__name__}: {error}. Reinstall or upgrade it: {upgrade}"
    )


def _check_is_backend(name: str, cls: object) -> type[Backend]:
    from .backend import Backend

    if isinstance(cls, type) and issubclass(cls, Backend):
        return cls
    raise BackendLoadError(
        f"The entry point {name!r} in group {GROUP!r} names {cls!r}, "
        "which is not a kaneda_core.Backend subclass"
    )


def _distribution_of(entry_point: EntryPoint) -> str | None:
    dist = getattr(entry_point, "dist", None)
    return dist.name if dist is not None else None


def available_backends() -> list[BackendInfo]:
    """Every installed backend: its aliases, class path, distribution, version, whether it loads.

    Loading is attempted for each, so this imports every plugin; use it to inspect an
    installation (``kaneda backends``), not on a hot path.
    """
    points = _entry_points()
    infos = []
    for name, entry_point in sorted(points.items()):
        aliases = tuple(
            other
            for other, ep in sorted(points.items())
            if other != name and ep.value == entry_point.value
        )
        dist = getattr(entry_point, "dist", None)
        error = None
        try:
            load_backend(name)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            error = str(exc)
        infos.append(
            BackendInfo(
                name=name,
                aliases=aliases,
                class_path=entry_point.value,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
                loads=error is None,
                error=error,
            )
        )
    return infos
