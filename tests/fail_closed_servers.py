"""Loopback servers for what the emulator cannot send: answers that trickle without ever ending
(headers one byte at a time, a gzip stream of empty deflate blocks), a gzip bomb, and a list
endpoint that serves a different page for every page number. Also the run answers and the API
key with a backslash that the fail-closed tests inject through the emulator's faults.

Every server runs in daemon threads, stops at `close()` (each test closes its own), and gives up
on its own after `give_up_after` seconds: from then on it answers every request at once with a
404, so that a client that never notices a deadline still ends in bounded time.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_GAVE_UP_BODY = b'{"error": {"message": "this test server gave up"}}'
GAVE_UP = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nConnection: close\r\n"
    + f"Content-Length: {len(_GAVE_UP_BODY)}\r\n\r\n".encode()
    + _GAVE_UP_BODY
)


class TrickleServer:
    """Serves every connection with `serve(conn, server)` in a thread of its own, until `close()`."""

    def __init__(self, serve: Callable[[socket.socket, TrickleServer], None], give_up_after: float) -> None:
        self.serve = serve
        self.gives_up_at = time.monotonic() + give_up_after
        self.stopped = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def giving_up(self) -> bool:
        return self.stopped.is_set() or time.monotonic() >= self.gives_up_at

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._open.add(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                with self._lock:
                    self.requests += 1
                if self.giving_up:
                    conn.sendall(GAVE_UP)
                    return
                self.serve(conn, self)
        finally:
            with self._lock:
                self._open.discard(conn)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        with self._lock:
            for conn in list(self._open):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def _trickle(conn: socket.socket, server: TrickleServer, piece: bytes, every: float) -> None:
    while not server.giving_up:
        conn.sendall(piece)
        time.sleep(every)


def drip_headers(conn: socket.socket, server: TrickleServer) -> None:
    """A status line, then one header whose value comes one byte every 0.1 s (h11 takes 16 KiB)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Drip: ")
    _trickle(conn, server, b"a", 0.1)


EMPTY_STORED_BLOCK = b"\x00\x00\x00\xff\xff"  # a non-final deflate block holding nothing


def empty_deflate_blocks(conn: socket.socket, server: TrickleServer) -> None:
    """A gzip body, chunked, that never ends and decodes to nothing: an empty block every 0.1 s."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"a\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\r\n"
    )
    _trickle(conn, server, b"5\r\n" + EMPTY_STORED_BLOCK + b"\r\n", 0.1)


# A key holding a backslash followed by "n": JSON and repr write it with two backslashes, and an
# escaped newline looks like it. Every form of it holds both halves below, so neither may appear.
BS_KEY = "bs-key-Q7f3XcA1\\nb8Zr2Mq5-do-not-leak"
HALVES = ("Q7f3XcA1", "b8Zr2Mq5")


def nested_answer(run: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A run answer in the nested shape Empirical's tooling reads (`data.test_run.testRun`)."""
    fields = {"project": {"id": 1, "slug": "demo"}, **run}
    return {"data": {"test_run": {"testRun": fields, "flattenedSummaryDetails": rows or []}}}


TRICKLES = {"headers one byte at a time": drip_headers, "empty deflate blocks": empty_deflate_blocks}


def gzip_bomb(decoded_mib: int) -> bytes:
    """A gzip body of zeros: ~1 KB on the wire per decoded MiB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1024 * 1024)
    return b"".join([*(packer.compress(block) for _ in range(decoded_mib)), packer.flush()])


def bomb_reply(decoded_mib: int = 512) -> Callable[[socket.socket, TrickleServer], None]:
    body = gzip_bomb(decoded_mib)
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()

    def serve(conn: socket.socket, server: TrickleServer) -> None:
        conn.sendall(head + body)

    return serve


class PagesServer:
    """`GET /api/test-runs?page=N`: `items(N)` as that page's runs, announcing `total_pages` pages.

    Every page is different (the hook stops at a page that repeats the previous one); `pages`
    records the page numbers asked for, in order.
    """

    def __init__(self, items: Callable[[int], list[dict[str, Any]]], total_pages: int = 1000) -> None:
        self.pages: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                if url.path != "/api/test-runs":
                    self._json(404, {"error": {"message": "not found"}})
                    return
                page = int(query.get("page", "1"))
                server.pages.append(page)
                self._json(
                    200,
                    {
                        "data": {
                            "project": {"id": 1, "name": "Demo project", "slug": "demo"},
                            "test_runs": {"items": items(page)},
                        },
                        "pagination": {"page": page, "per_page": 100, "total_pages": total_pages},
                    },
                )

            def _json(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
