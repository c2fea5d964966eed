"""One keep-alive HTTP(S) connection to InfluxDB, each request bounded as a whole.

The plugin writes with this rather than through ``influxdb.InfluxDBClient``'s requests
session for two reasons. A socket timeout bounds each read, so a server that answers a
byte at a time keeps a request open for ever; here a watchdog
(:func:`kaneda_core.deadline.deadline`) shuts the socket down when the whole request has
taken ``timeout`` seconds. And after ``os.fork()`` the child must never write on the
parent's connection: :meth:`HTTPTransport.forget` drops it without a word on the wire.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlencode

from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from kaneda_core.deadline import deadline
from kaneda_core.forking import abandon

#: Errors of a connection that was reused after the server closed it: sent again once.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class RequestTimeout(TimeoutError):
    """The whole request took longer than the transport's timeout."""


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

    def post(self, endpoint: str, params: dict[str, str], body: bytes = b"") -> bytes:
        """POST ``body`` to ``/endpoint?params``; the answer's body, or raise.

        An answer of 4xx raises ``InfluxDBClientError`` (with ``.code``), 5xx
        ``InfluxDBServerError``; a network failure raises ``OSError`` or
        ``http.client.HTTPException``; a request longer than ``timeout`` seconds in all
        raises :class:`RequestTimeout`.
        """
        path = f"/{endpoint}?{urlencode(params)}"
        headers = {**self._headers, "Content-Type": "application/octet-stream"}
        reused = self._connection is not None
        try:
            status, content = self._exchange(path, body, headers)
        except _STALE:
            if not reused:
                raise
            # The server closed the idle connection meanwhile: once more, on a new one.
            status, content = self._exchange(path, body, headers)
        if status < 300:
            return content
        text = content.decode("utf-8", "replace")
        if status >= 500:
            raise InfluxDBServerError(text)
        raise InfluxDBClientError(text, status)

    def query(self, q: str, database: str | None = None) -> dict[str, Any]:
        """Run InfluxQL through ``POST /query``; its first result."""
        params = {"q": q}
        if database:
            params["db"] = database
        answer = json.loads(self.post("query", params) or b"{}")
        result: dict[str, Any] = (answer.get("results") or [{}])[0]
        if "error" in result:
            raise InfluxDBClientError(result["error"], 400)
        return result

    def _exchange(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = self._connection or self._connect()
        with deadline(self.timeout, self.abort) as watch:
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                content = response.read()
            except BaseException as error:
                self._drop()
                if watch.expired:
                    raise RequestTimeout(
                        f"no complete answer within {self.timeout} s (timeout bounds the "
                        "whole request)"
                    ) from error
                raise
        if response.will_close:
            self._drop()
        return response.status, content

    def _connect(self) -> http.client.HTTPConnection:
        if self.tls:
            context = ssl.create_default_context()
            if not self.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._connection = connection
        return connection

    def abort(self) -> None:
        """Break off the request in progress (called by the watchdog, from its thread)."""
        connection = self._connection
        sock = connection.sock if connection is not None else None
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

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        self._drop()
