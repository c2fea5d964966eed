"""The FastAPI application with a second Metrics the middleware does not wrap
(``uvicorn --workers 2 two_metrics_app:app``): the application's own, counting requests.
"""

import os
from typing import Any

from fastapi_app import app as api

from kaneda_core import connect

# A long flush interval, as the middleware's: delivered when the worker is stopped.
own = connect(os.environ["KANEDA_URL"], flush_interval=60)


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        own.increment("app.requests", tags={"route": "any"})
    await api(scope, receive, send)
