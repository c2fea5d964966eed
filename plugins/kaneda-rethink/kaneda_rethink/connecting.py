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

* the name is resolved in a daemon thread of Kaneda's, waited for until the deadline
  only. A resolution still running when the next connect starts is waited for again,
  not asked twice: a resolver that hangs holds one thread per host and port at most.
  An IP address is not looked up at all.
* the addresses are tried in order, each given an equal share of the time left (the
  last one all of it).
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
import ipaddress
import json
import socket
import threading
import time
from typing import Any

from rethinkdb import net
from rethinkdb.errors import ReqlDriverError, ReqlTimeoutError

from kaneda_core.deadline import deadline
from kaneda_core.fork_gate import inside_gate
from kaneda_core.forking import ThreadStartError, reinit_after_fork, start_thread

#: One answer of ``getaddrinfo``: family, type, protocol, canonical name, address.
AddressInfo = tuple[Any, ...]

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


class _Resolution:
    """One ``getaddrinfo`` call, run in a thread; ``done`` is set when it returns."""

    __slots__ = ("addresses", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.addresses: list[AddressInfo] = []
        self.error: Exception | None = None


#: The resolution in flight for each (host, port), shared by every connect to it.
_pending: dict[tuple[str, int], _Resolution] = {}
_pending_lock = threading.Lock()


@reinit_after_fork
def _forget_resolutions() -> None:
    # The resolving threads are not in a forked child, and the lock may be held.
    global _pending_lock
    _pending_lock = threading.Lock()
    _pending.clear()


def resolve(host: str, port: int, ends: float, within: str) -> list[AddressInfo]:
    """``host``'s addresses, by the deadline ``ends`` (a ``time.monotonic()`` value);
    ``within`` ends the timeout's message.

    A resolution still running is waited for again, not asked twice; one that ended
    after every connect waiting for it gave up is not used (the resolver's cache is the
    system's business).
    """
    if is_ip_address(host):  # nothing to wait for: answered in place
        numeric = _Resolution()
        _lookup(numeric, host, port, socket.AI_NUMERICHOST)
        return _answer(numeric, host)
    key = (host, port)
    with _pending_lock:
        resolution = _pending.get(key)
        fresh = resolution is None or resolution.done.is_set()
        if fresh:
            resolution = _pending[key] = _Resolution()
    assert resolution is not None
    if fresh:
        try:
            # Inside the fork gate, as a send is: a fork waits for the lookup (its
            # resolver's locks, the modules it imports) rather than copy it half done.
            start_thread(inside_gate, "kaneda-resolve", _lookup, resolution, host, port)
        except ThreadStartError:  # a thread limit reached: looked up here, unbounded
            _lookup(resolution, host, port)
    if not resolution.done.wait(max(ends - time.monotonic(), 0.0)):
        raise ConnectTimeout(
            f"resolving the name {host!r} gave no answer {within}; the resolver (DNS) is "
            "slow or unreachable"
        )
    with _pending_lock:
        if _pending.get(key) is resolution:
            del _pending[key]
    return _answer(resolution, host)


def _answer(resolution: _Resolution, host: str) -> list[AddressInfo]:
    error = resolution.error
    if error is not None:
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
        raise ReqlDriverError(f"could not resolve the name {host!r}: {reason}")
    if not resolution.addresses:
        raise ReqlDriverError(f"could not resolve the name {host!r}: no address")
    return resolution.addresses


def _lookup(resolution: _Resolution, host: str, port: int, flags: int = 0) -> None:
    try:
        resolution.addresses = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, flags)
    except Exception as error:  # noqa: BLE001 - handed to the waiting connect
        resolution.error = error
    finally:
        resolution.done.set()


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
                            f"could not connect to {_target(host, port)} {within}"
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
    """A socket connected to the first of ``addresses`` that takes it, by ``ends``."""
    failures: list[str] = []
    out_of_time = False
    named = not is_ip_address(host) or len(addresses) > 1  # else the target says it
    for index, (family, kind, protocol, _, address) in enumerate(addresses):
        where = f"{show_address(address)}: " if named else ""
        left = ends - time.monotonic()
        if left <= 0:
            out_of_time = True
            untried = len(addresses) - index
            failures.append(f"{untried} more address{'es' if untried > 1 else ''} not tried")
            break
        last = index == len(addresses) - 1
        share = left if last else left / (len(addresses) - index)
        sock = None
        try:
            sock = socket.socket(family, kind, protocol)
            opening.register(sock)
            sock.settimeout(share)
            sock.connect(address)
        except TimeoutError:
            failures.append(f"{where}no answer within {share:.2f} s")
            out_of_time = last
        except OSError as error:
            failures.append(f"{where}{error.strerror or error}")
        else:
            return sock
        if sock is not None:
            sock.close()
    tried = "; ".join(failures)
    target = _target(host, port)
    if out_of_time:
        raise ConnectTimeout(f"could not connect to {target} {within}: {tried}")
    raise ReqlDriverError(f"could not connect to {target}: {tried}")


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
                    f"the server at {_target(self.host, self.port)} answered RethinkDB's "
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
                f"the connection to {_target(self.host, self.port)} failed during "
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
                    f"the connection to {_target(self.host, self.port)} failed during "
                    f"RethinkDB's handshake: {error.strerror or error}"
                ) from None
            if not taken:
                raise ReqlDriverError(
                    f"the server at {_target(self.host, self.port)} closed the connection "
                    "during RethinkDB's handshake"
                )
            answer += taken
            if taken[-1:] == b"\0":
                return bytes(answer[:-1])
            if len(answer) >= MAX_ANSWER:
                raise ReqlDriverError(
                    f"the server at {_target(self.host, self.port)} sent over {MAX_ANSWER} "
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
                f"the server at {_target(self.host, self.port)} asks for the password to be "
                f"hashed with {iterations} PBKDF2 iterations; Kaneda does at most "
                f"{MAX_ITERATIONS}"
            )


def is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (``fe80::1%eth0`` too)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def show_address(address: tuple[Any, ...]) -> str:
    """``127.0.0.1:28015``, ``[::1]:28015``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _no_handshake(host: str, port: int, within: str) -> str:
    return f"the server at {_target(host, port)} did not complete RethinkDB's handshake {within}"


def _target(host: str, port: int) -> str:
    # "127.0.0.1:28015" (an address), "'db.internal' port 28015" (a name)
    return show_address((host, port)) if is_ip_address(host) else f"{host!r} port {port}"
