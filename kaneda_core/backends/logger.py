"""``logger``: one JSON object per metric, to a ``logging`` logger or a file.

The embedded default: it needs no server, so ``kaneda demo`` and first steps use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..arguments import check_arguments
from ..backend import Backend, is_transient_os_error, url_options
from ..errors import ConfigurationError, DeliveryError
from ..model import Metric, record
from ..redact import redact_url
from ..urls import parse_url


class LoggerBackend(Backend):
    """Writes each metric as one line of JSON.

    ``logger`` is a :class:`logging.Logger` (or a logger's name) to log through, at
    INFO; else the lines go to ``filename`` (appended) or, with neither, to stderr.
    Each line holds ``timestamp`` (ISO 8601, UTC), ``metric`` (the kind), ``name``,
    ``value``, ``tags``, ``host`` and, when given, ``id``.
    """

    settings_namespace = "LOGGER"
    example_url = "logger:///var/log/metrics.jsonl"

    def __init__(
        self, logger: logging.Logger | str | None = None, filename: str | os.PathLike[str] = ""
    ) -> None:
        check_arguments(LoggerBackend, locals())
        filename = os.fspath(filename)
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
        parsed = parse_url(url, cls.example_url)
        if parsed.host or parsed.port:
            # logger://metrics.jsonl reads "metrics.jsonl" as a host: say so, do not
            # quietly write to stderr.
            raise ConfigurationError(
                f"{redact_url(url)} names a host; a logger URL takes a file path after three "
                "slashes (logger:///var/log/metrics.jsonl) or none for stderr (logger://)"
            )
        options = url_options(cls, url, filename=parsed.path or None)
        return cls(**{**options, **overrides})

    def send(self, batch: Sequence[Metric]) -> None:
        """Log one JSON line per metric."""
        info = self.logger.info
        try:
            for metric in batch:
                info("%s", to_json(metric))
            if self._handler is not None:
                self._handler.flush()
        except OSError as error:
            transient = is_transient_os_error(error)
            advice = "" if transient else ": check that the folder exists and that it is writable"
            raise DeliveryError(
                f"cannot write metrics to {self.filename or 'the log stream'} "
                f"({error.strerror or error}){advice}",
                retryable=transient,
            ) from None

    def close(self) -> None:
        """Close the file or stream handler this backend opened (not a logger you gave)."""
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            handler, self._handler = self._handler, None
            # The last flush can fail (a full disk): those lines already failed in send,
            # and the file is closed all the same.
            with contextlib.suppress(OSError):
                handler.close()

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
