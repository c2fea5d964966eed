"""``kaneda demo``: a web shop's burst of metrics, reported to the embedded logger backend."""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from pathlib import Path

from .backends.logger import LoggerBackend
from .delivery import RetryPolicy, Stats
from .errors import ConfigurationError
from .hookspecs import hookimpl
from .metrics import Metrics
from .plugins import get_plugin_manager

ROUTES = [("GET", "/"), ("GET", "/products"), ("GET", "/cart"), ("POST", "/checkout")]


#: The demo gives up on a write that fails after one quick retry: it shows the library
#: at work, and a file it cannot write is a mistake to report at once, not an outage
#: to wait out.
DEMO_RETRY = RetryPolicy(attempts=2, initial_delay=0.1, max_delay=0.2)


def run_demo(filename: str, requests: int = 2000, seed: int = 7) -> int:
    """Report ``requests`` simulated requests (and what goes with them) to ``filename``.

    Returns 0, or 1 when some metrics could not be written: then one line on stderr
    names the file and why, in place of the summary.
    """
    path = Path(filename).resolve()
    _check_writable(path)
    started = time.perf_counter()
    with _FirstFailure() as failure:
        stats = _report(path, requests, seed)
    if stats.failed or stats.dropped:
        lost = stats.failed + stats.dropped
        raise ConfigurationError(
            f"the demo could not write {lost} of its metrics to {path}: {failure.reason}"
        )
    elapsed = time.perf_counter() - started
    print(summarize(path, stats.sent, stats.failed, elapsed))
    return 0


def _report(path: Path, requests: int, seed: int) -> Stats:
    rng = random.Random(seed)
    metrics = Metrics(LoggerBackend(filename=str(path)), batch_size=500, retry=DEMO_RETRY)
    with metrics:
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
    return metrics.stats()


class _FirstFailure(logging.Handler):
    """While the demo runs: why the first metrics were lost, with the library's log quiet.

    The demo reports a failure itself, in one line; the library's lines about retrying
    and giving up would only repeat it. The reason comes from the failure hook.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reason = "see the log"
        self._told = False
        self._logger = logging.getLogger("kaneda")
        self._propagate = self._logger.propagate

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the library's lines out of the demo's output."""

    @hookimpl
    def kaneda_batch_failed(self, metrics: object, error: BaseException, backend: object) -> None:
        """Remember the first error that lost metrics."""
        if not self._told:
            self._told = True
            self.reason = str(error)

    def __enter__(self) -> _FirstFailure:
        self._logger.addHandler(self)
        self._logger.propagate = False
        get_plugin_manager().register(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        get_plugin_manager().unregister(self)
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


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
    """A short account of what the demo wrote, read back from the file itself.

    Only a regular file is read back: /dev/null or a terminal gives nothing to count.
    """
    kinds: Counter[str] = Counter()
    names: Counter[str] = Counter()
    lines = path.read_text("utf-8").splitlines() if path.is_file() else []
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
