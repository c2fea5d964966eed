"""kaneda 1.0's ``django_kaneda.settings``: each name reads ``KANEDA_<NAME>`` from Django.

``from django_kaneda import settings; settings.INFLUX_DATABASE`` is
``settings.KANEDA_INFLUX_DATABASE`` when set, else the default below. Read at access,
not at import, so ``override_settings`` and late configuration are seen.

Where kaneda 1.0's code and its documentation disagreed, the defaults are what a 1.0
setup that worked relied on, which is what 1.0's code did when the setting was unset:

- ``DEBUG`` is False (the code's default; the docs said True). A 1.0 project that did
  not set ``KANEDA_DEBUG`` stored its metrics in its backend, not in a log.
- ``INFLUX_TIMEOUT`` and ``RETHINK_TIMEOUT`` are 300 seconds, what 1.0's Django code
  passed (the docs and the classes said 0.3). A server that takes longer than 0.3 s to
  answer (a remote one, or one busy compacting) stored every metric for a 1.0 project;
  0.3 would drop them. Set 0.3 (or use ``KANEDA_URL``, which writes from a background
  worker) so that no request waits on a server that hangs.
- ``RQ_REDIS_URL`` is None: the local Redis, as ``RQQueue`` defaults. 1.0's code passed
  ``'kaneda'``, which the redis-py of its day read as a URL with no host, that is the
  local Redis, database 0; today's redis-py refuses it. The same Redis either way.
- ``RQ_QUEUE_NAME`` is ``"kaneda"`` (the documented queue, the one ``rqworker kaneda``
  serves, and ``RQQueue``'s default). 1.0's code passed None, which put the jobs in a
  queue named ``None`` that no documented worker served: a working setup set the name,
  and keeps what it set.
"""

from __future__ import annotations

from typing import Any

PREFIX = "KANEDA_"

#: 1.0's defaults for the names it read; a name not listed defaults to None.
DEFAULTS: dict[str, Any] = {
    "BACKEND": None,
    "QUEUE": None,
    "DEBUG": False,
    "LOGGER": None,
    "LOGGER_FILENAME": None,
    "ELASTIC_INDEX_NAME": "kaneda",
    "ELASTIC_APP_NAME": "default",
    "ELASTIC_TIMEOUT": 0.3,
    "MONGO_DB_NAME": "kaneda",
    "MONGO_COLLECTION_NAME": "default",
    "MONGO_TIMEOUT": 300,
    "RETHINK_DB": "kaneda",
    "RETHINK_TIMEOUT": 300,
    "INFLUX_DATABASE": "kaneda",
    "INFLUX_TIMEOUT": 300,
    "RQ_QUEUE_NAME": "kaneda",
    "ZMQ_TIMEOUT": 300,
}

#: The names kaneda 1.0's module defined, with None when it had no other default.
LEGACY_NAMES = frozenset(
    (
        *DEFAULTS,
        "ELASTIC_CONNECTION_URL",
        "ELASTIC_HOST",
        "ELASTIC_PORT",
        "ELASTIC_USER",
        "ELASTIC_PASSWORD",
        "MONGO_CONNECTION_URL",
        "MONGO_HOST",
        "MONGO_PORT",
        "RETHINK_TABLE_NAME",
        "RETHINK_HOST",
        "RETHINK_PORT",
        "RETHINK_USER",
        "RETHINK_PASSWORD",
        "INFLUX_CONNECTION_URL",
        "INFLUX_HOST",
        "INFLUX_PORT",
        "INFLUX_USERNAME",
        "INFLUX_PASSWORD",
        "CELERY_BROKER",
        "CELERY_QUEUE_NAME",
        "RQ_REDIS_URL",
        "ZMQ_CONNECTION_URL",
    )
)


def __getattr__(name: str) -> Any:
    if name not in LEGACY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from django.conf import settings

    return getattr(settings, PREFIX + name, DEFAULTS.get(name))


def __dir__() -> list[str]:
    return sorted(LEGACY_NAMES)
