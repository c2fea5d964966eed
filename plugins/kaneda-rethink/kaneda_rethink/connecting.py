"""Opening a RethinkDB connection within the backend's timeout, every step of it.

The driver's ``r.connect(timeout=...)`` bounds less than it says:

* the name is resolved by ``socket.create_connection``, with no bound at all
  (``getaddrinfo`` cannot be interrupted);
* the handshake's answers are read a byte at a time against a deadline that, once
  passed, becomes a zero socket timeout: each read then succeeds as long as bytes are
  waiting, so a server that streams bytes without ever ending its answer (a NUL) holds
  the connect for ever, and the answer grows without limit.

:class:`BoundedConnection`, the driver's connection class with the opening of its
socket replaced (``r.connection_type``), opens the socket itself and runs the handshake
on it:

* the name is resolved and the addresses connected to by :mod:`kaneda_core.connecting`
  (kaneda-influx's and kaneda-elasticsearch's code too): the lookup runs in a daemon
  thread of Kaneda's, inside the fork gate, waited for until the deadline only. A
  resolution still running when the next connect starts is waited for again, not asked
  twice: one :class:`~kaneda_core.connecting.Resolver` per host and port, so a resolver
  that hangs holds one thread per host and port at most. An IP address is not looked up
  at all. The addresses are tried in order, each given an equal share of the time left
  (the last one all of it).
* each handshake answer is read with the time left as its socket timeout, and may be
  :data:`MAX_ANSWER` bytes long at most; the server's PBKDF2 iteration count is refused
  above :data:`MAX_ITERATIONS` (the password's hashing would otherwise hold the thread,
  and no socket timeout reaches it).
* the whole runs under a :func:`kaneda_core.deadline.deadline` watchdog that shuts the
  socket down, a backstop for a step that would not return in time.

Queries then run on the driver's own code, each under the backend's deadline.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

from rethinkdb import net
from rethinkdb.errors import ReqlDriverError, ReqlTimeoutError

from kaneda_core.connecting import (
    AddressInfo,
    ConnectFailed,
    NameNotResolved,
    RequestTimeout,
    Resolver,
    connect_target,
    connect_to_any,
)
from kaneda_core.deadline import deadline
from kaneda_core.forking import reinit_after_fork

#: The longest handshake answer taken, NUL included (a server's are ~200 bytes).
MAX_ANSWER = 64 * 1024
#: The most PBKDF2 iterations a server may ask the password to be hashed with (RethinkDB
#: asks a few thousand unless set otherwise for a user; a million took a quarter second
#: here, hashlib's OpenSSL PBKDF2-SHA256 on one core).
MAX_ITERATIONS = 1_000_000


class ConnectTimeout(ReqlTimeoutError):  # type: ignore[misc]
    """Connecting took longer than the timeout; the message says which step."""

    def __init__(self, message: str) -> None:
        ReqlDriverError.__init__(self, message)


#: The resolver of each (host, port) connected to, shared by every connect to it: one
#: lookup in flight per host and port. As many as the hosts this process connects to.
_resolvers: dict[tuple[str, int], Resolver] = {}
_resolvers_lock = threading.Lock()


@reinit_after_fork
def _forget_resolvers() -> None:
    # The resolving threads are not in a forked child, and the lock may be held.
    global _resolvers_lock
    _resolvers_lock = threading.Lock()
    _resolvers.clear()


def resolver_for(host: str, port: int) -> Resolver:
    """The :class:`~kaneda_core.connecting.Resolver` every connect to ``host`` and
    ``port`` shares."""
    with _resolvers_lock:
        resolver = _resolvers.get((host, port))
        if resolver is None:
            resolver = _resolvers[(host, port)] = Resolver(host, port)
        return resolver


def resolve(host: str, port: int, ends: float, within: str) -> list[AddressInfo]:
    """``host``'s addresses, by the deadline ``ends`` (a ``time.monotonic()`` value);
    ``within`` ends the timeout's message. Raises :class:`ConnectTimeout` when the
    lookup gave no answer in time, a ``ReqlDriverError`` when it failed."""
    try:
        return resolver_for(host, port).resolve(ends, within)
    except RequestTimeout as error:
        raise ConnectTimeout(str(error)) from None
    except NameNotResolved as error:
        raise ReqlDriverError(str(error)) from None
    except Exception as error:  # noqa: BLE001 - the lookup's own (a label too long)
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
        raise ReqlDriverError(f"could not resolve the name {host!r}: {reason}") from None


class _Opening:
    """The socket being opened, for the watchdog to shut down once time is up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.aborted = False
        #: What was under way: "connect", then "handshake" (what a timeout names).
        self.step = "connect"

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socket = sock
            aborted = self.aborted
        if aborted:  # time was up before it was made: it must not block either
            _shut(sock)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            sock = self._socket
        if sock is not None:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class BoundedConnection(net.Connection):  # type: ignore[misc]
    """The driver's connection, opened within its timeout in all (see the module's
    docstring): ``r.connection_type = BoundedConnection``, then ``r.connect(...)``.

    A connection given ``ssl`` options is opened by the driver's own code, as before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        net.Connection.__init__(self, _BoundedInstance, *args, **kwargs)


class _BoundedInstance(net.ConnectionInstance):  # type: ignore[misc]
    def connect(self, timeout: float) -> Any:
        """Resolve, connect and shake hands within ``timeout`` seconds in all.

        Raises a ``ReqlDriverError`` (``ReqlAuthError`` for refused credentials,
        :class:`ConnectTimeout` when time ran out) naming the step that failed.
        """
        connection = self._parent
        if connection.ssl:
            # TLS (r.connect(ssl=...), never the backend's): the driver's own connect,
            # which verifies the certificate and its host name; its bound is its own.
            return net.ConnectionInstance.connect(self, timeout)
        host = connection.host
        host = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host  # [::1]
        port = connection.port
        within = f"within {timeout:g} s (timeout bounds connecting)"
        ends = time.monotonic() + timeout
        opening = _Opening()
        sock: socket.socket | None = None
        try:
            with deadline(timeout, opening.abort) as watch:
                try:
                    addresses = resolve(host, port, ends, within)
                    sock = _connect_to_any(host, port, addresses, ends, within, opening)
                    opening.step = "handshake"
                    self._socket = _HandshakenSocket(self, sock, ends, within)
                    return connection
                except (OSError, ReqlDriverError) as error:
                    if watch.expired and not isinstance(error, ConnectTimeout):
                        # The watchdog shut the socket down: the step's own bound did
                        # not hold (the timeout, not the error it caused, is the news).
                        if opening.step == "handshake":
                            raise ConnectTimeout(_no_handshake(host, port, within)) from None
                        raise ConnectTimeout(
                            f"could not connect to {connect_target(host, port)} {within}"
                        ) from None
                    raise
        except BaseException:
            if sock is not None:
                sock.close()
            raise


def _connect_to_any(
    host: str,
    port: int,
    addresses: list[AddressInfo],
    ends: float,
    within: str,
    opening: _Opening,
) -> socket.socket:
    """A socket connected to the first of ``addresses`` that takes it, by ``ends``
    (:func:`kaneda_core.connecting.connect_to_any`, its errors the driver's)."""
    try:
        return connect_to_any(host, port, addresses, ends, within, opening.register)
    except RequestTimeout as error:
        raise ConnectTimeout(str(error)) from None
    except ConnectFailed as error:
        raise ReqlDriverError(str(error)) from None


class _HandshakenSocket(net.SocketWrapper):  # type: ignore[misc]
    """The driver's socket wrapper on a socket Kaneda connected, its handshake run here
    (the driver's own ``__init__`` would connect and read without a bound)."""

    def __init__(self, parent: Any, sock: socket.socket, ends: float, within: str) -> None:
        connection = parent._parent
        self.host = connection.host
        self.port = connection.port
        self.ssl = connection.ssl
        self._read_buffer = None
        self._socket = sock
        self._within = within
        timeout = connection.connect_timeout
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        handshake = connection.handshake
        handshake.reset()
        response: bytes | None = None
        while True:
            if handshake._state == 2 and response is not None:
                self._check_iterations(response)
            try:
                request = handshake.next_message(response)
            except ReqlDriverError:  # refused credentials, an error the server sent
                raise
            except Exception as error:  # noqa: BLE001 - an answer the driver cannot read
                raise ReqlDriverError(
                    f"the server at {connect_target(self.host, self.port)} answered RethinkDB's "
                    f"handshake with something it cannot read ({type(error).__name__}: "
                    f"{error})"
                ) from None
            if request is None:
                break
            if request != "":
                self._send(request, ends)
            response = self._answer(ends)
        sock.settimeout(timeout)  # as the driver leaves it: its sends are bounded by it

    def _left(self, ends: float) -> float:
        left = ends - time.monotonic()
        if left <= 0:
            raise ConnectTimeout(_no_handshake(self.host, self.port, self._within))
        return left

    def _send(self, data: bytes, ends: float) -> None:
        self._socket.settimeout(self._left(ends))
        try:
            self._socket.sendall(data)
        except TimeoutError:
            self._left(0.0)  # raises ConnectTimeout
        except OSError as error:
            raise ReqlDriverError(
                f"the connection to {connect_target(self.host, self.port)} failed during "
                f"RethinkDB's handshake: {error.strerror or error}"
            ) from None

    def _answer(self, ends: float) -> bytes:
        """One NUL-terminated answer, without its NUL; never a byte past it (peeked)."""
        answer = bytearray()
        while True:
            self._socket.settimeout(self._left(ends))
            try:
                peeked = self._socket.recv(min(4096, MAX_ANSWER - len(answer)), socket.MSG_PEEK)
                end = peeked.find(b"\0")
                taken = self._socket.recv(len(peeked) if end < 0 else end + 1) if peeked else b""
            except TimeoutError:
                self._left(0.0)  # raises ConnectTimeout
                raise  # not reached
            except OSError as error:
                raise ReqlDriverError(
                    f"the connection to {connect_target(self.host, self.port)} failed during "
                    f"RethinkDB's handshake: {error.strerror or error}"
                ) from None
            if not taken:
                raise ReqlDriverError(
                    f"the server at {connect_target(self.host, self.port)} closed the connection "
                    "during RethinkDB's handshake"
                )
            answer += taken
            if taken[-1:] == b"\0":
                return bytes(answer[:-1])
            if len(answer) >= MAX_ANSWER:
                raise ReqlDriverError(
                    f"the server at {connect_target(self.host, self.port)} sent over {MAX_ANSWER} "
                    "bytes without ending its handshake answer (RethinkDB's are a few "
                    "hundred)"
                )

    def _check_iterations(self, response: bytes) -> None:
        """Refuse a PBKDF2 iteration count no timeout could bound the hashing of."""
        try:
            fields = json.loads(response)["authentication"]
            iterations = int(dict(f.split("=", 1) for f in fields.split(","))["i"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # not a well-formed answer: the driver says what is wrong with it
        if iterations > MAX_ITERATIONS:
            raise ReqlDriverError(
                f"the server at {connect_target(self.host, self.port)} asks for the password to be "
                f"hashed with {iterations} PBKDF2 iterations; Kaneda does at most "
                f"{MAX_ITERATIONS}"
            )


def _no_handshake(host: str, port: int, within: str) -> str:
    target = connect_target(host, port)
    return f"the server at {target} did not complete RethinkDB's handshake {within}"
