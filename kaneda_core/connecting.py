"""Opening a connection within what is left of a request's bound.

``http.client`` (and urllib3 on top of it) connects through
``socket.create_connection``, lazily, inside the first write: the name is resolved with
no bound at all (``getaddrinfo`` cannot be interrupted), and every address it resolves
to gets the whole timeout, so a host whose first addresses are black-holed holds a
request several times its timeout. Here each step ends by the request's deadline (a
``time.monotonic()`` value):

* a name is resolved in a daemon thread of Kaneda's, which the request waits for only
  until its deadline. A resolution still running when the next connection is opened is
  waited for again, not asked twice: a resolver that hangs holds one thread per
  :class:`Resolver` at most (a transport, a client's node, a RethinkDB host and port).
  Its answer serves the connection being opened and is then forgotten (caching is the
  system resolver's business); an answer that came after its request gave up is not
  used. An IP address is not resolved at all (``getaddrinfo`` with ``AI_NUMERICHOST``,
  in place). The lookup runs inside the fork gate (:mod:`kaneda_core.fork_gate`), as a
  send does: a fork waits for it (the resolver's locks, the modules it imports, such as
  ``encodings.idna``) rather than copy it half done.
* the addresses are tried in order, as ``socket.create_connection`` does, but each is
  given an equal share of the time left, and the last one all of it: a black-holed first
  address costs its share rather than the whole bound, and one refused at once leaves
  its share to the addresses after it. Each socket can be handed to the caller as it is
  made (``opened``), for a watchdog to shut down.
* the TLS handshake (or RethinkDB's) is the caller's, on the socket this returns, with
  the host's name (not the address) as the name the certificate must carry.

Used by kaneda-influx's transport, kaneda-elasticsearch's client nodes and
kaneda-rethink's connections.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from kaneda_core.fork_gate import inside_gate
from kaneda_core.forking import ThreadStartError, start_thread

#: One answer of ``getaddrinfo``: family, type, protocol, canonical name, address.
AddressInfo = tuple[Any, ...]


class RequestTimeout(TimeoutError):
    """The whole request took longer than the transport's timeout.

    ``connected`` when the server had accepted the connection: it is up, and slow.
    """

    connected = False


class NameNotResolved(OSError):
    """The host's name could not be resolved (the resolver answered with an error)."""


class ConnectFailed(ConnectionError):
    """No address of the host took the connection (each refused or failed), in time."""


class _Resolution:
    """One ``getaddrinfo`` call, run in a thread; ``done`` is set when it returns."""

    __slots__ = ("addresses", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.addresses: list[AddressInfo] = []
        self.error: Exception | None = None


class Resolver:
    """Resolves a host and port within a deadline, one resolution in flight at most.

    Safe to share between threads (a client's connections are opened by whichever
    thread needs one); the resolving thread touches only its own :class:`_Resolution`.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host  # [::1]
        self.port = port
        self.numeric = is_ip_address(self.host)
        self._pending: _Resolution | None = None
        self._lock = threading.Lock()

    def resolve(self, ends: float, within: str) -> list[AddressInfo]:
        """The host's addresses, by the deadline ``ends``; ``within`` ends the timeout's
        message ("within 1.0 s (timeout bounds the whole request)")."""
        if self.numeric:  # no lookup to wait for: answered in place
            numeric = _Resolution()
            self._lookup(numeric, socket.AI_NUMERICHOST)
            return self._answer(numeric)
        with self._lock:
            pending = self._pending
            if pending is None or pending.done.is_set():
                # None in flight; one that ended after its request gave up is not used.
                resolution = self._pending = _Resolution()
                start = True
            else:
                resolution, start = pending, False
        if start:
            try:
                # Inside the fork gate, as a send is: a fork waits for the lookup (its
                # resolver's locks, the modules it imports) rather than copy it half done.
                start_thread(inside_gate, "kaneda-resolve", self._lookup, resolution)
            except ThreadStartError:  # a thread limit reached: looked up here, unbounded
                self._lookup(resolution)
        if not resolution.done.wait(max(ends - time.monotonic(), 0.0)):
            raise RequestTimeout(
                f"resolving the name {self.host!r} gave no answer {within}; the resolver "
                "(DNS) is slow or unreachable"
            )
        with self._lock:
            if self._pending is resolution:
                self._pending = None
        return self._answer(resolution)

    def _answer(self, resolution: _Resolution) -> list[AddressInfo]:
        if resolution.error is not None:
            error = resolution.error
            if isinstance(error, socket.gaierror):
                reason = error.strerror or str(error)
                raise NameNotResolved(
                    f"could not resolve the name {self.host!r}: {reason}"
                ) from error
            raise error
        if not resolution.addresses:
            raise NameNotResolved(f"could not resolve the name {self.host!r}: no address")
        return resolution.addresses

    def _lookup(self, resolution: _Resolution, flags: int = 0) -> None:
        try:
            resolution.addresses = socket.getaddrinfo(
                self.host, self.port, 0, socket.SOCK_STREAM, 0, flags
            )
        except Exception as error:  # noqa: BLE001 - handed to the waiting request
            resolution.error = error
        finally:
            resolution.done.set()

    def forget(self) -> None:
        """Forget the resolution in flight: after a fork its thread is not in this process."""
        self._lock = threading.Lock()  # the parent's may have been held at the fork
        self._pending = None


def connect_to_any(
    host: str,
    port: int,
    addresses: list[AddressInfo],
    ends: float,
    within: str,
    opened: Callable[[socket.socket], None] | None = None,
) -> socket.socket:
    """A socket connected to the first of ``addresses`` that takes it, by ``ends``.

    Each attempt has an equal share of the time left (the last one all of it).
    ``opened``, if given, is called with each socket as it is made, before it connects
    (for a watchdog to shut it down). Raises :class:`RequestTimeout` when the time ran
    out, naming each address tried (a single one only once, when ``host`` is it);
    :class:`ConnectFailed` when every address failed before that.
    """
    host = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
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
            if opened is not None:
                opened(sock)
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
    target = connect_target(host, port)
    if out_of_time:
        raise RequestTimeout(f"could not connect to {target} {within}: {tried}")
    raise ConnectFailed(f"could not connect to {target}: {tried}")


def is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (``fe80::1%eth0`` too)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def show_address(address: tuple[Any, ...]) -> str:
    """``127.0.0.1:8086``, ``[::1]:8086``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def connect_target(host: str, port: int) -> str:
    """What an error names as the place connected to: ``127.0.0.1:8086`` (an address),
    ``'influx.internal' port 8086`` (a name)."""
    return show_address((host, port)) if is_ip_address(host) else f"{host!r} port {port}"
