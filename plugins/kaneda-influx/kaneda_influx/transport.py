"""One keep-alive HTTP(S) connection to InfluxDB, each request bounded as a whole.

The plugin writes with this rather than through ``influxdb.InfluxDBClient``'s requests
session for two reasons. A socket timeout bounds each read, so a server that answers a
byte at a time keeps a request open for ever; here a watchdog
(:func:`kaneda_core.deadline.deadline`) shuts the socket down when the whole request has
taken ``timeout`` seconds. And after ``os.fork()`` the child must never write on the
parent's connection: :meth:`HTTPTransport.forget` drops it without a word on the wire.

A new connection is opened within the bound of the request that needs it: resolving the
name, connecting to each address in turn and the TLS handshake take what is left of it
(:mod:`kaneda_core.connecting`), and an error says which of them failed. A kept-alive
connection is used as it is.

An answer is read up to a size (:data:`MAX_ANSWER_BYTES`, more for a write with a large
body): a larger one is not InfluxDB's, and is not read further (:class:`AnswerTooLarge`).

A request can also be sent and its answer read later (:meth:`HTTPTransport.send`, then
:meth:`Request.answer`): the backend builds the next part of a batch while the server
works on the one in flight. The timeout then bounds the time spent sending the request
and waiting for its answer, in all; the work done in between is not counted.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from kaneda_core.deadline import deadline, request_seconds
from kaneda_core.forking import abandon

from .connecting import RequestTimeout, Resolver, connect_to_any, show_address

__all__ = [
    "ANSWER_BYTES_PER_BODY_BYTE",
    "MAX_ANSWER_BYTES",
    "AnswerTooLarge",
    "BodyCutOff",
    "HTTPTransport",
    "NotInfluxAnswer",
    "Redirected",
    "Request",
    "RequestTimeout",
]

#: Errors of a connection that was reused after the server closed it: sent again once.
#: Over TLS a server that went away shows as an EOF in the TLS layer.
_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
#: Errors of a request body cut off by the server: it may have answered first (influxd
#: answers 413 past its max-body-size, then closes the connection on the rest).
_CUT = (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError)
#: A body this large, cut off on a new connection with no answer to read, is taken for
#: one the server refused for its size; a smaller one for a network failure.
LARGE_BODY = 1024 * 1024
#: The largest answer read to a request without a body (a query): InfluxDB's answers to the
#: plugin's queries are far smaller (``SHOW FIELD KEYS`` of a measurement of 150,000 fields
#: is about 3 MB). A larger answer, or one that says it is larger (its Content-Length), is
#: not read further: the connection is dropped and :class:`AnswerTooLarge` raised, which the
#: backend retries. Reading the whole of an endless answer (a proxy or a lookalike streaming
#: for ever) took memory at the speed of the network until the timeout: GBs.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: A request's answer may be larger than MAX_ANSWER_BYTES by this many bytes per byte of its
#: line protocol: influxd's 400 to a write repeats each line it could not parse, escaped
#: (about three times the body for short lines), and ends with what the backend reads.
ANSWER_BYTES_PER_BODY_BYTE = 4
#: An answer's body is read this many bytes at a time, the time left checked between reads.
_PIECE = 64 * 1024
#: Redirect statuses: an answer that points elsewhere (Kaneda does not follow it).
REDIRECTS = frozenset((301, 302, 303, 307, 308))


class BodyCutOff(InfluxDBClientError):  # type: ignore[misc]
    """The server cut a new connection off in the middle of a large request body (a
    broken pipe while sending, or a reset: part of the body was left unread) and gave
    no answer to read: what InfluxDB does past its max-body-size. Code 413, as its answer."""

    def __init__(self, size: int) -> None:
        super().__init__(
            f"the server closed the connection while a request of {size} bytes was being "
            "sent, without an answer (InfluxDB does so past its [http] max-body-size)",
            413,
        )
        self.size = size


class NotInfluxAnswer(InfluxDBServerError):  # type: ignore[misc]
    """A successful status with what InfluxDB does not answer: a proxy's page (a load
    balancer's maintenance or login page), a lookalike's. Retried, as a 5xx is."""


class AnswerTooLarge(InfluxDBServerError):  # type: ignore[misc]
    """An answer larger than ``cap`` bytes (or whose Content-Length says so): not read
    further, and its connection dropped. Retried, as a 5xx is."""

    def __init__(self, cap: int, status: int, declared: int | None = None) -> None:
        said = f" (it declared {declared} bytes)" if declared is not None else ""
        super().__init__(
            f"the server's answer ({status}) was larger than {cap} bytes{said}: not InfluxDB's "
            "answer, so it was not read further and the connection was dropped (is a proxy "
            "in between?)"
        )
        self.cap = cap
        self.status = status


class Redirected(InfluxDBClientError):  # type: ignore[misc]
    """The server answered with a redirect (``code``) to ``location``."""

    def __init__(self, content: str, code: int, location: str | None) -> None:
        super().__init__(content, code)
        self.location = location


class HTTPTransport:
    """POSTs to InfluxDB's HTTP API over one reused connection (one thread at a time)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool = False,
        verify_ssl: bool = True,
        timeout: float = 0.3,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.verify_ssl = verify_ssl
        self.timeout = timeout
        self.username = username
        self._headers: dict[str, str] = {}
        if username is not None or password is not None:
            token = base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._connection: http.client.HTTPConnection | None = None
        self._resolver = Resolver(host, port)
        #: The socket of a connection being opened (its TLS handshake): the watchdog's.
        self._opening: socket.socket | None = None

    def post(
        self,
        endpoint: str,
        params: dict[str, str],
        body: bytes = b"",
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """POST ``body`` to ``/endpoint?params``; the answer's body, or raise.

        An answer of 4xx raises ``InfluxDBClientError`` (with ``.code``), 5xx
        ``InfluxDBServerError``; a network failure raises ``OSError`` or
        ``http.client.HTTPException``; a request longer than ``timeout`` seconds in all
        raises :class:`RequestTimeout` (``timeout`` overrides it for this request).
        ``headers`` are added to the request's (``Content-Encoding``, say).
        """
        return self.send(endpoint, params, body, timeout=timeout, headers=headers).answer()

    def send(
        self,
        endpoint: str,
        params: dict[str, str],
        body: bytes = b"",
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        expect: int | None = None,
        size: int | None = None,
    ) -> Request:
        """Send a POST without waiting for its answer: :meth:`Request.answer` reads it.

        One request at a time: read its answer before sending the next. Raises what
        :meth:`post` raises when the request cannot be sent. With ``expect``, any other
        successful status is an error too (a write is answered 204 by InfluxDB). The
        request's bound is its timeout plus a second per MB of ``size`` (the body before
        compression; by default the body's length): see :func:`request_seconds`.
        """
        request = Request(
            self,
            f"/{endpoint}?{urlencode(params)}",
            body,
            {**self._headers, "Content-Type": "application/octet-stream", **(headers or {})},
            self.timeout if timeout is None else timeout,
            len(body) if size is None else size,
            expect,
        )
        request.send()
        return request

    def query(
        self, q: str, database: str | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run InfluxQL through ``POST /query``; its first result.

        A successful answer that is not InfluxDB's JSON (a proxy's HTML page) raises
        :class:`NotInfluxAnswer`.
        """
        params = {"q": q}
        if database:
            params["db"] = database
        content = self.post("query", params, timeout=timeout) or b"{}"
        try:
            answer = json.loads(content)
        except ValueError as error:  # UnicodeDecodeError too
            raise _not_influx(content) from error
        if not isinstance(answer, dict):
            raise _not_influx(content)
        if "error" in answer:  # InfluxDB says so with a 4xx; something else answered 200
            raise InfluxDBServerError(f"the server answered 200 with an error: {answer['error']}")
        results = answer.get("results") or [{}]
        if not isinstance(results, list) or not isinstance(results[0], dict):
            raise _not_influx(content)
        result: dict[str, Any] = results[0]
        if "error" in result:
            raise InfluxDBClientError(result["error"], 400)
        return result

    def open(self, seconds: float, within: str) -> http.client.HTTPConnection:
        """Open a new connection in ``seconds`` at most: resolve, connect, TLS handshake.

        Raises :class:`RequestTimeout` (its message ends with ``within``) when the time
        runs out, naming the step and the addresses; the step's own error otherwise.
        """
        ends = time.monotonic() + seconds
        context = self._tls_context() if self.tls else None
        addresses = self._resolver.resolve(ends, within)
        sock = connect_to_any(self.host, self.port, addresses, ends, within)
        try:
            # As http.client does: a request's headers and body go out at once.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection: http.client.HTTPConnection
            if context is not None:
                sock = self._handshake(sock, context, ends, within)
                connection = http.client.HTTPSConnection(self.host, self.port, context=context)
            else:
                connection = http.client.HTTPConnection(self.host, self.port)
        except BaseException:
            sock.close()
            raise
        connection.sock = sock
        # It never connects by itself (unbounded, in create_connection): only here.
        connection.auto_open = 0
        self._connection = connection
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _handshake(
        self, sock: socket.socket, context: ssl.SSLContext, ends: float, within: str
    ) -> ssl.SSLSocket:
        """The TLS handshake on ``sock``, by ``ends`` (the socket's timeout bounds it as a
        whole, and the watchdog shuts the socket down should it outlive that)."""
        left = max(ends - time.monotonic(), 0.0)
        peer = show_address(sock.getpeername())
        sock.settimeout(max(left, 0.001))
        # wrap_socket takes the descriptor over: the watchdog is given the TLS socket.
        secured = context.wrap_socket(
            sock, server_hostname=self._resolver.host, do_handshake_on_connect=False
        )
        self._opening = secured
        try:
            with deadline(left, self.abort) as watch:
                try:
                    secured.do_handshake()
                except (OSError, ValueError) as error:
                    if watch.expired or isinstance(error, TimeoutError):
                        raise RequestTimeout(
                            f"the TLS handshake with {self.host!r} at {peer} did not finish "
                            f"{within}"
                        ) from error
                    raise
            if watch.expired:  # at the last instant: the socket may be shut down
                raise RequestTimeout(
                    f"the TLS handshake with {self.host!r} at {peer} did not finish {within}"
                )
        except BaseException:
            secured.close()
            raise
        finally:
            self._opening = None
        return secured

    def abort(self) -> None:
        """Break off the request in progress (called by the watchdog, from its thread)."""
        connection = self._connection
        sock = connection.sock if connection is not None else self._opening
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def forget(self) -> None:
        """Drop the connection without closing it: it is the parent's after a fork."""
        abandon(self._connection)
        self._connection = None
        self._opening = None
        self._resolver.forget()  # its thread is the parent's

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        self._drop()


def _not_influx(content: bytes) -> NotInfluxAnswer:
    """The error for a query's successful answer that is not InfluxDB's JSON."""
    text = content[:200].decode("utf-8", "replace")
    return NotInfluxAnswer(
        f"the server answered 200 to a query with what is not InfluxDB's answer (is a proxy "
        f"in between?): {text}"
    )


class Request:
    """A POST sent (or being sent) on a transport's connection, its answer read later.

    The time spent sending it and the time spent waiting for its answer are bounded
    together by ``limit`` seconds, ``timeout`` plus a second per MB of ``size`` (the body
    before compression); what the caller does in between is not counted. Its answer is
    read up to ``cap`` bytes: MAX_ANSWER_BYTES, plus ANSWER_BYTES_PER_BODY_BYTE per byte
    of ``size``.
    """

    def __init__(
        self,
        transport: HTTPTransport,
        path: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        size: int,
        expect: int | None = None,
    ) -> None:
        self.transport = transport
        self.expect = expect
        self.timeout = timeout
        self.limit = request_seconds(timeout, size)
        self.cap = MAX_ANSWER_BYTES + ANSWER_BYTES_PER_BODY_BYTE * size
        self.path = path
        self.body = body
        self.headers = headers
        self._spent = 0.0  # seconds of the bound spent: sending, reading, a stale attempt
        self._reused = False
        self._stale = False
        self._cut = False  # the body was cut off by the server

    def send(self) -> None:
        """Write the request on the connection (a new one if there is none).

        The headers and the body are written apart: a server that closes the connection
        in the middle of the body may have answered first (influxd answers 413 past its
        max-body-size), and that answer is read rather than lost.
        """
        transport = self.transport
        connection = transport._connection
        self._reused = connection is not None
        if connection is None:
            started = time.monotonic()
            try:
                connection = transport.open(self.limit - self._spent, self._within())
            finally:
                self._spent += time.monotonic() - started
        limit = self.limit - self._spent  # what is left of the request's bound
        if limit <= 0:  # spent connecting (a thread kept off the CPU): the next try may not
            timeout = RequestTimeout(f"no time left to send the request {self._within()}")
            timeout.connected = True
            raise timeout
        # Each read may take as long as the request may (its bound includes the body's
        # allowance); the watchdog bounds them all together.
        connection.timeout = limit
        if connection.sock is not None:
            connection.sock.settimeout(limit)
        started = time.monotonic()
        try:
            with self._bounded(limit):
                connection.putrequest("POST", self.path)
                connection.putheader("Content-Length", str(len(self.body)))
                for name, value in self.headers.items():
                    connection.putheader(name, value)
                connection.endheaders()
        except _STALE:
            self._spent += time.monotonic() - started
            if not self._reused:
                raise
            # The server closed the idle connection meanwhile: sent again at answer().
            self._stale = True
            return
        try:
            with self._bounded(limit - (time.monotonic() - started), keep=_CUT):
                if self.body:
                    connection.send(self.body)
        except _CUT:
            # Cut off mid-body: the server's answer, if it gave one, is read at answer().
            self._cut = True
        finally:
            self._spent += time.monotonic() - started

    def answer(self) -> bytes:
        """Wait for the answer; its body, or raise (see :meth:`HTTPTransport.post`)."""
        status, content, location = self._again() if self._stale else self._first_answer()
        text = content.decode("utf-8", "replace")
        if status < 300:
            if self.expect is None or status == self.expect:
                return content
            # Not InfluxDB's answer: a proxy's page, a lookalike's error. Not stored.
            raise NotInfluxAnswer(
                f"the server answered {status} where InfluxDB answers {self.expect}: not "
                "InfluxDB's answer, so the write was not confirmed (is a proxy in between?): "
                f"{text[:200]}"
            )
        if status >= 500:
            raise InfluxDBServerError(text)
        if status in REDIRECTS:
            raise Redirected(text, status, location)
        raise InfluxDBClientError(text, status)

    def _first_answer(self) -> tuple[int, bytes, str | None]:
        """The answer on the connection the request was sent on; sent again once if that
        connection was stale."""
        try:
            return self._read()
        except _STALE as error:
            if self._reused:
                return self._again()
            # A reset tells that the server closed with part of the body unread; a body
            # cut off while being sent, that it would not read the rest.
            cut = self._cut or isinstance(error, ConnectionResetError)
            if cut and len(self.body) >= LARGE_BODY:
                raise BodyCutOff(len(self.body)) from error
            raise

    def _read(self) -> tuple[int, bytes, str | None]:
        transport = self.transport
        connection = transport._connection
        if connection is None:  # dropped meanwhile (close() or a fork)
            raise ConnectionResetError("the connection was closed before the answer was read")
        started = time.monotonic()
        limit = self.limit - self._spent
        try:
            with self._bounded(limit):
                response = connection.getresponse()
                content = self._body(response, started + limit)
        finally:
            self._spent += time.monotonic() - started
        if response.will_close or self._cut:
            transport._drop()
        return response.status, content, response.getheader("Location")

    def _body(self, response: http.client.HTTPResponse, ends: float) -> bytes:
        """The answer's body, read a piece at a time until ``ends`` (a monotonic time) and
        up to ``cap`` bytes: a larger one raises :class:`AnswerTooLarge` at once, whether
        its Content-Length says so or it runs on (chunked, or until the connection
        closes). Out of memory while reading is not the batch's fault: a server error.

        Raised in ``_bounded``, all of these drop the connection (its answer is unread).
        """
        cap = self.cap
        declared = response.length  # None when chunked or ended by closing the connection
        if declared is not None and declared > cap:
            raise AnswerTooLarge(cap, response.status, declared)
        pieces: list[bytes] = []
        size = 0
        try:
            while True:
                # The watchdog shuts the socket down at the deadline, but data already
                # received is still read after that: a fast stream is stopped here.
                if time.monotonic() >= ends:
                    raise TimeoutError(f"the answer was still arriving after {size} bytes")
                piece = response.read(min(_PIECE, cap + 1 - size))
                if not piece:
                    return b"".join(pieces)
                pieces.append(piece)
                size += len(piece)
                if size > cap:
                    raise AnswerTooLarge(cap, response.status)
        except MemoryError as error:
            pieces.clear()
            raise InfluxDBServerError(
                f"ran out of memory reading the server's answer ({response.status}) after "
                f"{size} bytes; the request may pass on a retry"
            ) from error

    def _again(self) -> tuple[int, bytes, str | None]:
        """Send once more on a new connection, and read the answer, within what is left
        of the request's bound (the stale attempt's time counts)."""
        self._reused = False
        self._stale = False
        self._cut = False
        self.transport._drop()
        self.send()
        return self._first_answer()

    @contextlib.contextmanager
    def _bounded(self, limit: float, keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
        """Run the block under the watchdog; on a failure the connection is dropped, unless
        it is one of ``keep`` (and the watchdog did not fire)."""
        transport = self.transport
        with deadline(max(limit, 0.0), transport.abort) as watch:
            try:
                yield
            except BaseException as error:
                if watch.expired or not isinstance(error, keep):
                    transport._drop()
                if watch.expired or isinstance(error, TimeoutError):
                    timeout = RequestTimeout(f"no complete answer {self._within()}")
                    timeout.connected = True
                    raise timeout from error
                raise

    def _within(self) -> str:
        """``within 1.0 s (timeout bounds the whole request)``, for a timeout's message."""
        extra = self.limit - self.timeout
        allowance = f", plus {extra:.2f} s for its size" if extra >= 0.01 else ""
        return f"within {self.timeout} s (timeout bounds the whole request{allowance})"
