"""Redis requests bounded as a whole, not each read: a watchdog breaks off the sockets.

redis-py's ``socket_timeout`` bounds one read, and an enqueue is several round trips
(a new connection's handshake, RQ's queue registration, the job itself): a Redis, or a
network, that answers each just in time, or a byte at a time, holds it for ever. No
redis-py option bounds a whole call. So every connection of the backend's pool is a
:class:`BoundedConnection`: each command it sends or reads is claimed by the
:class:`RedisRequest` its thread is running, and when that request's time is up the
watchdog (:func:`kaneda_core.deadline.deadline`) shuts down the sockets it claimed. The
blocked read fails at once; redis-py then drops that connection (the next request opens
a new one rather than read the rest of a half-read reply), and any later command of the
expired request fails before it is sent.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import TimeoutError
from redis.retry import Retry

if TYPE_CHECKING:
    from redis.connection import AbstractConnection

    _Base = AbstractConnection
else:
    _Base = object

_current = threading.local()


class RedisRequest:
    """One bounded call into Redis from one thread: ``with request: ...``.

    ``limit`` is the whole call's bound in seconds; :meth:`abort` (from the watchdog)
    breaks off every socket the call is using. Each socket read may take ``limit`` too:
    the watchdog, not the socket, ends a call that takes too long.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.expired = False
        self._lock = threading.Lock()
        self._claimed: list[BoundedConnection] = []
        self._outer: RedisRequest | None = None

    def claim(self, connection: BoundedConnection) -> None:
        """Note that ``connection`` works for this request (called in the request's thread)."""
        owner = connection.kaneda_request
        if owner is not self:
            if owner is not None:
                with owner._lock:  # out of reach of the previous request's watchdog
                    connection.kaneda_request = None
            with self._lock:
                if not self.expired:
                    connection.kaneda_request = self
                    self._claimed.append(connection)
        if self.expired:
            connection.disconnect()  # type: ignore[no-untyped-call]  # no half reply kept
            raise TimeoutError(f"the request took longer than its {self.limit:.2f} s")
        sock = connection._sock
        if sock is not None and sock.gettimeout() != self.limit:
            sock.settimeout(self.limit)

    def abort(self) -> None:
        """Shut down the sockets of this request's connections (from the watchdog's thread)."""
        with self._lock:
            self.expired = True
            for connection in self._claimed:
                sock = connection._sock if connection.kaneda_request is self else None
                if sock is not None:
                    with contextlib.suppress(OSError):  # closed meanwhile
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # TLS too: the raw one

    def __enter__(self) -> RedisRequest:
        self._outer = getattr(_current, "request", None)
        _current.request = self
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _current.request = self._outer
        with self._lock:
            for connection in self._claimed:
                if connection.kaneda_request is self:
                    connection.kaneda_request = None
            self._claimed.clear()


class _Claimed(_Base):
    """A redis-py connection whose every command is claimed by its thread's request."""

    #: The request this connection is working for, if any.
    kaneda_request: RedisRequest | None = None

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        request: RedisRequest | None = getattr(_current, "request", None)
        if request is not None:
            request.claim(self)  # type: ignore[arg-type]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        request: RedisRequest | None = getattr(_current, "request", None)
        if request is not None:
            request.claim(self)  # type: ignore[arg-type]
        return super().read_response(*args, **kwargs)


class BoundedConnection(_Claimed, Connection):
    """A TCP connection to Redis that a :class:`RedisRequest` can break off."""


class BoundedSSLConnection(_Claimed, SSLConnection):
    """A TLS connection to Redis that a :class:`RedisRequest` can break off."""


class BoundedUnixDomainSocketConnection(_Claimed, UnixDomainSocketConnection):
    """A Unix socket connection to Redis that a :class:`RedisRequest` can break off."""


_BOUNDED: dict[type[Any], type[Any]] = {
    Connection: BoundedConnection,
    SSLConnection: BoundedSSLConnection,
    UnixDomainSocketConnection: BoundedUnixDomainSocketConnection,
}


def bounded_client(redis_url: str, timeout: float) -> redis.Redis:
    """A Redis client whose calls run within a :class:`RedisRequest` can be broken off.

    ``timeout`` bounds connecting (and each read outside a request). redis-py does not
    retry a failed command here: the request's bound would not hold, and Kaneda retries.
    """
    pool = redis.ConnectionPool.from_url(
        redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    pool.connection_class = _BOUNDED.get(pool.connection_class, pool.connection_class)
    return redis.Redis(connection_pool=pool)
