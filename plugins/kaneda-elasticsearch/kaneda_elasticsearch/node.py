"""The client's node for the backend's own client: answers read up to a bound, connections
opened within the timeout.

elastic_transport's ``Urllib3HttpNode`` reads an answer whole (``response.data``), and
inflates a gzip one whole, whatever its size: a 522 KB gzip bomb took a process to
6.8 GB, a body without end was buffered until the watchdog fired. :class:`BoundedNode`
reads the body a piece at a time, inflating as it goes, and stops at
:func:`answer_limit` bytes (decoded) with :class:`AnswerTooLarge`, dropping the
connection. The client asks for ``Accept-Encoding: identity``; a gzip or deflate answer
(a proxy's doing) is read all the same, any other encoding is refused.

urllib3 resolves the host's name in ``socket.create_connection``, with no bound at all:
each connection of a :class:`BoundedNode` resolves it through a
:class:`kaneda_core.connecting.Resolver` shared by the node's connections, and connects
to its addresses within the connection's timeout. The TLS handshake is urllib3's, with
the host's name, so the certificate is still checked against it (and the ``Host`` header
names it).
"""

from __future__ import annotations

import re
import time
import zlib
from typing import Any

from elastic_transport import NodeConfig, SerializationError, Urllib3HttpNode
from elastic_transport import TextSerializer as _TextSerializer
from elasticsearch.serializer import JsonSerializer, NdjsonSerializer
from urllib3.exceptions import NewConnectionError

from kaneda_core.connecting import Resolver, connect_to_any

#: An answer may be this large, decoded, plus four bytes per byte of its request (a bulk
#: answer has an item per document, as long as a small document with its error).
MAX_ANSWER = 16 * 1024 * 1024
_PER_REQUEST_BYTE = 4
#: How much of the body is read, or inflated, at a time.
_PIECE = 64 * 1024
#: How much of an answer an error quotes.
QUOTED = 200


def answer_limit(request_size: int) -> int:
    """The most bytes (decoded) the answer to a request of ``request_size`` may have."""
    return MAX_ANSWER + _PER_REQUEST_BYTE * request_size


class AnswerError(Exception):
    """An answer came (its status line and headers), but its body could not be taken.

    ``detail`` follows "answered 200 ...": "with an answer larger than ...".
    """

    def __init__(self, status: int, detail: str, received: int = 0) -> None:
        super().__init__(f"answered {status} {detail}")
        self.status = status
        self.detail = detail
        self.received = received


class AnswerTooLarge(AnswerError):
    """The body went past :func:`answer_limit`: the connection was dropped."""


class AnswerUnreadable(AnswerError):
    """A Content-Encoding the client did not ask for and cannot read, or a body that is
    not in the encoding it claims."""


class AnswerCutShort(AnswerError):
    """The body broke off (the connection closed, or was shut at the deadline)."""


class BoundedNode(Urllib3HttpNode):
    """``Urllib3HttpNode``, reading answers up to a bound and connecting within the timeout."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        pool = self.pool
        base = pool.ConnectionCls
        resolver = Resolver(config.host, config.port)

        class BoundedConnection(base):  # type: ignore[misc, valid-type]
            def _new_conn(self) -> Any:
                return _connect(self, resolver, super()._new_conn)

        pool.ConnectionCls = BoundedConnection
        urlopen = pool.urlopen

        def bounded_urlopen(method: str, url: str, body: Any = None, **options: Any) -> Any:
            options["preload_content"] = False  # read below, a piece at a time
            response = urlopen(method, url, body=body, **options)
            try:
                data = read_answer(response, answer_limit(len(body or b"")))
            except BaseException:
                response.close()  # the rest of the body unread: the connection is dropped
                response.release_conn()
                raise
            response.release_conn()
            return _Answer(response.status, response.headers, data)

        pool.urlopen = bounded_urlopen  # type: ignore[method-assign, assignment]


class _Answer:
    """What ``Urllib3HttpNode.perform_request`` reads of a response."""

    __slots__ = ("data", "headers", "status")

    def __init__(self, status: int, headers: Any, data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data


def _connect(connection: Any, resolver: Resolver, unbounded: Any) -> Any:
    """A connected socket for the urllib3 ``connection``, within its timeout."""
    timeout = connection.timeout
    if not isinstance(timeout, (int, float)) or connection.source_address:
        return unbounded()  # no bound to keep (never so for the backend's own client)
    ends = time.monotonic() + timeout
    within = f"within {round(timeout, 2):g} s (timeout bounds the whole request)"
    try:
        addresses = resolver.resolve(ends, within)
        sock = connect_to_any(resolver.host, connection.port, addresses, ends, within)
    except OSError as error:  # the name, or each address, and why; a timeout too
        # urllib3's own error for it: the node makes it a ConnectionError, as it did.
        raise NewConnectionError(connection, str(error)) from error
    try:
        for option in connection.socket_options or ():
            sock.setsockopt(*option)
    except OSError:
        sock.close()
        raise
    return sock


def read_answer(response: Any, limit: int) -> bytes:
    """The body of the urllib3 ``response`` (not preloaded), decoded, of ``limit`` bytes
    at most: raises :class:`AnswerTooLarge` past it, without reading further."""
    status = response.status
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    inflater: _Inflater | None = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encoding, status)
    elif encoding != "identity":
        raise AnswerUnreadable(
            status,
            f"with Content-Encoding {encoding[:40]!r}, which the client did not ask for "
            "(it asks for identity) and cannot read",
        )
    length = response.headers.get("Content-Length") or ""
    if inflater is None and length.isdigit() and int(length) > limit:
        raise _too_large(status, limit, f"its Content-Length says {int(length)} bytes")
    body = bytearray()
    received = 0
    while True:
        try:
            piece = response.read(_PIECE, decode_content=False)
        except Exception as error:  # a read failure, whatever raised it
            raise AnswerCutShort(
                status,
                f"but its body broke off after {received} bytes "
                f"({type(error).__name__}: {str(error)[:QUOTED]})",
                received,
            ) from error
        if not piece:
            break
        received += len(piece)
        if inflater is None:
            body += piece
        else:
            inflater.feed(piece, body, limit)
        if len(body) > limit:
            sent = f", {encoding}-encoded in {received} bytes so far" if inflater else ""
            raise _too_large(status, limit, f"more was coming{sent}")
    if inflater is not None:
        inflater.finish(body)
        if len(body) > limit:
            raise _too_large(status, limit, f"{encoding}-encoded in {received} bytes")
    return bytes(body)


def _too_large(status: int, limit: int, detail: str) -> AnswerTooLarge:
    return AnswerTooLarge(
        status,
        f"with an answer larger than {limit} bytes (16 MiB, plus 4 bytes per byte of the "
        f"request; {detail}): the client stopped reading it and dropped the connection",
    )


class _Inflater:
    """Inflates gzip or zlib data (several gzip members too) without ever producing more
    than the room left."""

    def __init__(self, encoding: str, status: int) -> None:
        self.encoding = encoding
        self.status = status
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header

    def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        try:
            while data:
                out += self._inflate.decompress(data, limit - len(out) + 1)
                if len(out) > limit:
                    return
                data = self._inflate.unconsumed_tail
                if self._inflate.eof:  # the member ended: another may follow
                    data = self._inflate.unused_data + data
                    self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)
        except zlib.error as error:
            raise self._unreadable(error) from None

    def finish(self, out: bytearray) -> None:
        try:
            out += self._inflate.flush()  # what it held back: a window's worth at most
        except zlib.error as error:
            raise self._unreadable(error) from None

    def _unreadable(self, error: zlib.error) -> AnswerUnreadable:
        return AnswerUnreadable(
            self.status,
            f"with Content-Encoding {self.encoding!r}, but its body is not "
            f"{self.encoding} data ({error})",
        )


def quote(data: bytes | str) -> str:
    """The start of a body, and its size, for an error message."""
    if len(data) <= QUOTED:
        return repr(data)
    unit = "characters" if isinstance(data, str) else "bytes"
    return f"{data[:QUOTED]!r}... ({len(data)} {unit})"


class _BoundedJson(JsonSerializer):
    """The client's JSON serializer, whose error quotes the start of the answer, not all
    of it (``repr`` of a body of NUL bytes is four times its size)."""

    def loads(self, data: bytes) -> Any:
        if data == b"":
            return None
        try:
            return self.json_loads(data)
        except (ValueError, TypeError) as error:
            raise SerializationError(
                message=f"Unable to deserialize as JSON: {quote(data)}", errors=(error,)
            ) from None


class _BoundedNdjson(NdjsonSerializer):
    def loads(self, data: bytes) -> Any:
        lines = []
        for line in re.split(b"[\n\r]", data):
            if not line:
                continue
            try:
                lines.append(self.json_loads(line))
            except (ValueError, TypeError) as error:
                raise SerializationError(
                    message=f"Unable to deserialize as NDJSON: {quote(data)}", errors=(error,)
                ) from None
        return lines


class _BoundedText(_TextSerializer):
    def loads(self, data: bytes) -> str:
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeError as error:
            raise SerializationError(
                message=f"Unable to deserialize as text: {quote(data)}", errors=(error,)
            ) from None


#: The backend's client's serializers (the client derives the compatibility-mode ones).
SERIALIZERS = {
    "application/json": _BoundedJson(),
    "application/x-ndjson": _BoundedNdjson(),
    "text/*": _BoundedText(),
}
