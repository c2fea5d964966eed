"""The Flask application the gunicorn run serves (``gunicorn flask_app:app``).

The middleware is made at import, in each worker (no ``--preload``): its Metrics reads
``KANEDA_URL`` from the environment.
"""

from flask import Flask
from kaneda_web import WSGIMiddleware

from kaneda_core import Metrics

app = Flask(__name__)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@app.get("/boom")
def boom() -> str:
    raise ZeroDivisionError("on purpose")


# Metrics() reads KANEDA_URL. A long flush interval: what is delivered, is delivered when
# the worker exits.
app.wsgi_app = WSGIMiddleware(app.wsgi_app, Metrics(flush_interval=60))  # type: ignore[method-assign]
