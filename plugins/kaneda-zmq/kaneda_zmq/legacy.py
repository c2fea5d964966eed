"""kaneda 1.0's ZeroMQ queue and worker, with its wire format: one JSON object per metric.

``ZMQQueue(connection_url)`` binds a PUSH socket and sends
``{"name", "metric", "value", "tags", "id_"}`` per metric; ``zmqworker
--connection_url`` connects a PULL socket to it and stores what arrives into the
settings module's backend. Either side works with kaneda 1.0's other side. Only one
process can bind an endpoint, and PUSH/PULL has no acknowledgement: for several
application processes and delivery that survives a worker's crash, use
``zmq+tcp://`` URLs (:class:`~kaneda_zmq.ZMQBackend`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import zmq

from kaneda.exceptions import ImproperlyConfigured, SettingsError
from kaneda.queues.base import BaseQueue
from kaneda_core import DeliveryError, Metric
from kaneda_core.worker import MessageHandler, Verdict

log = logging.getLogger("kaneda.queues.zmq")

#: The keys of a kaneda 1.0 message, in ``report``'s order.
FIELDS = ("name", "metric", "value", "tags", "id_")


class ZMQQueue(BaseQueue):
    """ZeroMQ queue, as in kaneda 1.0.

    :param connection_url: ZMQ connection url (tcp://127.0.0.1:5555), bound here.
    :param timeout: ZMQ socket timeout (milliseconds).
    """

    settings_namespace = "ZMQ"

    def __init__(self, connection_url: str, timeout: int = 300) -> None:
        if not isinstance(connection_url, str) or "://" not in connection_url:
            raise ImproperlyConfigured(
                f"connection_url must be a ZeroMQ endpoint such as tcp://127.0.0.1:5555, "
                f"got {connection_url!r}"
            )
        self.connection_url = connection_url
        self.timeout = timeout
        self.socket: zmq.Socket[Any] | None = self._bind()

    def _bind(self) -> zmq.Socket[Any]:
        context: zmq.Context[Any] = zmq.Context()
        socket: zmq.Socket[Any] = context.socket(zmq.PUSH)
        socket.SNDTIMEO = self.timeout
        socket.bind(self.connection_url)
        return socket

    def _bound(self) -> zmq.Socket[Any]:
        if self.socket is None:  # a forked child binds its own, if it can
            self.socket = self._bind()
        return self.socket

    def report(self, name: str, metric: str, value: Any, tags: Any, id_: Any = None) -> Any:
        """Send one metric, as kaneda 1.0 did; errors are logged, not raised."""
        try:
            return self._bound().send_json(_message((name, metric, value, tags, id_)))
        except Exception as error:  # kaneda 1.0 logged and carried on
            log.exception(error)
            return None

    def send(self, batch: Sequence[Metric]) -> list[Any]:
        """Send each metric of ``batch`` as one kaneda 1.0 message (answers: None, as 1.0's)."""
        for index, metric in enumerate(batch):
            call = (metric.name, metric.kind, metric.value, metric.tags or None, metric.id)
            try:
                self._bound().send_json(_message(call))
            except zmq.ZMQError as error:
                raise DeliveryError(
                    f"ZeroMQ could not send to {self.connection_url}: {error} (only one "
                    "process can bind an endpoint: use a zmq+tcp:// URL for several)",
                    retryable=error.errno == zmq.EAGAIN,
                    metrics=batch[index:],
                ) from error
        return [None] * len(batch)

    def close(self) -> None:
        """Close the socket."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def after_fork(self) -> None:
        """Forget the parent's socket: a forked child binds its own when it first sends."""
        self.socket = None


def _message(call: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(FIELDS, call, strict=True))


def zmq_task(argv: Sequence[str] | None = None) -> int:
    """``zmqworker --connection_url tcp://127.0.0.1:5555``: kaneda 1.0's ZeroMQ worker.

    Without ``--connection_url`` the settings module's ``ZMQ_CONNECTION_URL`` is used.
    Metrics go to the settings module's backend (``BACKEND = ...``), or to the one
    ``KANEDA_URL`` names, in kaneda 1.0's layout unless the URL names one. It sleeps
    until a message arrives, unlike kaneda 1.0's, which polled without pause.
    """
    from kaneda.queues import worker_backend
    from kaneda.utils import get_settings
    from kaneda_core import Metrics, create_backend
    from kaneda_core.config import URL_VARIABLE
    from kaneda_core.worker import kaneda1_url

    parser = argparse.ArgumentParser(prog="zmqworker", description=zmq_task.__doc__)
    parser.add_argument(
        "--connection_url", "-u", help="ZMQ connection url, e.g: tcp://127.0.0.1:5555"
    )
    args = parser.parse_args(argv)
    connection_url = args.connection_url
    if not connection_url:
        try:
            connection_url = get_settings().ZMQ_CONNECTION_URL
        except (ImportError, AttributeError):
            raise SettingsError(
                "Pass --connection_url option or define ZMQ_CONNECTION_URL on Kaneda settings "
                "file before use ZMQ task processor."
            ) from None
    # KANEDA_URL naming a store: kaneda 1.0's layout, as 1.0's worker stored, unless the
    # URL names a layout (see kaneda_core.worker.kaneda1_url).
    url = os.environ.get(URL_VARIABLE, "").strip()
    legacy_url = kaneda1_url(url) if "://" in url else None
    backend = create_backend(legacy_url) if legacy_url is not None else worker_backend()
    handler = MessageHandler(Metrics(backend))
    print(f"Running ZMQ worker - listening at {connection_url}.")
    print(f"Using {type(backend).__name__}.", flush=True)
    from .worker import stop_on_signals

    stop = stop_on_signals()
    try:
        pull_messages(connection_url, handler, stop)
    finally:
        handler.close()
        print(f"Stopped: {handler.stats}", flush=True)
    return 0


def pull_messages(connection_url: str, handler: MessageHandler, stop: Any) -> None:
    """Connect a PULL socket to ``connection_url``; deliver kaneda 1.0 messages until ``stop``."""
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.PULL)
    socket.linger = 0
    socket.connect(connection_url)
    try:
        while not stop.is_set():
            if not socket.poll(500):
                continue
            calls: list[tuple[Any, ...]] = []
            try:
                for _ in range(1000):
                    try:
                        frame = socket.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    call = legacy_call(frame, handler)
                    if call is not None:
                        calls.append(call)
            finally:
                # Even if reading a frame raised: what was taken before it is delivered.
                deliver_legacy(calls, handler, stop)
    finally:
        socket.close(linger=0)
        context.term()


def legacy_call(frame: bytes, handler: MessageHandler) -> tuple[Any, ...] | None:
    """The call a kaneda 1.0 frame holds, or None (counted and logged as poison)."""
    try:
        payload = json.loads(frame)
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        reason = "nested too deep" if isinstance(error, RecursionError) else error
        handler.reject(f"a kaneda 1.0 message is not JSON: {reason}: {frame[:120]!r}")
        return None
    except Exception as error:  # noqa: BLE001 - one frame must not stop the worker
        handler.reject(f"a kaneda 1.0 message could not be read: {error!r:.200}")
        return None
    if not isinstance(payload, dict) or not {"name", "metric", "value"} <= set(payload):
        handler.reject(f"not a kaneda 1.0 message: {payload!r:.200}")
        return None
    return tuple(payload.get(field) for field in FIELDS)


def deliver_legacy(calls: list[tuple[Any, ...]], handler: MessageHandler, stop: Any) -> None:
    """Deliver ``calls``; PULL cannot put a message back: keep what the backend could not
    take, and try again (the handler waits a little longer each time) until ``stop``."""
    while calls and not stop.is_set():
        outcomes = handler.handle_legacy_many(calls)
        calls = [
            call
            for call, outcome in zip(calls, outcomes, strict=True)
            if outcome.verdict is Verdict.RETRY
        ]


if __name__ == "__main__":
    sys.exit(zmq_task())
