"""``import kaneda_web`` imports no web framework: the middleware is for any of them."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("flask", "werkzeug", "starlette", "fastapi", "django", "anyio", "asgiref")


def test_importing_kaneda_web_imports_no_framework() -> None:
    code = (
        "import sys, kaneda_web\n"
        "from kaneda_web import ASGIMiddleware, WSGIMiddleware, add_request_tags\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
