"""The HTTP layer: sockets, TLS, a threading keep-alive server, fault injection and drip.

It reads a request, records it, applies the response delay and any matching fault, asks the
routes for the answer and writes it. It decides nothing about the API itself.
"""

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
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .models import Fault, RecordedRequest
from .routes import App, Request, Response, internal_error, json_response, lenient_json, unreadable_body

MALFORMED_BODY = b'{"data": {"test_run": '
MAX_BODY = 10 * 1024 * 1024


class EmulatorHTTPServer(ThreadingHTTPServer):
    """One thread per connection; sized for ~100 keep-alive pollers."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App, verbose: bool = False) -> None:
        self.app = app
        self.verbose = verbose
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

    def halt(self, keep: socket.socket | None = None) -> None:
        """Stop serving, release the port and cut open connections (except `keep`)."""
        self.shutdown()
        self.server_close()
        self.close_connections(keep)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up are normal here; only report them when verbose."""
        if self.verbose:
            super().handle_error(request, client_address)


def serve(
    app: App, host: str, port: int, tls: tuple[str, str] | None = None, verbose: bool = False
) -> EmulatorHTTPServer:
    """Bind (https with a (certificate, key) pair) and serve in a daemon thread."""
    server = EmulatorHTTPServer((host, port), app, verbose)
    if tls:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        # the handshake happens on first read, in the connection's own thread
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"empirical-emulator-{server.server_address[1]}",
        daemon=True,
    ).start()
    return server


def fault_response(fault: Fault, headers: dict[str, str]) -> Response:
    """The reply a fault puts in place of the real one: malformed > echo_auth > status."""
    extra = dict(fault.headers or {})
    if fault.malformed:
        return Response(200, MALFORMED_BODY, {"Content-Type": "application/json", **extra})
    if fault.echo_auth:
        auth = headers.get("authorization")
        status = fault.status or 500
        if status >= 400:
            payload: Any = {"error": {"message": f"internal error (authorization: {auth})"}}
        else:  # a success that holds no run, only the leaked header
            payload = {"debug": {"authorization": auth}}
        return json_response(payload, status, extra)
    assert fault.status is not None
    if isinstance(fault.body, str):
        body, kind = fault.body.encode(), "text/plain; charset=utf-8"
    else:
        payload = fault.body if fault.body is not None else {"error": {"message": "injected fault"}}
        body, kind = json.dumps(payload).encode(), "application/json"
    return Response(fault.status, body, {"Content-Type": kind, **extra})


class Handler(BaseHTTPRequestHandler):
    """Moves bytes: reads the request, applies faults, writes the routes' Response."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes; avoid delayed-ACK stalls
    timeout = 300  # idle keep-alive connections are closed after this
    server_version = "EmpiricalEmulator/1.0"
    sys_version = ""
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
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
        """Replace the reply: drop the connection, or send the fault's response."""
        if fault.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(fault_response(fault, headers), fault.drip)

    def _handle(self) -> None:
        try:
            self._dispatch()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception:  # a bug in the emulator: say so instead of hanging the client
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(internal_error())

    def _dispatch(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            self._send(unreadable_body())
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        request = Request(self.command, url.path, query, headers, raw, self.connection)
        if app.is_control(request.path):
            self._send(app.control(request))
            return
        is_api = app.is_api(request.path)
        if is_api:
            recorded = RecordedRequest(
                request.method, request.path, query, headers, lenient_json(raw), time.time()
            )
            app.state.record(recorded)
            delay = app.state.response_delay
            if delay:
                time.sleep(delay)
        fault = app.state.take_fault(request.method, request.path)
        if fault is not None and not fault.after_create:
            time.sleep(fault.delay)
            if fault.acts:
                self._send_fault(fault, headers)
                return
        response = app.handle(request)
        if fault is not None and fault.after_create:
            time.sleep(fault.delay)
            if fault.acts:
                self._send_fault(fault, headers)
                return
        self._send(response, fault.drip if fault is not None else None)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle
