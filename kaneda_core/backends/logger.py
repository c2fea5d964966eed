"""``logger``: one JSON object per metric, to a ``logging`` logger or a file.

The embedded default: it needs no server, so ``kaneda demo`` and first steps use it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from ..backend import Backend, url_options
from ..model import Metric, record


class LoggerBackend(Backend):
    """Writes each metric as one line of JSON.

    ``logger`` is a :class:`logging.Logger` (or a logger's name) to log through, at
    INFO; else the lines go to ``filename`` (appended) or, with neither, to stderr.
    Each line holds ``timestamp`` (ISO 8601, UTC), ``metric`` (the kind), ``name``,
    ``value``, ``tags``, ``host`` and, when given, ``id``.
    """

    settings_namespace = "LOGGER"

    def __init__(self, logger: logging.Logger | str | None = None, filename: str = "") -> None:
        self.filename = filename
        self._handler: logging.Handler | None = None
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if logger is not None:
            self.logger = logger
            return
        # A logger of our own, outside logging's registry: a second backend never adds
        # a second handler to it, and the application's logging setup does not reroute it.
        self.logger = logging.Logger("kaneda.metrics", logging.INFO)
        if filename:
            self._handler = logging.FileHandler(filename, encoding="utf-8", delay=True)
        else:
            self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger.addHandler(self._handler)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> LoggerBackend:
        """``logger:///var/log/metrics.jsonl`` writes to that file; ``logger://`` to stderr."""
        path = unquote(urlsplit(url).path)
        options = url_options(cls, url, filename=path or None)
        return cls(**{**options, **overrides})

    def send(self, batch: Sequence[Metric]) -> None:
        """Log one JSON line per metric."""
        info = self.logger.info
        for metric in batch:
            info("%s", to_json(metric))
        if self._handler is not None:
            self._handler.flush()

    def close(self) -> None:
        """Close the file or stream handler this backend opened (not a logger you gave)."""
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    def __repr__(self) -> str:
        target = self.filename or ("stderr" if self._handler else self.logger.name)
        return f"<LoggerBackend {target}>"


def to_json(metric: Metric) -> str:
    """The JSON line for ``metric``."""
    line = record(metric)
    line["timestamp"] = metric.timestamp.isoformat().replace("+00:00", "Z")
    if metric.id is not None:
        line["id"] = metric.id
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
