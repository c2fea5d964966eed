"""``logger``: one JSON object per metric, to a ``logging`` logger or a file.

The embedded default: it needs no server, so ``kaneda demo`` and first steps use it.
With ``layout="kaneda1"`` it writes kaneda 1.0's lines through 1.0's logger instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import weakref
from collections.abc import Sequence
from typing import Any, TextIO

from ..arguments import argument_error, check_arguments
from ..backend import Backend, is_transient_os_error, url_options
from ..errors import ConfigurationError, DeliveryError
from ..forking import abandon
from ..layouts import DEFAULT_LAYOUT, KANEDA1, check_layout, kaneda1_payload
from ..model import Metric, record
from ..redact import redact_url
from ..urls import check_path_credentials, parse_url

#: The logger kaneda 1.0 logged through, and the format of its lines.
KANEDA1_LOGGER = "kaneda.backends.logger"
KANEDA1_FORMAT = "%(asctime)s - %(name)s - %(message)s"


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

    With ``layout="kaneda1"``, kaneda 1.0's lines: each metric is logged at INFO as 1.0's
    payload dict (``host``, ``name``, ``value`` or a dict value's keys, ``tags`` when
    given, ``metric``, ``_id`` when given) through ``logger`` or, without one, through
    the ``kaneda.backends.logger`` logger, where a handler of this backend writes
    ``asctime - kaneda.backends.logger - {payload}`` to ``filename`` or stderr (a write
    that fails fails the delivery there too).
    """

    settings_namespace = "LOGGER"
    example_url = "logger:///var/log/metrics.jsonl"

    def __init__(
        self,
        logger: logging.Logger | str | None = None,
        filename: str | os.PathLike[str] = "",
        *,
        layout: str = DEFAULT_LAYOUT,
    ) -> None:
        check_arguments(LoggerBackend, locals())
        if not (logger is None or isinstance(logger, str) or callable(getattr(logger, "info", 0))):
            # kaneda 1.0 took any object with info(): a LoggerAdapter, a structlog logger.
            raise argument_error(
                LoggerBackend,
                "logger",
                "a logging.Logger (or any object with info()), a logger's name or None",
                logger,
            )
        filename = os.fspath(filename)
        self.filename = filename
        self.layout = check_layout(layout)
        self._file: TextIO | None = None
        self._handler: _Kaneda1Handler | None = None
        self._mark: dict[str, _Mark] = {}
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self.logger = logger
        if logger is None and self.layout == KANEDA1:
            self._log_like_kaneda1(filename)

    def _log_like_kaneda1(self, filename: str) -> None:
        # kaneda 1.0's logger, level and format. Its handler takes this backend's lines
        # only, so two backends writing to two files do not write to both.
        self.logger = logging.getLogger(KANEDA1_LOGGER)
        self.logger.setLevel(logging.INFO)
        handler = _Kaneda1Handler(filename)
        handler.setFormatter(logging.Formatter(KANEDA1_FORMAT))
        # The logger is the process's: neither it nor the records it passes on (which a
        # handler may keep: pytest's, a MemoryHandler) may hold this backend, or one never
        # closed (kaneda 1.0 code makes one per request) would never be collected, and
        # its handler and open file would add up. Its lines carry a mark of their own,
        # and the handler is removed and closed once the backend is collected.
        mark = _Mark()
        self._mark = {"kaneda_backend": mark}
        handler.addFilter(mark)
        self.logger.addHandler(handler)
        self._handler = handler
        self._release_handler = weakref.finalize(self, _detach, self.logger, handler)
        self._release_handler.atexit = False  # logging closes its handlers at exit

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> LoggerBackend:
        """``logger:///var/log/metrics.jsonl`` writes to that file; ``logger://`` to stderr."""
        # The file's name is shown in full (repr, write errors): refuse one shaped like a
        # user and password, as logger:///user:pw@host/... is.
        check_path_credentials(url, "LoggerBackend(filename=...)")
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
        """Write one line per metric: JSON, or kaneda 1.0's payload with ``layout="kaneda1"``."""
        if self.layout == KANEDA1 and self.logger is not None:
            self._log_kaneda1(batch)
            return
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
        try:
            if self._file is None:
                self._file = open(self.filename, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            try:
                self._file.write(text)
                self._file.flush()
            except BaseException:
                # Part of the text may sit in the buffer: a new file object starts clean.
                self._drop_file()
                raise
        except OSError as error:
            raise self._write_error(error) from None

    def _log_kaneda1(self, batch: Sequence[Metric]) -> None:
        assert self.logger is not None
        info = self.logger.info
        mark = self._mark
        handler = self._handler
        for index, metric in enumerate(batch):
            info(kaneda1_record(metric), extra=mark)
            if handler is not None and handler.error is not None:
                error, handler.error = handler.error, None
                failed = _write_error_for(self.filename, error)
                raise DeliveryError(str(failed), retryable=failed.retryable, metrics=batch[index:])
        if handler is not None:
            handler.flush()

    def _write_error(self, error: OSError) -> DeliveryError:
        return _write_error_for(self.filename, error)

    def _drop_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError, ValueError):
                file.close()

    def after_fork(self) -> None:
        """Forget the parent's file objects (their buffers are the parent's); reopen on use."""
        abandon(self._file)
        self._file = None
        if self._handler is not None:
            abandon(self._handler.stream)
            self._handler.stream = None

    def close(self) -> None:
        """Close the file or handler this backend opened (not a logger you gave)."""
        self._drop_file()
        if self._handler is not None:
            self._release_handler()  # once: not again when the backend is collected
            self._handler = None

    def __repr__(self) -> str:
        target = self.filename or (
            self.logger.name if self.logger is not None and self._handler is None else "stderr"
        )
        return f"<LoggerBackend {target}>"


class _Mark:
    """What one backend's lines carry, and its handler's filter: that backend's lines only."""

    __slots__ = ()

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "kaneda_backend", None) is self


def _detach(logger: logging.Logger, handler: logging.Handler) -> None:
    """Take ``handler`` off ``logger`` and close it (its backend was closed or collected).

    Run by the garbage collector too, in whatever thread it runs in, maybe while that
    thread is in ``logger.info()`` walking ``logger.handlers``: the list is replaced,
    not changed in place (removing from it there made the walk skip the next handler,
    and that backend's line was lost). So is a walk in another thread's left whole.
    """
    with logging._lock:  # type: ignore[attr-defined]  # the lock addHandler takes
        if handler in logger.handlers:
            logger.handlers = [each for each in logger.handlers if each is not handler]
    handler.close()


class _Kaneda1Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """kaneda 1.0's file or stderr handler, which keeps a write's error for the backend.

    ``logging`` prints a handler's error and carries on; the backend must know, so that
    a line it could not write is not counted as delivered.
    """

    def __init__(self, filename: str) -> None:
        super().__init__(sys.stderr)
        self.filename = filename
        self.error: BaseException | None = None
        if filename:
            self.stream = None  # opened on the first line

    def emit(self, record: logging.LogRecord) -> None:
        if self.filename and self.stream is None:
            try:
                self.stream = open(self.filename, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as error:
                self.error = error
                return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.error = sys.exc_info()[1]

    def close(self) -> None:
        if self.filename and self.stream is not None:
            with contextlib.suppress(OSError, ValueError):
                self.stream.close()
            self.stream = None
        super().close()


def _write_error_for(filename: str, error: BaseException) -> DeliveryError:
    transient = isinstance(error, OSError) and is_transient_os_error(error)
    advice = "" if transient else ": check that the folder exists and that it is writable"
    reason = getattr(error, "strerror", None) or error
    return DeliveryError(
        f"cannot write metrics to {filename or 'stderr'} ({reason}){advice}", retryable=transient
    )


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
