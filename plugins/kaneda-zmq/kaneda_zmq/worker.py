"""The ZeroMQ worker: binds a ROUTER socket, delivers what producers send, answers each.

It sleeps in ``poll`` until a message arrives (or ``poll_interval`` passes, to notice
that it was asked to stop): an idle worker costs no CPU. It takes up to
``max_messages`` waiting messages at a time, delivers them together and answers every
producer with its message's verdict.

A frame over ``max_message_bytes`` never reaches it: libzmq drops the connection of the
peer that sends one (ZMQ_MAXMSGSIZE), before it holds the frame, and that peer's
message gets no answer. Producers send nothing larger (they split a batch over the
bound). The bound is per frame: libzmq holds every frame of a message before the worker
sees any, so a message of many frames (a producer's have two) is bounded by nothing but
the peers that can connect.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

import zmq

from kaneda_core.errors import ConfigurationError
from kaneda_core.redact import redact_url
from kaneda_core.worker import MessageHandler, Outcome, Verdict, current_handler

from . import protocol

log = logging.getLogger("kaneda.zmq")

#: How long a stopping worker's answers may take to leave (milliseconds).
ANSWER_LINGER_MS = 1000


class ZMQWorker:
    """Delivers the batches that arrive on ``endpoints`` through ``handler``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        handler: MessageHandler,
        *,
        max_messages: int = 20,
        poll_interval: float = 0.5,
        max_message_bytes: int = protocol.MAX_MESSAGE_BYTES,
    ) -> None:
        self.endpoints = list(endpoints)
        self.handler = handler
        self.max_messages = max_messages
        self.max_message_bytes = protocol.check_message_bytes(max_message_bytes, "ZMQWorker")
        self.poll_interval = poll_interval
        self.bound = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set."""
        context: zmq.Context[Any] = zmq.Context()
        socket = context.socket(zmq.ROUTER)
        socket.linger = 0
        # Set before bind: a connection takes the options the socket had when it came.
        socket.maxmsgsize = self.max_message_bytes
        socket.rcvhwm = protocol.RECEIVE_QUEUE
        try:
            for endpoint in self.endpoints:
                try:
                    socket.bind(endpoint)
                except zmq.ZMQError as error:
                    # One line for the operator, not a traceback: the usual causes are
                    # another worker on the endpoint, or an address not of this machine.
                    raise ConfigurationError(
                        f"The ZeroMQ worker cannot listen on {redact_url(endpoint)}: {error}. "
                        "Is another worker (or program) listening there, and is the address "
                        "one of this machine's?"
                    ) from None
            log.info("Kaneda ZeroMQ worker listening on %s", ", ".join(self.endpoints))
            self.bound.set()
            timeout = int(self.poll_interval * 1000)
            while not stop.is_set():
                if socket.poll(timeout):
                    self._serve_waiting(socket)
        finally:
            self._put_back_waiting(socket)
            socket.close(linger=ANSWER_LINGER_MS)
            context.term()

    def _put_back_waiting(self, socket: zmq.Socket[Any]) -> None:
        """Answer "send it again" to every message waiting unread: the worker is stopping.

        Closed with the socket, they would be lost, and each producer would wait out its
        timeout before sending the batch to another worker (or to this one restarted).
        """
        outcome = Outcome(Verdict.RETRY, "the worker is stopping: send it again")
        while True:
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:  # none left (or the socket was never bound)
                return
            if len(frames) >= 2:
                self._answer(socket, frames[0], frames[1], outcome)

    def _serve_waiting(self, socket: zmq.Socket[Any]) -> None:
        requests: list[tuple[bytes, bytes]] = []
        payloads: list[bytes] = []
        taken = 0
        for _ in range(self.max_messages):
            if taken >= self.max_message_bytes:  # the rest waits for the next round
                break
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 3:
                outcome = self.handler.reject(
                    f"a ZeroMQ message must have 2 frames (id, batch), got {len(frames) - 1}"
                )
                if len(frames) >= 2:
                    self._answer(socket, frames[0], frames[1], outcome)
                continue
            identity, message_id, payload = frames
            taken += len(payload)
            requests.append((identity, message_id))
            payloads.append(payload)
        if not payloads:
            return
        try:
            outcomes = self.handler.handle_many(payloads)
        except Exception:  # the worker goes on; the producers send again
            log.exception("Kaneda ZeroMQ worker: delivering %d messages failed", len(payloads))
            outcomes = [Outcome(Verdict.RETRY, "the worker failed delivering it")] * len(payloads)
        for (identity, message_id), outcome in zip(requests, outcomes, strict=True):
            self._answer(socket, identity, message_id, outcome)

    @staticmethod
    def _answer(
        socket: zmq.Socket[Any], identity: bytes, message_id: bytes, outcome: Outcome
    ) -> None:
        reason = outcome.reason.encode("utf-8", "replace")[: protocol.MAX_REASON]
        # A producer that went away meanwhile is skipped by the ROUTER socket.
        socket.send_multipart([identity, message_id, outcome.verdict.value.encode(), reason])


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (when called in the main thread)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():

        def request_stop(signum: int, _frame: object) -> None:
            log.info("Kaneda ZeroMQ worker stopping (signal %d)", signum)
            stop.set()
            handler = current_handler()
            if handler is not None:  # a message at hand waiting for a store that is down
                handler.stop_waiting()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    return stop
