"""``ZMQBackend``: each batch sent to a ``kaneda worker`` over ZeroMQ, kept until it answers."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

import zmq

from kaneda_core import DeliveryError, Metric
from kaneda_core.arguments import check_arguments
from kaneda_core.backend import is_transient_os_error, url_options
from kaneda_core.errors import ConfigurationError
from kaneda_core.message import encode_batch
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
    ) -> None:
        check_arguments(ZMQBackend, locals())
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

    def send(self, batch: Sequence[Metric]) -> None:
        """Send ``batch`` and wait until a worker answers that the backend has it."""
        if self._pid != os.getpid():  # forked without after_fork: never touch the parent's
            self.after_fork()
        payload = encode_batch(batch, self.new_id).encode("utf-8")
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
            verdict, reason = self._answer(socket, message_id)
        if verdict == protocol.RETRY:
            raise DeliveryError(f"the worker could not store the batch: {reason}", retryable=True)
        if verdict == protocol.POISON:
            raise DeliveryError(f"the worker refused the batch: {reason}", retryable=False)

    def _answer(self, socket: zmq.Socket[Any], message_id: bytes) -> tuple[bytes, str]:
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
                    f"within {self.timeout:g}s. {self._check}"
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
        unknown = set(options) - {"timeout", "assign_ids", "max_messages"}
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {', '.join(sorted(unknown))} for a ZeroMQ worker"
            )
        worker = ZMQWorker(found, handler, max_messages=int(options.get("max_messages", 20)))
        worker.run(stop_on_signals())

    def __repr__(self) -> str:
        return f"<ZMQBackend {','.join(self.endpoints)}>"


def _first_host_only(url: str) -> str:
    """``url`` with only the first of its hosts: several hosts are not a URL's shape, and
    the query options are read from a URL."""
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    return f"{scheme}{sep}{rest[:end].split(',')[0]}{rest[end:]}"
