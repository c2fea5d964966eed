"""The plugin manager that finds hook implementations on the ``kaneda`` entry points."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import descriptors
from .errors import PluginLoadError
from .forking import reinit_after_fork

if TYPE_CHECKING:
    import pluggy

GROUP = "kaneda"
#: The group of Kaneda's built-in backends: a scan that finds none of them failed.
_BACKENDS = "kaneda.backends"
_LOOK_UP = "look up the installed Kaneda hook plugins"
_manager: pluggy.PluginManager | None = None
_lock = threading.Lock()
#: Counts registrations and removals, so that what was looked up once (whether any
#: plugin filters) is looked up again after a plugin is registered at run time.
changes = 0


@reinit_after_fork
def _new_lock_in_child() -> None:
    # A thread of the parent may have been building the manager at the fork.
    global _lock
    _lock = threading.Lock()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built (and entry points scanned) on first use."""
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                _manager = _build_manager()
    return _manager


def _build_manager() -> pluggy.PluginManager:
    """A manager with every plugin of the entry-point group registered.

    Raises ConfigurationError, and keeps nothing, when the process has no file
    descriptor to scan with: a scan then finds no plugin, and a filter plugin's metrics
    would be stored, a default-tags plugin's tags left off (see descriptors).
    """
    with descriptors.importing(_LOOK_UP):
        import pluggy

        from . import hookspecs
    descriptors.check(_LOOK_UP)  # before a scan that Python would keep, empty
    # A scan the application made without descriptors was kept empty: not read again
    # (what is forgotten costs a listing of each folder on sys.path).
    descriptors.forget_scans()
    for attempt in range(2):
        manager = _counting_manager(pluggy.PluginManager)(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        if _load_entry_points(manager) or attempt:
            break
        # Kaneda's own distribution was not seen: descriptors ran out during the scan,
        # or an earlier scan (the application's) was kept empty. Scanned again afresh,
        # once: from a source tree that is not installed, none is there to be seen.
        descriptors.forget_scans()
        descriptors.check(_LOOK_UP)
    return manager


def _counting_manager(base: type[pluggy.PluginManager]) -> type[pluggy.PluginManager]:
    """``base`` that counts its registrations and removals in :data:`changes`."""

    class CountingPluginManager(base):  # type: ignore[valid-type, misc]
        def register(self, plugin: object, name: str | None = None) -> str | None:
            global changes
            registered = super().register(plugin, name)
            changes += 1
            return registered  # type: ignore[no-any-return]

        def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
            global changes
            removed = super().unregister(plugin, name)
            changes += 1
            return removed

    return CountingPluginManager


def _load_entry_points(manager: pluggy.PluginManager) -> bool:
    """Register each hook plugin of the entry-point group, one at a time; whether the
    scan saw Kaneda's own distribution (by its built-in backends).

    A plugin that fails to import (a missing dependency) or to register (a hook with
    arguments the spec does not have) raises PluginLoadError naming it and its
    distribution, not the bare error of whichever plugin came first: a broken filter
    plugin is not skipped, since metrics it should drop would be stored.
    """
    with descriptors.importing(_LOOK_UP):
        from importlib.metadata import distributions

    saw_kaneda = False
    for dist in list(distributions()):
        for entry_point in dist.entry_points:
            if entry_point.group != GROUP or manager.get_plugin(entry_point.name):
                if entry_point.group == _BACKENDS and entry_point.value.startswith("kaneda_core."):
                    saw_kaneda = True
                continue
            try:
                manager.load_setuptools_entrypoints(GROUP, name=entry_point.name)
            except Exception as error:
                distribution = f"{dist.metadata['Name']} {dist.version}"
                reason = " ".join(str(error).split())  # pluggy's are several lines long
                raise PluginLoadError(
                    f"the Kaneda hook plugin {entry_point.name!r} ({entry_point.value}, from "
                    f"{distribution}) failed to load: {type(error).__name__}: {reason}. "
                    f"Install what it needs, upgrade it (pip install --upgrade "
                    f"{dist.metadata['Name']}) or uninstall it."
                ) from error
    return saw_kaneda


def implements(hook_name: str) -> bool:
    """Whether any registered plugin implements the hook ``hook_name``."""
    return bool(getattr(get_plugin_manager().hook, hook_name).get_hookimpls())


def implementations(hook_name: str) -> list[tuple[str, Callable[..., Any], tuple[str, ...]]]:
    """Each registered implementation of ``hook_name``: (plugin name, function, its arguments).

    For callers that call each one on its own, so that one which raises neither stops
    the others nor loses what they do. Wrappers are left out: none of Kaneda's hooks
    needs one.
    """
    caller = getattr(get_plugin_manager().hook, hook_name)
    return [
        (impl.plugin_name, impl.function, tuple(impl.argnames))
        for impl in caller.get_hookimpls()
        if not (impl.hookwrapper or impl.wrapper)
    ]
