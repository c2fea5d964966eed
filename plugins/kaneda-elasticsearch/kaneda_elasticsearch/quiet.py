"""The client library's own log lines, held back while Kaneda makes a request.

elastic_transport logs a warning each time a node fails ("has failed for 3 times in a
row, putting on 4 second timeout"): one per retry of every batch during an outage.
Kaneda already logs the outage once when it starts and once when it ends, so the
client's lines about Kaneda's requests are dropped; its lines about the application's
own requests (another thread, or the same client used outside Kaneda) are kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The loggers elastic_transport writes its per-request lines to.
CLIENT_LOGGERS = ("elastic_transport.node_pool", "elastic_transport.transport")

_state = threading.local()


class _DuringKanedaRequests(logging.Filter):
    """Drops a record made in a thread while it runs a request for Kaneda."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_state, "requesting", False)


_FILTER = _DuringKanedaRequests()


def install() -> None:
    """Put the filter on the client's loggers (once; safe to call again)."""
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextmanager
def client_logs_held_back() -> Iterator[None]:
    """While inside, the client's log lines made in this thread are dropped."""
    _state.requesting = True
    try:
        yield
    finally:
        _state.requesting = False
