"""kaneda 1.0's queues: ``CeleryQueue``, ``RQQueue`` and ``ZMQQueue``.

Each comes from its plugin (``pip install kaneda-celery``, ``kaneda-rq``, ``kaneda-zmq``),
imported when first used, and writes kaneda 1.0's messages: one per metric, for the
task ``kaneda.tasks.celery.report``, the job ``kaneda.tasks.rq.report`` or the
``zmqworker`` command, whether those run kaneda 1.0 or this version. For one message
per batch, name the queue by URL instead: ``kaneda_core.connect("rq://...")``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import BaseQueue

#: 1.0 class name -> (module that provides it, registered queue name for install advice).
PLUGIN_CLASSES = {
    "CeleryQueue": ("kaneda_celery.legacy", "celery"),
    "RQQueue": ("kaneda_rq.legacy", "rq"),
    "ZMQQueue": ("kaneda_zmq.legacy", "zmq"),
}

__all__ = ["BaseQueue", *PLUGIN_CLASSES]


def plugin_module(module_name: str, queue: str, what: str) -> Any:
    """Import ``module_name`` of a queue plugin; ImportError with install advice if missing."""
    from kaneda_core.registry import install_advice

    try:
        return import_module(module_name)
    except ModuleNotFoundError as error:
        package = module_name.partition(".")[0]
        if error.name != package and not (error.name or "").startswith(package + "."):
            raise
        raise ImportError(
            f"{what} is provided by a plugin that is not installed." + install_advice(queue),
            name=what,
        ) from None


def worker_backend() -> Any:
    """The backend kaneda 1.0's workers store into: ``KANEDA_URL``'s, else the settings module's.

    The settings module's ``BACKEND`` (with its ``<NAMESPACE>_*`` parameters) is what
    kaneda 1.0's workers used; ``KANEDA_URL``, when set, names one by URL instead.
    """
    import os

    from kaneda_core.config import URL_VARIABLE, create_backend

    url = os.environ.get(URL_VARIABLE)
    if url:
        return create_backend(url)
    from kaneda.utils import get_backend

    return get_backend()


def plugin_class(class_name: str) -> Any:
    """The plugin class kaneda 1.0 called ``class_name``; ImportError with advice if missing."""
    module_name, queue = PLUGIN_CLASSES[class_name]
    module = plugin_module(module_name, queue, f"kaneda.queues.{class_name}")
    return getattr(module, class_name)


def __getattr__(attribute: str) -> Any:
    if attribute in PLUGIN_CLASSES:
        return plugin_class(attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
