"""The plugin manager that finds hook implementations on the ``kaneda`` entry points."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

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
