"""Loopback API servers for the benchmarks, each run in its own process so its CPU is not mixed up.

    python bench/servers.py empirical   # the provider's Empirical emulator
    python bench/servers.py dbt         # a stub of dbt Cloud's "get job run" endpoint
    python bench/servers.py dbt --tls-cert cert.pem --tls-key key.pem   # the same over https

The server prints ``READY <port>`` then answers one command per stdin line:
``stats <since> <until>`` prints ``{"polls": n, "connections": n, "handshakes": n, ...}`` (status
polls, TCP connections accepted and TLS handshakes completed between two epoch times; the
emulator adds ``puts`` and all ``requests``); ``quit`` (or EOF) stops it.

With ``--tls-cert``/``--tls-key`` both serve https: the listening socket is wrapped with
``do_handshake_on_connect=False``, so each handshake runs in its connection's own thread (the
bench completes it explicitly there, to count it) and never blocks the accept loop.

The dbt stub answers ``GET /api/v2/accounts/<account>/runs/<id>/`` like dbt Cloud does
(``{"data": {..., "status": 3}}``; 10 = success once the run's end time has passed), checks
the ``Authorization: Token ...`` header, and takes the runs' end times from
``POST /_setup {"runs": {"<id>": <epoch end>}, "delay": <seconds>}``.

Round trip: a real API answers in tens to hundreds of milliseconds, and a client that cannot keep
enough requests in flight only shows it then. The bench sets the same response delay on both
servers once the runs exist: the emulator through its control route
``POST /_emulator/response-delay {"seconds": s}`` (every API answer waits that long), the stub
through ``"delay"`` in ``/_setup`` (every status answer waits that long, in its own thread). Its
body is a trimmed dbt run object of about
the same size as the emulator's answer (~500 bytes), so JSON parsing costs stay comparable.
"""

from __future__ import annotations

import argparse
import json
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common import API_KEY

DBT_TOKEN = "dbt-bench-token-51aa"
RUN_PATH = re.compile(r"/api/v2/accounts/(\d+)/runs/(\d+)/")


TlsFiles = tuple[str, str]  # (certificate PEM, private key PEM)


class Tally:
    """Timestamps of polls, accepted connections and TLS handshakes, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.polls: list[float] = []
        self.connections: list[float] = []
        self.handshakes: list[float] = []

    def add(self, kind: list[float]) -> None:
        with self.lock:
            kind.append(time.time())

    def between(self, since: float, until: float) -> dict[str, int]:
        with self.lock:
            return {
                "polls": sum(since <= t <= until for t in self.polls),
                "connections": sum(since <= t <= until for t in self.connections),
                "handshakes": sum(since <= t <= until for t in self.handshakes),
            }


def count_connections(server: Any, tally: Tally) -> None:
    """Wrap a socketserver so every accepted connection (and, over TLS, handshake) is counted."""
    process = server.process_request

    def process_request(request: Any, client_address: Any) -> None:
        tally.add(tally.connections)
        process(request, client_address)

    server.process_request = process_request
    if not isinstance(server.socket, ssl.SSLSocket):
        return
    finish = server.finish_request  # runs in the connection's thread

    def finish_request(request: ssl.SSLSocket, client_address: Any) -> None:
        request.do_handshake()  # would happen on the handler's first read anyway; raises if it fails
        tally.add(tally.handshakes)
        finish(request, client_address)

    server.finish_request = finish_request


def wrap_tls(server: Any, tls: TlsFiles) -> None:
    """Serve https on a bound socketserver; handshakes are left to the connection threads."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls)
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)


class DbtStubServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # same backlog as the emulator
    allow_reuse_address = True
    ends: dict[int, float]
    tally: Tally
    delay: float = 0.0  # seconds every status answer waits (a remote API's round trip)


class DbtStubHandler(BaseHTTPRequestHandler):
    """GET a run's status; POST /_setup to declare runs and their end times."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: DbtStubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/_setup":
            return self._reply(404, {"status": {"code": 404}})
        setup = json.loads(raw)
        self.server.ends.update({int(key): float(value) for key, value in setup.get("runs", {}).items()})
        if "delay" in setup:
            self.server.delay = max(0.0, float(setup["delay"]))
        return self._reply(200, {"ok": True})

    def do_GET(self) -> None:
        match = RUN_PATH.fullmatch(self.path.split("?")[0])
        if not match:
            return self._reply(404, {"status": {"code": 404, "user_message": "not found"}})
        self.server.tally.add(self.server.tally.polls)
        if self.server.delay:
            time.sleep(self.server.delay)
        if self.headers.get("Authorization") != f"Token {DBT_TOKEN}":
            return self._reply(401, {"status": {"code": 401, "user_message": "Invalid token"}})
        run_id = int(match.group(2))
        end = self.server.ends.get(run_id)
        if end is None:
            return self._reply(404, {"status": {"code": 404, "user_message": f"run {run_id} not found"}})
        done = time.time() >= end
        self._reply(
            200,
            {
                "status": {
                    "code": 200,
                    "is_success": True,
                    "user_message": "Success!",
                    "developer_message": "",
                },
                "data": {
                    "id": run_id,
                    "trigger_id": run_id,
                    "account_id": int(match.group(1)),
                    "environment_id": 7,
                    "project_id": 3,
                    "job_definition_id": 42,
                    "status": 10 if done else 3,
                    "dbt_version": "versionless",
                    "git_branch": "main",
                    "git_sha": "3f2c1ab",
                    "status_message": None,
                    "owner_thread_id": None,
                    "deferring_run_id": None,
                    "created_at": "2026-01-01 00:00:00.000000+00:00",
                    "started_at": "2026-01-01 00:00:01+00:00",
                    "finished_at": None,
                    "in_progress": not done,
                    "is_complete": done,
                    "is_success": done,
                    "is_error": False,
                    "is_cancelled": False,
                    "status_humanized": "Success" if done else "Running",
                },
            },
        )


def serve_empirical(tls: TlsFiles | None) -> tuple[int, Tally, Any]:
    """Start the provider's emulator (https when `tls` is given)."""
    from airflow_provider_empirical.emulator import Emulator

    emulator = Emulator(api_keys={API_KEY: 1}, tls=tls).start()
    tally = Tally()
    count_connections(emulator._server, tally)  # bench-only peek at the emulator's socket server

    def stats(since: float, until: float) -> dict[str, int]:
        counts = tally.between(since, until)
        window = [r for r in emulator.requests if since <= r.time <= until]
        counts["polls"] = sum(r.method == "GET" and r.path.startswith("/api/test-runs/") for r in window)
        counts["puts"] = sum(r.method == "PUT" for r in window)
        counts["requests"] = len(window)
        return counts

    return emulator.port, tally, stats


def serve_dbt(tls: TlsFiles | None) -> tuple[int, Tally, Any]:
    """Start the dbt Cloud stub (https when `tls` is given)."""
    server = DbtStubServer(("127.0.0.1", 0), DbtStubHandler)
    server.ends, server.tally = {}, Tally()
    if tls:
        wrap_tls(server, tls)
    count_connections(server, server.tally)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server.server_address[1], server.tally, server.tally.between


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["empirical", "dbt"])
    parser.add_argument("--tls-cert", help="serve https with this certificate (PEM); needs --tls-key")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args()
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    port, _, stats = (serve_empirical if args.kind == "empirical" else serve_dbt)(tls)
    print(f"READY {port}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "stats":
            print(json.dumps(stats(float(words[1]), float(words[2]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


class Server:
    """A server process started from the benchmarks; `stats()` asks it for counts."""

    def __init__(
        self, kind: str, env: dict[str, str], log: Any, tls: TlsFiles | None = None, timeout: float = 20.0
    ) -> None:
        import select
        import subprocess

        from common import BENCH, PYTHON

        self._select = select.select
        tls_args = ["--tls-cert", tls[0], "--tls-key", tls[1]] if tls else []
        self.proc = subprocess.Popen(
            [PYTHON, str(BENCH / "servers.py"), kind, *tls_args],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        words = self._line(timeout).split()
        if words[:1] != ["READY"]:
            self.close()
            raise RuntimeError(f"{kind} server did not start: {words}")
        self.port = int(words[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = self._select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("server did not answer")
        return self.proc.stdout.readline()

    def stats(self, since: float, until: float) -> dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"stats {since} {until}\n")
        self.proc.stdin.flush()
        result: dict[str, int] = json.loads(self._line(60))
        return result

    def close(self) -> None:
        import subprocess

        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
