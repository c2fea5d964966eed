"""``logger``: one JSON object per metric, to a ``logging`` logger or a file.

The embedded default: it needs no server, so ``kaneda demo`` and first steps use it.
With ``layout="kaneda1"`` it writes kaneda 1.0's lines instead (see :class:`LoggerBackend`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from ..backend import Backend, url_options
from ..layouts import DEFAULT_LAYOUT, KANEDA1, check_layout, kaneda1_payload
from ..model import Metric, record

#: The logger kaneda 1.0 logged through, and the format of its lines.
KANEDA1_LOGGER = "kaneda.backends.logger"
KANEDA1_FORMAT = "%(asctime)s - %(name)s - %(message)s"


class LoggerBackend(Backend):
    """Writes each metric as one line of JSON.

    ``logger`` is a :class:`logging.Logger` (or a logger's name) to log through, at
    INFO; else the lines go to ``filename`` (appended) or, with neither, to stderr.
    Each line holds ``timestamp`` (ISO 8601, UTC), ``metric`` (the kind), ``name``,
    ``value``, ``tags``, ``host`` and, when given, ``id``.

    With ``layout="kaneda1"``, kaneda 1.0's lines: each metric is logged at INFO as 1.0's
    payload dict (``host``, ``name``, ``value`` or a dict value's keys, ``tags`` when
    given, ``metric``, ``_id`` when given) through ``logger`` or, without one, through
    the ``kaneda.backends.logger`` logger, where a handler of this backend writes
    ``asctime - kaneda.backends.logger - {payload}`` to ``filename`` or stderr.
    """

    settings_namespace = "LOGGER"

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        filename: str = "",
        *,
        layout: str = DEFAULT_LAYOUT,
    ) -> None:
        self.filename = filename
        self.layout = check_layout(layout)
        self._handler: logging.Handler | None = None
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if logger is not None:
            self.logger = logger
            return
        if self.layout == KANEDA1:
            self._log_like_kaneda1(filename)
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

    def _log_like_kaneda1(self, filename: str) -> None:
        # kaneda 1.0's logger, level and format. Its handler takes this backend's lines
        # only, so two backends writing to two files do not write to both.
        self.logger = logging.getLogger(KANEDA1_LOGGER)
        self.logger.setLevel(logging.INFO)
        if filename:
            self._handler = logging.FileHandler(filename, encoding="utf-8", delay=True)
        else:
            self._handler = logging.StreamHandler(sys.stderr)
        self._handler.setFormatter(logging.Formatter(KANEDA1_FORMAT))
        self._handler.addFilter(lambda record: getattr(record, "kaneda_backend", None) is self)
        self.logger.addHandler(self._handler)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> LoggerBackend:
        """``logger:///var/log/metrics.jsonl`` writes to that file; ``logger://`` to stderr."""
        path = unquote(urlsplit(url).path)
        options = url_options(cls, url, filename=path or None)
        return cls(**{**options, **overrides})

    def send(self, batch: Sequence[Metric]) -> None:
        """Log one line per metric: JSON, or kaneda 1.0's payload with ``layout="kaneda1"``."""
        info = self.logger.info
        if self.layout == KANEDA1:
            mark = {"kaneda_backend": self}
            for metric in batch:
                info(kaneda1_record(metric), extra=mark)
        else:
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


def kaneda1_record(metric: Metric) -> dict[str, Any]:
    """kaneda 1.0's payload for ``metric``: the dict its logger backend logged."""
    payload = kaneda1_payload(metric)
    payload["metric"] = metric.kind
    if metric.id:
        payload["_id"] = metric.id
    return payload


def to_json(metric: Metric) -> str:
    """The JSON line for ``metric``."""
    line = record(metric)
    line["timestamp"] = metric.timestamp.isoformat().replace("+00:00", "Z")
    if metric.id is not None:
        line["id"] = metric.id
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
