"""``logger``: one JSON object per metric, to a ``logging`` logger or a file.

The embedded default: it needs no server, so ``kaneda demo`` and first steps use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from ..backend import Backend, url_options
from ..forking import abandon
from ..model import Metric, record


class LoggerBackend(Backend):
    """Writes each metric as one line of JSON.

    ``logger`` is a :class:`logging.Logger` (or a logger's name) to log through, at
    INFO; else the lines go to ``filename`` (appended) or, with neither, to stderr.
    Each line holds ``timestamp`` (ISO 8601, UTC), ``metric`` (the kind), ``name``,
    ``value``, ``tags``, ``host`` and, when given, ``id``.

    Lines for a file or stderr are written by the backend itself, a batch in one write:
    a write that fails (a full disk, a missing folder) fails the delivery, and is
    counted and retried, instead of being swallowed the way ``logging`` swallows a
    handler's errors. Through your own ``logger``, ``logging`` decides.
    """

    settings_namespace = "LOGGER"

    def __init__(self, logger: logging.Logger | str | None = None, filename: str = "") -> None:
        self.filename = filename
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self.logger = logger
        self._file: TextIO | None = None

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> LoggerBackend:
        """``logger:///var/log/metrics.jsonl`` writes to that file; ``logger://`` to stderr."""
        path = unquote(urlsplit(url).path)
        options = url_options(cls, url, filename=path or None)
        return cls(**{**options, **overrides})

    def send(self, batch: Sequence[Metric]) -> None:
        """Write one JSON line per metric."""
        if self.logger is not None:
            info = self.logger.info
            for metric in batch:
                info("%s", to_json(metric))
            return
        text = "".join(f"{to_json(metric)}\n" for metric in batch)
        if not self.filename:
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        if self._file is None:
            self._file = open(self.filename, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        try:
            self._file.write(text)
            self._file.flush()
        except BaseException:
            # Part of the text may sit in the buffer: a new file object starts clean.
            self._drop_file()
            raise

    def _drop_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError, ValueError):
                file.close()

    def after_fork(self) -> None:
        """Forget the parent's file object (its buffer is the parent's); reopen on first write."""
        abandon(self._file)
        self._file = None

    def close(self) -> None:
        """Close the file this backend opened (not a logger you gave)."""
        self._drop_file()

    def __repr__(self) -> str:
        target = self.logger.name if self.logger is not None else self.filename or "stderr"
        return f"<LoggerBackend {target}>"


def to_json(metric: Metric) -> str:
    """The JSON line for ``metric``."""
    line = record(metric)
    line["timestamp"] = metric.timestamp.isoformat().replace("+00:00", "Z")
    if metric.id is not None:
        line["id"] = metric.id
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))
