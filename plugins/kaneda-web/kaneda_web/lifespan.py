"""Delivering queued metrics when an ASGI server shuts down, through the lifespan protocol.

Kaneda delivers what is still queued at interpreter exit, but uvicorn ends its process
(and each gunicorn worker running it) by raising again the signal that stopped it, and
then no exit handler runs. What an ASGI server does run at shutdown is the lifespan
protocol: once the last request is over it sends ``lifespan.shutdown`` and waits for the
application's answer. :func:`serve_lifespan` flushes just before that answer reaches the
server, for a bounded time, so a dead backend cannot hold the shutdown.

The application's own lifespan is left as it is: it receives every message, untouched
and in order, the server hears every answer it sends, untouched, and its startup or
shutdown failures reach the server as before. An application that does not speak the
protocol (it raises on the lifespan scope, as Django does, or returns at once) is
answered for, so the server still starts, and still says when it shuts down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from kaneda_core import ConfigurationError, Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: Delivers what is queued within the seconds given; returns how many are still waiting.
Flush = Callable[[float], int]

#: How long shutdown waits, at most, for the queued metrics to be delivered.
SHUTDOWN_TIMEOUT = 5.0

STARTUP, SHUTDOWN = "lifespan.startup", "lifespan.shutdown"
STARTUP_COMPLETE, STARTUP_FAILED = "lifespan.startup.complete", "lifespan.startup.failed"
SHUTDOWN_COMPLETE, SHUTDOWN_FAILED = "lifespan.shutdown.complete", "lifespan.shutdown.failed"


def check_shutdown_timeout(value: Any, *, none_allowed: bool = False) -> None:
    """Refuse, naming it, a ``shutdown_timeout`` that is not a number of seconds >= 0."""
    if value is None and none_allowed:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        expected = "a number of seconds >= 0" + (" or None" if none_allowed else "")
        raise ConfigurationError(f"shutdown_timeout must be {expected}, got {value!r}")


async def serve_lifespan(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    flush: Flush,
    timeout: float,
    logger: logging.Logger,
) -> None:
    """Run ``app``'s lifespan; ``flush(timeout)`` before the server hears shutdown ended.

    ``app`` gets ``scope`` and every message as the server sent it, and the server every
    message ``app`` sends. When ``app`` raises before answering anything, or returns with
    events unanswered, this answers them (``complete``), flushing at shutdown. When
    ``app`` fails after answering (``startup.failed``, a crash), its exception goes to
    the server, as it would without this.
    """
    taken: list[str] = []  # what the application received, by type
    answered: list[str] = []  # what it sent

    async def receive_noted() -> Message:
        message = await receive()
        taken.append(message["type"])
        return message

    async def send_after_flush(message: Message) -> None:
        if message["type"] in (SHUTDOWN_COMPLETE, SHUTDOWN_FAILED):
            # Requests are over; a bounded wait here delays only the exit.
            await _flush_at_shutdown(flush, timeout, logger)
        answered.append(message["type"])
        await send(message)

    try:
        await app(scope, receive_noted, send_after_flush)
    except Exception as error:
        if answered:
            # It speaks the protocol: its failure is the server's to report.
            if SHUTDOWN in taken and not {SHUTDOWN_COMPLETE, SHUTDOWN_FAILED} & set(answered):
                await _flush_at_shutdown(flush, timeout, logger)
            raise
        logger.info(
            "The application does not speak the ASGI lifespan protocol (%s: %s); "
            "Kaneda answers the server's lifespan events for it",
            type(error).__name__,
            error,
        )
    if {STARTUP_FAILED, SHUTDOWN_COMPLETE, SHUTDOWN_FAILED} & set(answered):
        return  # the server has its last answer
    # What the application left unanswered, answered in its place.
    if STARTUP_COMPLETE not in answered:
        if STARTUP not in taken:
            await _receive_until(receive, STARTUP)
        await send({"type": STARTUP_COMPLETE})
    if SHUTDOWN not in taken:
        await _receive_until(receive, SHUTDOWN)
    await _flush_at_shutdown(flush, timeout, logger)
    await send({"type": SHUTDOWN_COMPLETE})


async def _receive_until(receive: Receive, kind: str) -> None:
    while (await receive())["type"] != kind:
        pass


async def _flush_at_shutdown(flush: Flush, timeout: float, logger: logging.Logger) -> None:
    """Run ``flush(timeout)`` off the event loop; log, never raise, what it could not do."""
    try:
        left = await _off_the_loop(flush, timeout)
    except Exception as error:  # noqa: BLE001 - the server's shutdown must go on
        logger.error("Kaneda could not flush the queued metrics at shutdown: %s", error)
        return
    if left:
        logger.error(
            "Kaneda: %d metrics were still queued %s seconds into the server's shutdown "
            "(shutdown_timeout); unless a disk buffer keeps them, a process ending now "
            "loses them",
            left,
            timeout,
        )


async def _off_the_loop(flush: Flush, timeout: float) -> int:
    import asyncio  # only ASGI applications pay for it

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): the wait is bounded, take it here
        return flush(timeout)
    # A worker thread: the loop goes on serving the server's own shutdown meanwhile.
    return await asyncio.to_thread(flush, timeout)


class FlushAtShutdown:
    """Wraps an ASGI application: ``metrics`` are flushed when the server shuts down.

    For an application reporting through :class:`kaneda_core.Metrics` of its own,
    without :class:`~kaneda_web.ASGIMiddleware` (which does this for its own
    ``Metrics``): ``app = FlushAtShutdown(app, metrics, other_metrics)``. HTTP and
    WebSocket scopes go to ``app`` untouched; lifespan events too, as
    :func:`serve_lifespan` says, the metrics getting at most ``shutdown_timeout``
    seconds in all before the server hears ``lifespan.shutdown.complete``. What it
    could not do is logged on the ``kaneda_web`` logger.
    """

    #: The logger the lifespan's notes and failures go to.
    logger_name = "kaneda_web"

    def __init__(
        self, app: ASGIApp, *metrics: Metrics, shutdown_timeout: float = SHUTDOWN_TIMEOUT
    ) -> None:
        for given in metrics:
            if not isinstance(given, Metrics):
                raise ConfigurationError(
                    f"FlushAtShutdown flushes kaneda_core.Metrics, got a {type(given).__name__}"
                )
        self.app = app
        self.metrics = metrics
        check_shutdown_timeout(shutdown_timeout)
        self.shutdown_timeout = float(shutdown_timeout)
        self.logger = logging.getLogger(self.logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await serve_lifespan(
            self.app, scope, receive, send, self.flush, self.shutdown_timeout, self.logger
        )

    def flush(self, timeout: float) -> int:
        """Flush every ``Metrics`` within ``timeout`` seconds in all; how many are left."""
        return flush_all(self.metrics, timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.app!r}>"


def flush_all(metrics: Any, timeout: float) -> int:
    """Flush each of ``metrics`` once, within ``timeout`` seconds in all; how many are left."""
    import time

    deadline = time.monotonic() + timeout
    left = 0
    for each in {id(m): m for m in metrics}.values():
        left += each.flush(max(0.0, deadline - time.monotonic()))
    return left


__all__ = [
    "SHUTDOWN_TIMEOUT",
    "FlushAtShutdown",
    "check_shutdown_timeout",
    "flush_all",
    "serve_lifespan",
]
