"""``ZMQBackend``: each batch sent to a ``kaneda worker`` over ZeroMQ, kept until it answers."""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import zmq

from kaneda_core import DeliveryError, Metric
from kaneda_core.arguments import argument_error, check_arguments
from kaneda_core.backend import is_transient_os_error, url_options
from kaneda_core.errors import ConfigurationError
from kaneda_core.message import MARKER, VERSION, batch_document, encode_batch
from kaneda_core.worker import MessageHandler, QueueBackend

from . import protocol


class WorkerUnavailable(ConnectionError):
    """No worker took or answered a batch in time (retried, like any network error)."""


class ZMQBackend(QueueBackend):
    """Sends each batch as one message to ``kaneda worker zmq+tcp://...``, which stores it.

    :param connection_url: where the workers listen: ``tcp://host:5555``, several as
        ``tcp://h1:5555,h2:5555`` (batches go to each in turn), or ``ipc:///path``.
    :param timeout: seconds to wait for a worker to take a batch and to answer that the
        store has it; then the batch is sent again (to the next worker, if several).
        Make it longer than the worker needs to store a batch while its store is slow.
    :param assign_ids: give metrics reported without an id one (see
        :class:`~kaneda_core.worker.QueueBackend`); ``?assign_ids=false`` for InfluxDB.
    :param max_message_bytes: the largest message sent, the workers' own bound
        (``?max_message_bytes=`` on their URL; 16 MiB by default): a larger batch is
        sent in parts, and a metric that could not travel alone fails alone, its largest
        field named (checked in ``send``, where the batch is encoded anyway: a check at
        the call would cost every call for the sake of events of millions of characters).

    Application processes connect and the worker binds, so any number of processes (a
    pre-fork server's workers, say) share one endpoint. ``send`` returns once a worker
    answers that the backend has the batch, so the batching core's retries and disk
    buffer cover the whole way to the store.
    """

    example_url = "zmq+tcp://127.0.0.1:5555"

    def __init__(
        self,
        connection_url: str = "tcp://127.0.0.1:5555",
        timeout: float = 30.0,
        assign_ids: bool = True,
        max_message_bytes: int = protocol.MAX_MESSAGE_BYTES,
    ) -> None:
        check_arguments(ZMQBackend, locals())
        if max_message_bytes < protocol.MIN_MESSAGE_BYTES:
            raise argument_error(
                ZMQBackend,
                "max_message_bytes",
                f"a number of bytes of at least {protocol.MIN_MESSAGE_BYTES}",
                max_message_bytes,
            )
        self.max_message_bytes = max_message_bytes
        super().__init__(assign_ids)
        try:
            self.endpoints = protocol.endpoints(connection_url)
        except ConfigurationError as error:
            raise ConfigurationError(
                f"ZMQBackend: {error}. For example: connection_url='tcp://127.0.0.1:5555' "
                "(several: 'tcp://h1:5555,h2:5555'), or a URL such as zmq+tcp://127.0.0.1:5555"
            ) from None
        self.timeout = float(timeout)
        self._context: zmq.Context[Any] | None = None
        self._socket: zmq.Socket[Any] | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pid = os.getpid()

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ZMQBackend:
        """``zmq+tcp://host:5555?timeout=30`` (``zmq+tcp://h1:5555,h2:5555``, ``zmq+ipc:///path``)."""
        connection_url, _ = protocol.split_url(url)
        options = url_options(cls, _first_host_only(url), connection_url=connection_url)
        options.update(overrides)
        return cls(**options)

    def _too_large(self, metric: Metric) -> str:
        """Why ``metric`` cannot travel, naming its largest field."""
        size = len(self._encoded([metric]))
        fields: list[tuple[str, object]] = [
            ("name", metric.name),
            ("value", metric.value),
            ("host", metric.host),
            ("id_", metric.id),
        ]
        if isinstance(metric.tags, dict):
            fields += [(f"tags[{key!r}]", item) for key, item in metric.tags.items()]
            fields += [(f"the tag key {key[:40]!r}", key) for key in metric.tags]
        else:
            fields.append(("tags", metric.tags))
        field, largest = max(((f, len(_dumps(v))) for f, v in fields), key=lambda pair: pair[1])
        return (
            f"{field} takes {largest:,} bytes of a ZeroMQ message, and the metric up to "
            f"{size:,}: a kaneda worker takes messages of at most {self.max_message_bytes:,} "
            "bytes (max_message_bytes, the same on the worker's URL): shorten it"
        )

    def send(self, batch: Sequence[Metric]) -> None:
        """Send ``batch`` and wait until a worker answers that the backend has it.

        A batch over ``max_message_bytes`` goes in parts, each answered before the next
        is sent; a metric too large to travel alone fails for good, unsent. A part the
        worker could not store (or no answer) stops there: the error names the metrics
        of that part and of the parts not sent, for the batching core to retry.
        """
        if self._pid != os.getpid():  # forked without after_fork: never touch the parent's
            self.after_fork()
        document = batch_document(batch, self.new_id)  # as encode_batch writes it
        payload = _dumps(document)
        if len(payload) <= self.max_message_bytes:
            self._send_one(payload)
            return
        parts, too_large = self._parts(batch, document["metrics"])
        refused = list(too_large)
        reasons = [self._too_large(too_large[0])] if too_large else []
        if len(too_large) > 1:
            reasons[0] += f" ({len(too_large) - 1} more metrics of the batch too)"
        for index, (metrics, part) in enumerate(parts):
            try:
                self._send_one(part)
            except Exception as error:
                if isinstance(error, DeliveryError) and not error.retryable:
                    refused += metrics  # poison: this part fails, the others go on
                    reasons.append(str(error))
                    continue
                if index == 0 and not refused:
                    raise  # nothing stored or refused yet: the error as it is
                unsent = [metric for rest, _ in parts[index:] for metric in rest]
                raise DeliveryError(
                    f"{error} ({len(unsent)} metrics of a batch sent in {len(parts)} messages "
                    f"of at most {self.max_message_bytes:,} bytes not stored)",
                    retryable=self.is_retryable(error),
                    metrics=unsent,
                    rejected=refused,
                ) from error
        if refused:
            raise DeliveryError("; ".join(reasons), retryable=False, metrics=refused)

    def _parts(
        self, batch: Sequence[Metric], rows: list[Any]
    ) -> tuple[list[tuple[list[Metric], bytes]], list[Metric]]:
        """``batch`` (whose rows in a message are ``rows``) as messages of at most
        ``max_message_bytes``, and the metrics too large to travel alone."""
        room = self.max_message_bytes - len(self._encoded([]))
        parts: list[tuple[list[Metric], bytes]] = []
        too_large: list[Metric] = []
        metrics: list[Metric] = []
        texts: list[bytes] = []
        size = 0
        for metric, row in zip(batch, rows, strict=True):
            text = _dumps(row)
            if len(text) > room:
                too_large.append(metric)
                continue
            if texts and size + 1 + len(text) > room:  # a comma before each but the first
                parts.append((metrics, self._message(texts)))
                metrics, texts, size = [], [], 0
            size += len(text) + (1 if texts else 0)
            metrics.append(metric)
            texts.append(text)
        if texts:
            parts.append((metrics, self._message(texts)))
        return parts, too_large

    @staticmethod
    def _encoded(batch: Sequence[Metric]) -> bytes:
        return encode_batch(batch).encode("utf-8")

    @staticmethod
    def _message(rows: list[bytes]) -> bytes:
        """The message of rows already encoded (as :func:`encode_batch` writes it)."""
        envelope = _dumps({MARKER: VERSION, "metrics": []})
        return envelope[:-2] + b",".join(rows) + envelope[-2:]

    def _send_one(self, payload: bytes) -> None:
        """Send one message and wait for the answer; raise unless the backend has it."""
        with self._lock:
            socket = self._connected()
            message_id = f"{os.getpid()}-{next(self._ids)}".encode()
            try:
                # Copied: a frame sent without a copy (64 KB and more) is let go of by
                # pyzmq's collector thread, which refuses work once the interpreter is
                # exiting, when the last batches are delivered.
                socket.send_multipart([message_id, payload])
            except zmq.Again:
                self._reset()
                raise WorkerUnavailable(
                    f"no kaneda worker took the batch at {', '.join(self.endpoints)} "
                    f"within {self.timeout:g}s. {self._check}"
                ) from None
            except BaseException:
                # The id frame may be gone without the batch: it would be taken for the
                # first frame of the next message.
                self._reset()
                raise
            verdict, reason = self._answer(socket, message_id, len(payload))
        if verdict == protocol.RETRY:
            raise DeliveryError(f"the worker could not store the batch: {reason}", retryable=True)
        if verdict == protocol.POISON:
            raise DeliveryError(f"the worker refused the batch: {reason}", retryable=False)

    def _answer(self, socket: zmq.Socket[Any], message_id: bytes, size: int) -> tuple[bytes, str]:
        """The worker's answer to ``message_id``; answers to earlier attempts are skipped."""
        import time

        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not socket.poll(max(1, int(remaining * 1000))):
                # The worker may have died with the batch: start afresh, so nothing
                # queued for it is sent when it comes back, and let the caller retry.
                self._reset()
                raise WorkerUnavailable(
                    f"no answer from a kaneda worker at {', '.join(self.endpoints)} "
                    f"within {self.timeout:g}s to a message of {size:,} bytes (a worker "
                    "drops, unanswered, the connection of a peer that sends more than its "
                    f"max_message_bytes). {self._check}"
                )
            frames = socket.recv_multipart()
            if len(frames) == 3 and frames[0] == message_id and frames[1] in protocol.VERDICTS:
                return frames[1], frames[2].decode("utf-8", "replace")

    def _connected(self) -> zmq.Socket[Any]:
        if self._socket is None:
            if self._context is None:
                self._context = zmq.Context()
            socket = self._context.socket(zmq.DEALER)
            socket.linger = 0
            # Queue only for workers that are connected: a batch never waits for a dead one.
            socket.immediate = True
            socket.sndtimeo = int(self.timeout * 1000)
            try:
                for endpoint in self.endpoints:
                    socket.connect(endpoint)
            except zmq.ZMQError:
                socket.close(linger=0)
                raise
            self._socket = socket
        return self._socket

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    @property
    def _check(self) -> str:
        return (
            f"Check that a kaneda worker runs and listens there (kaneda worker "
            f"zmq+{self.endpoints[0]} --to BACKEND_URL), that this URL names its address, "
            "and that this machine can reach it"
        )

    def is_retryable(self, error: BaseException) -> bool:
        """Retry when no worker answered, and on ZeroMQ's own transient errors; not for a
        missing or forbidden ipc path."""
        if isinstance(error, DeliveryError):
            return error.retryable
        if isinstance(error, OSError):
            return is_transient_os_error(error)
        return isinstance(error, zmq.Again) or (
            isinstance(error, zmq.ZMQError) and error.errno in (zmq.EAGAIN, zmq.ETERM)
        )

    def close(self) -> None:
        """Close the socket; the next batch opens a new one."""
        with self._lock:
            self._reset()
            if self._context is not None:
                self._context.destroy(linger=0)
                self._context = None

    def after_fork(self) -> None:
        """Forget the parent's socket and context (a child must never use them)."""
        super().after_fork()
        self._socket = None
        self._context = None
        self._lock = threading.Lock()  # the parent's may have been held at the fork
        self._pid = os.getpid()

    @classmethod
    def serve(cls, url: str, handler: MessageHandler) -> None:
        """Bind the URL's endpoints and deliver what producers send until SIGTERM or SIGINT."""
        from .worker import ZMQWorker, stop_on_signals

        connection_url, options = protocol.split_url(url)
        found = protocol.endpoints(connection_url)
        unknown = set(options) - {"timeout", "assign_ids", "max_messages", "max_message_bytes"}
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {', '.join(sorted(unknown))} for a ZeroMQ worker"
            )
        given = options.get("max_message_bytes", str(protocol.MAX_MESSAGE_BYTES))
        max_message_bytes = protocol.check_message_bytes(
            int(given) if given.isdigit() else given, "the worker's URL"
        )
        worker = ZMQWorker(
            found,
            handler,
            max_messages=int(options.get("max_messages", 20)),
            max_message_bytes=max_message_bytes,
        )
        worker.run(stop_on_signals())

    def __repr__(self) -> str:
        return f"<ZMQBackend {','.join(self.endpoints)}>"


def _first_host_only(url: str) -> str:
    """``url`` with only the first of its hosts: several hosts are not a URL's shape, and
    the query options are read from a URL."""
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    return f"{scheme}{sep}{rest[:end].split(',')[0]}{rest[end:]}"


def _dumps(value: object) -> bytes:
    """``value`` as :func:`~kaneda_core.message.encode_batch` writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
