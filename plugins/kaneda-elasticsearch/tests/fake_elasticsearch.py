"""A local HTTP server speaking the part of the Elasticsearch API kaneda-elasticsearch uses.

It is not Elasticsearch: it answers the product check (``GET /`` and the
``X-Elastic-Product`` header), stores index templates, and parses ``_bulk`` NDJSON into
documents per index and id, answering with a real-shaped bulk response. Tests inject
whole-request failures (``fail_next``), answers that are not Elasticsearch's (``raw_next``),
a request limit (``max_content_length``), lost answers (``hang_up_after_storing``) and
per-item failures (``item_errors``), answers written byte by byte on the socket
(``misbehave_next``: a gzip bomb, a body without end), and read
what arrived in ``requests``, ``templates`` and ``indices``. The real official client
talks to it over a real socket.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

PRODUCT_HEADER = ("X-Elastic-Product", "Elasticsearch")


#: Not Elasticsearch's: where the tests read every stored document over HTTP (from a
#: forked child too, whose copy of the server's memory is not the server's).
DOCUMENTS_PATH = "/_fake/documents"


class FakeElasticsearch(http.server.ThreadingHTTPServer):
    """The server; ``url`` is where to point the client."""

    daemon_threads = True

    def __init__(self, *, product: bool = True, store: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.product = product
        self.store = store
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.templates: dict[str, Any] = {}
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        self.fail_next: list[tuple[int, dict[str, Any]]] = []
        self.item_errors: dict[int, tuple[int, str, str]] = {}
        #: (status, content type, body) answered as is to the next ``_bulk`` requests.
        self.raw_next: list[tuple[int, str, bytes]] = []
        #: A ``_bulk`` body longer than this is answered 413, as nginx's
        #: client_max_body_size or Elasticsearch's http.max_content_length answer it.
        self.max_content_length: int | None = None
        #: How many ``_bulk`` requests are stored and then not answered: the connection
        #: is closed (a proxy or a node dropping it, a timeout after the write).
        self.hang_up_after_storing = 0
        #: Seconds a ``_bulk`` request takes per MB of body (a server storing it).
        self.seconds_per_mb = 0.0
        #: What answers the next ``_bulk`` or index template requests, given the socket:
        #: it writes the status line, headers and body itself (then the connection closes).
        self.misbehave_next: list[Callable[[socket.socket], None]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bulk_requests(self) -> list[bytes]:
        """The bodies of every ``_bulk`` request received."""
        return [body for _, path, _, body in self.requests if path.startswith("/_bulk")]

    def documents(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every stored document: (index, id, source)."""
        with self.lock:
            return [
                (index, doc_id, source)
                for index, docs in self.indices.items()
                for doc_id, source in docs.items()
            ]

    def fetch_documents(self) -> list[tuple[str, str, dict[str, Any]]]:
        """:meth:`documents`, asked of the server over HTTP."""
        import urllib.request

        with urllib.request.urlopen(self.url + DOCUMENTS_PATH, timeout=10) as answer:
            return [tuple(row) for row in json.loads(answer.read())]  # type: ignore[misc]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeElasticsearch
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        if self.server.product:
            self.send_header(*PRODUCT_HEADER)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append((self.command, self.path, dict(self.headers), body))
        return body

    def do_HEAD(self) -> None:
        self._read()
        self._reply(200, {})

    def do_GET(self) -> None:
        self._read()
        if self.path.split("?")[0] == DOCUMENTS_PATH:  # the tests' own view of the store
            self._reply(200, self.server.documents())
            return
        if self.path.split("?")[0] == "/":
            self._reply(
                200,
                {
                    "name": "fake",
                    "cluster_name": "kaneda-tests",
                    "version": {"number": "9.1.0", "build_flavor": "default"},
                    "tagline": "You Know, for Search",
                },
            )
        else:
            self._reply(404, {"error": {"type": "not_found", "reason": self.path}, "status": 404})

    def do_PUT(self) -> None:
        path = self.path.split("?")[0]
        if path == "/_bulk":  # the client sends _bulk as PUT or POST
            self.do_POST()
            return
        body = self._read()
        if path.startswith("/_index_template/"):
            if self._injected_failure() or self._misbehaved():
                return
            self.server.templates[path.rsplit("/", 1)[1]] = json.loads(body)
            self._reply(200, {"acknowledged": True})
        else:
            self._reply(404, {"error": {"type": "not_found", "reason": path}, "status": 404})

    def do_POST(self) -> None:
        body = self._read()
        path = self.path.split("?")[0]
        if path != "/_bulk":
            self._reply(404, {"error": {"type": "not_found", "reason": path}, "status": 404})
            return
        if self._injected_failure() or self._misbehaved():
            return
        if self.server.raw_next:
            status, content_type, payload = self.server.raw_next.pop(0)
            self._reply_raw(status, content_type, payload)
            return
        limit = self.server.max_content_length
        if limit is not None and len(body) > limit:
            page = b"<html><body><h1>413 Request Entity Too Large</h1></body></html>"
            self._reply_raw(413, "text/html", page)
            return
        if self.server.seconds_per_mb:
            time.sleep(self.server.seconds_per_mb * len(body) / 1e6)
        if not self.server.store:  # benchmarks: a canned success, no parsing
            count = body.count(b"\n") // 2
            self._reply(
                200, {"took": 1, "errors": False, "items": [{"index": {"status": 201}}] * count}
            )
            return
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        items = []
        errors = False
        for position in range(0, len(lines), 2):
            action = lines[position]
            ((op, meta),) = action.items()
            source = lines[position + 1]
            index = meta["_index"]
            doc_id = meta.get("_id") or uuid.uuid4().hex
            injected = self.server.item_errors.pop(position // 2, None)
            if injected is not None:
                status, kind, reason = injected
                errors = True
                items.append(
                    {
                        op: {
                            "_index": index,
                            "_id": doc_id,
                            "status": status,
                            "error": {"type": kind, "reason": reason},
                        }
                    }
                )
                continue
            created = True
            if self.server.store:
                with self.server.lock:
                    docs = self.server.indices.setdefault(index, {})
                    created = doc_id not in docs
                    docs[doc_id] = source
            items.append(
                {
                    op: {
                        "_index": index,
                        "_id": doc_id,
                        "result": "created" if created else "updated",
                        "status": 201 if created else 200,
                    }
                }
            )
        if self.server.hang_up_after_storing:
            self.server.hang_up_after_storing -= 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._reply(200, {"took": 1, "errors": errors, "items": items})

    def _reply_raw(self, status: int, content_type: str, payload: bytes) -> None:
        """An answer that need not be JSON: a proxy's page, a garbled body."""
        self.send_response(status)
        if self.server.product:
            self.send_header(*PRODUCT_HEADER)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _misbehaved(self) -> bool:
        if not self.server.misbehave_next:
            return False
        answer = self.server.misbehave_next.pop(0)
        self.close_connection = True
        # The client may hang up on it: what it should do with an answer without end.
        with contextlib.suppress(OSError):
            answer(self.connection)
        return True

    def _injected_failure(self) -> bool:
        if not self.server.fail_next:
            return False
        status, body = self.server.fail_next.pop(0)
        self._reply(status, body)
        return True
