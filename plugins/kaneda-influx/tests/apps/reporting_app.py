"""A tiny WSGI app for the pre-fork tests: one gauge per request, into KANEDA_URL.

The Metrics is created at import, so with gunicorn ``--preload`` it is created (and
used once) in the master, before the workers are forked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from kaneda_core import Metrics

metrics = Metrics(os.environ["KANEDA_URL"], batch_size=200, flush_interval=0.2)
metrics.gauge("master", 1, tags={"pid": str(os.getpid())})  # its connection is now open
metrics.flush(10)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Report one gauge tagged with this worker's pid, answer 200."""
    request = environ.get("QUERY_STRING", "")
    metrics.gauge("request", 1, tags={"pid": str(os.getpid()), "q": request or "none"})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
