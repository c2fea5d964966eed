"""A raw ASGI application that speaks HTTP only (``uvicorn raw_asgi_app:app``).

Like Django's, it raises on any other scope, lifespan included: the middleware must
answer the server's lifespan events for it, and flush at shutdown all the same.
"""

import os
from typing import Any

from kaneda_web import ASGIMiddleware

from kaneda_core import connect

# A long flush interval: what is delivered, is delivered when the server shuts down.
metrics = connect(os.environ["KANEDA_URL"], flush_interval=60)


async def http_only(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise ValueError(f"this application serves HTTP only, not {scope['type']}")
    path, method = scope["path"], scope["method"]
    if path == "/boom":
        scope["kaneda.route"] = "/boom"
        raise ZeroDivisionError("on purpose")
    if path.startswith("/items/"):
        scope["kaneda.route"] = "/items/{item_id}"
        status = 200 if method == "GET" else 405
    else:
        status = 404
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


app = ASGIMiddleware(http_only, metrics)
