"""A pytest plugin for running kaneda 1.0's suite while ``kaneda.queues`` is not installed.

kaneda 1.0's ``tests/unit/test_utils.py``, ``tests/integration/conftest.py`` and
``tests/integration/django/test_django.py`` import ``kaneda.queues`` when they load,
so without it not one of their tests runs, queue or not. When (and only when)
``kaneda.queues`` cannot be imported, this plugin puts a placeholder module in its place
so that those modules load, and deselects every test that uses a queue: they are not
run, and the runner reports them as not run. The placeholder's classes refuse to be
built, so nothing can pass by using them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any

#: Tests that use kaneda.queues, by node id prefix (relative to the suite's root).
QUEUE_TESTS = (
    "tests/unit/test_utils.py::TestUtils::test_import_queue_class",
    "tests/unit/test_utils.py::TestUtils::test_get_queue_from_settings",
    "tests/unit/test_utils.py::TestUtils::test_get_kaneda_objects[rq-False-True]",
    "tests/integration/test_queues.py::",
    "tests/integration/benchmarks/test_queues.py::",
    "tests/integration/django/test_django.py::TestDjango::test_django_kaneda_with_queue",
)

PLACEHOLDER_IN_USE = False


def _queues_installed() -> bool:
    try:
        return importlib.util.find_spec("kaneda.queues") is not None
    except ImportError:
        return False


class _NotInstalled:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ModuleNotFoundError(
            "kaneda.queues is not installed: this is the kaneda 1.0 suite runner's placeholder"
        )


def _install_placeholder() -> None:
    global PLACEHOLDER_IN_USE
    module = types.ModuleType("kaneda.queues", "placeholder: kaneda.queues is not installed")
    for name in ("CeleryQueue", "RQQueue", "ZMQQueue"):
        setattr(module, name, type(name, (_NotInstalled,), {}))
    sys.modules["kaneda.queues"] = module
    PLACEHOLDER_IN_USE = True


if not _queues_installed():
    _install_placeholder()


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if not PLACEHOLDER_IN_USE:
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.nodeid.startswith(QUEUE_TESTS) else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
        report = os.environ.get("KANEDA1_SUITE_DESELECTED")
        if report:
            with open(report, "w") as out:
                out.write("\n".join(item.nodeid for item in deselected))
