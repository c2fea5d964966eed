"""The plugin manager that finds hook implementations on the ``kaneda`` entry points."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .forking import reinit_after_fork

if TYPE_CHECKING:
    import pluggy

GROUP = "kaneda"
_manager: pluggy.PluginManager | None = None
_lock = threading.Lock()


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

                manager = pluggy.PluginManager(hookspecs.PROJECT)
                manager.add_hookspecs(hookspecs)
                manager.load_setuptools_entrypoints(GROUP)
                _manager = manager
    return _manager


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
