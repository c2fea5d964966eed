"""``kaneda demo``: a web shop's burst of metrics, reported to the embedded logger backend."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

from .backends.logger import LoggerBackend
from .errors import ConfigurationError
from .metrics import Metrics

ROUTES = [("GET", "/"), ("GET", "/products"), ("GET", "/cart"), ("POST", "/checkout")]


def run_demo(filename: str, requests: int = 2000, seed: int = 7) -> int:
    """Report ``requests`` simulated requests (and what goes with them) to ``filename``."""
    path = Path(filename).resolve()
    _check_writable(path)
    rng = random.Random(seed)
    started = time.perf_counter()
    with Metrics(LoggerBackend(filename=str(path)), batch_size=500) as metrics:
        metrics.event("deploy", "shop 2.4.1 rolled out", tags={"service": "shop"})
        for number in range(requests):
            method, route = rng.choice(ROUTES)
            status = "500" if rng.random() < 0.02 else "200"
            tags = {"method": method, "route": route, "status": status}
            metrics.increment("http.requests", tags=tags)
            metrics.timing("http.response_time", round(rng.lognormvariate(3.5, 0.6), 2), tags=tags)
            if status == "500":
                metrics.event("http.error", f"{method} {route} failed", tags=tags)
            if route == "/checkout" and status == "200":
                metrics.custom(
                    "shop.order",
                    "order",
                    {"items": rng.randint(1, 5), "total": round(rng.uniform(5, 300), 2)},
                    tags={"currency": "EUR"},
                    id_=f"order-{number}",
                )
            if number % 100 == 0:
                metrics.gauge("worker.queue_depth", rng.randint(0, 40), tags={"worker": "w1"})
        with metrics.timed("demo.flush", use_ms=True):
            metrics.flush()
    stats = metrics.stats()
    elapsed = time.perf_counter() - started
    print(summarize(path, stats.sent, stats.failed, elapsed))
    return 0 if stats.failed == 0 else 1


def _check_writable(path: Path) -> None:
    """Refuse at once, in one line, a file the demo could never write."""
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        raise ConfigurationError(
            f"cannot write the demo's file {path}: {error.strerror or error}. "
            "Pass --file a path in a folder that exists and that you may write to"
        ) from None


def summarize(path: Path, sent: int, failed: int, elapsed: float) -> str:
    """A short account of what the demo wrote, read back from the file itself."""
    kinds: Counter[str] = Counter()
    names: Counter[str] = Counter()
    lines = path.read_text("utf-8").splitlines()
    for line in lines:
        record = json.loads(line)
        kinds[record["metric"]] += 1
        names[record["name"]] += 1
    report = [
        f"Kaneda demo: {sent} metrics reported ({failed} failed) in {elapsed:.2f}s",
        f"to the logger backend, one JSON object per line: {path} ({len(lines)} lines in all)",
        "",
        "by kind:  " + ", ".join(f"{kind} {count}" for kind, count in kinds.most_common()),
        "by name:  " + ", ".join(f"{name} {count}" for name, count in names.most_common()),
        "",
        "a line:   " + (lines[1] if len(lines) > 1 else ""),
    ]
    return "\n".join(report)
