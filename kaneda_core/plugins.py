"""The plugin manager that finds hook implementations on the ``kaneda`` entry points."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import PluginLoadError
from .forking import reinit_after_fork

if TYPE_CHECKING:
    import pluggy

GROUP = "kaneda"
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
                import pluggy

                from . import hookspecs

                manager = _counting_manager(pluggy.PluginManager)(hookspecs.PROJECT)
                manager.add_hookspecs(hookspecs)
                _load_entry_points(manager)
                _manager = manager
    return _manager


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


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    """Register each hook plugin of the entry-point group, one at a time.

    A plugin that fails to import (a missing dependency) or to register (a hook with
    arguments the spec does not have) raises PluginLoadError naming it and its
    distribution, not the bare error of whichever plugin came first: a broken filter
    plugin is not skipped, since metrics it should drop would be stored.
    """
    from importlib.metadata import distributions

    for dist in list(distributions()):
        for entry_point in dist.entry_points:
            if entry_point.group != GROUP or manager.get_plugin(entry_point.name):
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
