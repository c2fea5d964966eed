"""The FastAPI application the uvicorn run serves (``uvicorn fastapi_app:app``).

Its Metrics is made at import from ``KANEDA_URL``, before uvicorn serves a request.
"""

import os

from fastapi import FastAPI
from kaneda_web import ASGIMiddleware

from kaneda_core import connect

# A long flush interval: what is delivered, is delivered when the server shuts down.
metrics = connect(os.environ["KANEDA_URL"], flush_interval=60)
app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@app.get("/boom")
async def boom() -> None:
    raise ZeroDivisionError("on purpose")


app.add_middleware(ASGIMiddleware, metrics=metrics)
