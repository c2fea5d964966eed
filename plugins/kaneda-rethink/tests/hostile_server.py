"""Servers on real sockets that misbehave where a RethinkDB server answers, and one that
answers RethinkDB's handshake (SCRAM-SHA-256) right, for the connect tests.

``with HostileServer(endless) as server:`` listens on 127.0.0.1:``server.port`` and runs
the behaviour on each connection in a thread of its own; leaving the block closes every
connection and stops the threads.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

Behaviour = Callable[["Peer"], None]

#: The V1_0 handshake's magic number, the first 4 bytes a client sends.
V1_0 = 0x34C2BDC3


class Peer:
    """One accepted connection, and the server's stop flag."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self._buffer = b""

    def read_message(self) -> bytes:
        """The client's next NUL-terminated message (without its NUL)."""
        while b"\0" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return message

    def read_opening(self) -> dict[str, Any]:
        """The client's version number and first JSON message."""
        while len(self._buffer) < 4:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            self._buffer += chunk
        assert struct.unpack("<L", self._buffer[:4])[0] == V1_0
        self._buffer = self._buffer[4:]
        return dict(json.loads(self.read_message()))

    def send_json(self, document: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(document).encode() + b"\0")


class HostileServer:
    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._peers: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._peers.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        # The client going away (an error here) is what these servers wait for.
        with contextlib.suppress(OSError, ValueError):
            self.behaviour(Peer(sock, self.stop))

    def close(self) -> None:
        self.stop.set()
        self._acceptor.join(5)
        self.listener.close()
        with self._lock:
            for sock in self._peers:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- behaviours -------------------------------------------------------------------------


def endless(peer: Peer) -> None:
    """Reads the opening, then streams bytes that never end an answer (no NUL)."""
    peer.sock.recv(65536)
    blob = b"x" * 65536
    while not peer.stop.is_set():
        peer.sock.sendall(blob)


def drip(peer: Peer) -> None:
    """Reads the opening, then sends a byte every 50 ms, never a NUL."""
    peer.sock.recv(65536)
    while not peer.stop.wait(0.05):
        peer.sock.sendall(b"x")


def silent(peer: Peer) -> None:
    """Reads the opening, never answers."""
    peer.sock.recv(65536)
    peer.stop.wait(30)


def _server_first(peer: Peer, iterations: int) -> tuple[bytes, bytes, bytes]:
    """Answers the opening; returns the client's first message, the server's, the salt."""
    opening = peer.read_opening()
    client_first = opening["authentication"].encode()[3:]  # without "n,,"
    client_nonce = dict(f.split(b"=", 1) for f in client_first.split(b","))[b"r"]
    peer.send_json(
        {
            "success": True,
            "min_protocol_version": 0,
            "max_protocol_version": 0,
            "server_version": "2.4.4",
        }
    )
    salt = os.urandom(16)
    nonce = client_nonce + base64.b64encode(os.urandom(18))
    server_first = b"r=" + nonce + b",s=" + base64.b64encode(salt) + b",i=%d" % iterations
    peer.send_json({"success": True, "authentication": server_first.decode()})
    return client_first, server_first, salt


def asks_iterations(iterations: int) -> Behaviour:
    """Answers the opening asking for the password hashed ``iterations`` times, then waits."""

    def behaviour(peer: Peer) -> None:
        _server_first(peer, iterations)
        peer.stop.wait(30)

    return behaviour


def rethinkdb(password: str, answer: Callable[[Any], Any]) -> Behaviour:
    """A RethinkDB server as far as a driver can tell: the handshake done right (the
    password checked), then ``answer(query)`` to every query (its JSON, decoded)."""

    def behaviour(peer: Peer) -> None:
        iterations = 4096
        client_first, server_first, salt = _server_first(peer, iterations)
        final = json.loads(peer.read_message())["authentication"].encode()
        without_proof, _, proof = final.rpartition(b",p=")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        auth_message = b",".join((client_first, server_first, without_proof))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        given_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
        if hashlib.sha256(given_key).digest() != stored_key:
            peer.send_json({"success": False, "error": "Wrong password", "error_code": 12})
            return
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        verifier = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        peer.send_json(
            {"success": True, "authentication": "v=" + base64.b64encode(verifier).decode()}
        )
        buffer = peer._buffer
        while True:
            while len(buffer) < 12:
                chunk = peer.sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            token, length = struct.unpack("<qL", buffer[:12])
            while len(buffer) < 12 + length:
                chunk = peer.sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
            query = json.loads(buffer[12 : 12 + length])
            buffer = buffer[12 + length :]
            body = json.dumps({"t": 1, "r": [answer(query)]}).encode()
            peer.sock.sendall(struct.pack("<qL", token, len(body)) + body)

    return behaviour
