"""The HTTP layer: a threading, keep-alive server that tracks connections so stop() can cut them."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .api import Response, error, handle_api, handle_control, handle_dashboard, json_response
from .models import Fault

if TYPE_CHECKING:
    from .server import Emulator

MALFORMED_BODY = b'{"data": {"test_run": '
MAX_BODY = 10 * 1024 * 1024


class EmulatorHTTPServer(ThreadingHTTPServer):
    """One thread per connection; sized for ~100 keep-alive pollers."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        """Skip HTTPServer's reverse DNS lookup (getfqdn), which can stall offline."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self, keep: socket.socket | None = None) -> None:
        """Cut open keep-alive connections so clients see the outage; `keep` may still answer."""
        with self.connections_lock:
            connections = [c for c in self.connections if c is not keep]
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up are normal here; only report them when verbose."""
        if self.emulator.verbose:
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """Moves bytes: reads the request, applies faults, writes the Response from api.py."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes; avoid delayed-ACK stalls
    timeout = 300  # idle keep-alive connections are closed after this
    server_version = "EmpiricalEmulator/1.0"
    sys_version = ""
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked), read fully to keep the connection usable."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _send(self, response: Response, drip: float | None = None) -> None:
        """Write a reply; with `drip`, the body goes out at that many bytes per second."""
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if drip is None:
            self.wfile.write(response.body)
            return
        # chunks of about a tenth of a second each (at least one byte), paced by the clock
        chunk = max(1, int(drip / 10))
        started = time.monotonic()
        for offset in range(0, len(response.body), chunk):
            self.wfile.write(response.body[offset : offset + chunk])
            self.wfile.flush()
            sent = offset + chunk
            pause = started + min(sent, len(response.body)) / drip - time.monotonic()
            if pause > 0 and sent < len(response.body):
                time.sleep(pause)

    def _send_fault(self, fault: Fault, headers: dict[str, str]) -> None:
        """Replace the reply: drop > malformed > echo_auth > status."""
        extra = dict(fault.headers or {})
        if fault.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        elif fault.malformed:
            malformed = Response(200, MALFORMED_BODY, {"Content-Type": "application/json", **extra})
            self._send(malformed, fault.drip)
        elif fault.echo_auth:
            auth = headers.get("authorization")
            status = fault.status or 500
            if status >= 400:
                payload: Any = {"error": {"message": f"internal error (authorization: {auth})"}}
            else:  # a success that holds no run, only the leaked header
                payload = {"debug": {"authorization": auth}}
            self._send(json_response(payload, status, extra), fault.drip)
        else:
            assert fault.status is not None
            if isinstance(fault.body, str):
                body, kind = fault.body.encode(), "text/plain; charset=utf-8"
            else:
                payload = fault.body if fault.body is not None else {"error": {"message": "injected fault"}}
                body, kind = json.dumps(payload).encode(), "application/json"
            self._send(Response(fault.status, body, {"Content-Type": kind, **extra}), fault.drip)

    def _handle(self) -> None:
        try:
            self._dispatch()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # a bug in the emulator: say so instead of hanging the client
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(error(500, "emulator internal error"))

    def _dispatch(self) -> None:
        emu = self.server.emulator
        method, url = self.command, urlsplit(self.path)
        path = url.path
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(error(400, "body: could not read the request body"))
            return
        if path == "/_emulator" or path.startswith("/_emulator/"):
            self._send(handle_control(emu, method, path, raw, self.connection))
            return
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        is_api = path == "/api" or path.startswith("/api/")
        if is_api:
            emu._record(method, path, query, headers, raw)
            if emu.response_delay:
                time.sleep(emu.response_delay)
        fault = emu._take_fault(method, path)
        if fault is not None and not fault.after_create:
            time.sleep(fault.delay)
            if fault.acts:
                self._send_fault(fault, headers)
                return
        if is_api:
            response = handle_api(emu, method, path, query, headers, raw)
        else:
            response = handle_dashboard(emu, method, path)
        if fault is not None and fault.after_create:
            time.sleep(fault.delay)
            if fault.acts:
                self._send_fault(fault, headers)
                return
        self._send(response, fault.drip if fault is not None else None)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle
