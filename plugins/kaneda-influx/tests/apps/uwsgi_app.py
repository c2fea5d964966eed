"""A tiny WSGI app for the uWSGI tests: metrics at import (in uWSGI's master), one per request.

``IMPORT_METRICS`` gauges are reported as the module loads: without ``--lazy-apps``
that is in uWSGI's master, which then forks its workers in C.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from kaneda_core import connect

metrics = connect(os.environ["KANEDA_URL"], batch_size=200, flush_interval=0.2)
for n in range(int(os.environ["IMPORT_METRICS"])):
    metrics.gauge("import", n, tags={"pid": str(os.getpid()), "n": str(n)})


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Report one gauge tagged with this worker's pid, answer 200."""
    metrics.gauge("request", 1, tags={"pid": str(os.getpid()), "q": environ["QUERY_STRING"]})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
