"""The Emulator: state of a fake Empirical service and the lifecycle of its HTTP server.

All state sits behind one lock; handler threads call the private methods below. The HTTP
layer (http.server, slow to import) is only loaded by start(), so importing stays cheap.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .models import (
    DEFAULT_STATUS,
    ENVIRONMENTS,
    SHAPES,
    TERMINAL_STATES,
    Fault,
    RecordedRequest,
    Run,
    RunScript,
    rerun_script,
)

if TYPE_CHECKING:
    import socket

    from .api import Response
    from .handler import EmulatorHTTPServer

MAX_RECORDED = 100_000  # bounds memory when polled for hours; oldest requests are dropped


def _check_shape(shape: Any) -> str:
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return str(shape)


def _check_delay(seconds: Any) -> float:
    """A response delay: a number of seconds >= 0."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
    return float(seconds)


class Emulator:
    """A local, scriptable stand-in for the Empirical test-runs API.

    ``shape`` selects the answer of GET /api/test-runs/{id}: "nested" (the run under
    data.test_run.testRun beside data.test_run.flattenedSummaryDetails, as Empirical's own suite
    reads it) or "flat" (the run fields directly under data.test_run). ``response_delay`` adds
    that many seconds before every /api/ answer.
    """

    def __init__(
        self,
        api_keys: Mapping[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
        tls: tuple[str, str] | None = None,
        response_delay: float = 0.0,
        shape: str = "nested",
    ) -> None:
        self.api_keys: dict[str, int] = dict(api_keys if api_keys is not None else {"emulator-key": 1})
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in self.api_keys.values()):
            raise ValueError("api_keys maps each key to a project id (an integer >= 1)")
        self.host = host
        self.verbose = verbose
        self.tls = tls  # (certificate file, key file): serve https, as the real API does
        self._port = port
        self._projects = {pid: self._make_project(pid) for pid in {1, *self.api_keys.values()}}
        self._lock = threading.Lock()  # guards every field below
        self._life = threading.RLock()  # serialises start/stop, separate so handlers never wait on it
        self._server: EmulatorHTTPServer | None = None
        self._restart: threading.Timer | None = None
        self._runs: dict[int, Run] = {}
        self._next_id = 1
        self._queue: deque[RunScript] = deque()
        self._default = RunScript()
        self._env_scripts: dict[str, RunScript] = {}
        self._faults: list[Fault] = []
        self._requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)
        self._initial_delay = _check_delay(response_delay)
        self._response_delay = self._initial_delay
        self._initial_shape = _check_shape(shape)
        self._shape = self._initial_shape

    @staticmethod
    def _make_project(pid: int) -> dict[str, Any]:
        if pid == 1:
            return {"id": 1, "name": "Demo project", "slug": "demo", "repo_name": "demo-tests"}
        slug = f"project-{pid}"
        return {"id": pid, "name": f"Project {pid}", "slug": slug, "repo_name": f"{slug}-tests"}

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (0 until the first start when asked for a free one)."""
        return self._port

    @property
    def url(self) -> str:
        """Base URL to give clients, e.g. http://127.0.0.1:8123."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def start(self) -> Emulator:
        """Bind (the same port again after a stop) and serve in a daemon thread."""
        with self._life:
            self._cancel_restart()
            if self._server is None:
                self._bind()
        return self

    def _bind(self) -> None:
        from .handler import EmulatorHTTPServer

        server = EmulatorHTTPServer((self.host, self._port), self)
        self._port = server.server_address[1]
        if self.tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            # the handshake happens on first read, in the connection's own thread
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"empirical-emulator-{self._port}",
            daemon=True,
        ).start()
        self._server = server

    def stop(self) -> None:
        """Refuse new connections and cut open ones; state is kept for a later start()."""
        with self._life:
            self._cancel_restart()
            self._stop(keep=None)

    def _stop(self, keep: socket.socket | None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections(keep)

    def _cancel_restart(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None

    def down_for(self, seconds: float) -> None:
        """Simulate an outage: stop now, start again after `seconds` without blocking."""
        self._down_for(seconds, keep=None)

    def _down_for(self, seconds: float, keep: socket.socket | None) -> None:
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._life:
            self._cancel_restart()
            self._stop(keep)
            self._restart = threading.Timer(seconds, self._come_back)
            self._restart.daemon = True
            self._restart.start()

    def _come_back(self) -> None:
        """Restart after an outage, retrying briefly in case the port is still being released."""
        last: OSError | None = None
        for _ in range(50):
            with self._life:
                if self._restart is not threading.current_thread():
                    return  # stop(), start() or another down_for() took over meanwhile
                try:
                    if self._server is None:
                        self._bind()
                    self._restart = None
                    return
                except OSError as exc:
                    last = exc
            time.sleep(0.1)
        print(f"empirical emulator: could not rebind port {self._port}: {last}", file=sys.stderr)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- scripting ---------------------------------------------------------------------------------

    @property
    def response_delay(self) -> float:
        """Seconds added before every /api/ answer (faults included, control routes not)."""
        return self._response_delay

    def set_response_delay(self, seconds: float) -> None:
        """Add `seconds` before every /api/ answer from now on (0 for none)."""
        value = _check_delay(seconds)
        with self._lock:
            self._response_delay = value

    @property
    def shape(self) -> str:
        """The shape of GET /api/test-runs/{id}: "nested" or "flat"."""
        return self._shape

    def set_shape(self, shape: str) -> None:
        """Answer GET /api/test-runs/{id} in this shape from now on ("nested" or "flat")."""
        value = _check_shape(shape)
        with self._lock:
            self._shape = value

    def reset(self) -> None:
        """Forget runs, faults, queued scripts and recorded requests; restore the constructor's settings."""
        with self._lock:
            self._response_delay = self._initial_delay
            self._shape = self._initial_shape
            self._runs.clear()
            self._next_id = 1
            self._queue.clear()
            self._default = RunScript()
            self._env_scripts.clear()
            self._faults.clear()
            self._requests.clear()

    def queue_runs(self, *scripts: RunScript) -> None:
        """Scripts for the next created runs, consumed first in, first out."""
        if not all(isinstance(s, RunScript) for s in scripts):
            raise TypeError("queue_runs takes RunScript instances")
        with self._lock:
            self._queue.extend(scripts)

    def set_default_script(self, script: RunScript) -> None:
        """Script for runs with nothing queued and no environment script."""
        with self._lock:
            self._default = script

    def set_environment_script(self, environment: str, script: RunScript) -> None:
        """Script for runs of one environment slug with nothing queued."""
        with self._lock:
            self._env_scripts[environment] = script

    def add_fault(
        self,
        method: str = "GET",
        path: str = "/api/test-runs/*",
        times: int = 1,
        status: int | None = DEFAULT_STATUS,
        headers: dict[str, str] | None = None,
        body: Any = None,
        after_create: bool = False,
        delay: float = 0.0,
        malformed: bool = False,
        drop: bool = False,
        echo_auth: bool = False,
        drip: float | None = None,
    ) -> Fault:
        """Inject a misbehaviour; pass status=None for a pure delay (or drip). See Fault."""
        fault = Fault(
            method, path, times, status, headers, body, after_create, delay, malformed, drop, echo_auth, drip
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def finish_run(
        self, run_id: int, state: str = "cancelled", error_code: str | None = None
    ) -> dict[str, Any]:
        """Force a run into a state now (KeyError if unknown); returns the run as the API shows it."""
        with self._lock:
            run = self._runs[run_id]
            run.force(state, error_code, time.monotonic())
            return self._inspect(run, time.monotonic())

    # --- inspection --------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """API requests received, oldest first (control calls and dashboard pages excluded)."""
        with self._lock:
            return list(self._requests)

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        """How many recorded API requests match a method (None = any) and path prefix."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (method is None or r.method == method.upper()) and r.path.startswith(path_prefix)
            )

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first: its fields as GET /api/test-runs/{id} shows them (flat), plus
        for inspection only `cancel_reason` (of a cancel through the API) and `tests` (its rows)."""
        now = time.monotonic()
        with self._lock:
            return [self._inspect(run, now) for run in self._runs.values()]

    def _inspect(self, run: Run, now: float) -> dict[str, Any]:
        return {
            **run.detail(now, self._projects[run.project_id]),
            "cancel_reason": run.cancel.reason if run.cancel else None,
            "tests": run.rows(now),
        }

    def trigger_body(self, run_id: int) -> dict[str, Any]:
        """The JSON body that created a run, as stored (KeyError if unknown)."""
        with self._lock:
            body: dict[str, Any] = json.loads(json.dumps(self._runs[run_id].body))
            return body

    # --- used by the request handlers --------------------------------------------------------------

    def _record(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes
    ) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self._requests.append(RecordedRequest(method, path, query, headers, body, time.time()))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        """The first matching fault, consuming one of its uses."""
        with self._lock:
            for fault in self._faults:
                if fault.method in ("*", method.upper()) and fnmatch.fnmatchcase(path, fault.path):
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _project(self, project_id: int) -> dict[str, Any]:
        return dict(self._projects[project_id])

    def _create_run(self, project_id: int, body: dict[str, Any]) -> dict[str, Any] | Response:
        """Create a run from a validated body, or return the 400/404 for unknown references."""
        from .api import error

        slug = str(body["environment"])
        environment = next((e for e in ENVIRONMENTS if e["slug"] == slug), None)
        if environment is None:
            available = ", ".join(e["slug"] for e in ENVIRONMENTS)
            return error(400, f"environment: unknown environment {slug!r} (available: {available})")
        now = time.monotonic()
        with self._lock:
            source = self._runs.get(body.get("rerun_source_id", 0))
            if "rerun_source_id" in body and (source is None or source.project_id != project_id):
                return error(404, f"rerun_source_id: test run {body['rerun_source_id']} not found")
            script = self._queue.popleft() if self._queue else self._env_scripts.get(slug, self._default)
            if source is not None:
                script = self._rerun_script(script, source, body.get("rerun_only_failed") is True, now)
            run = Run(self._next_id, project_id, dict(environment), script, json.loads(json.dumps(body)))
            self._runs[run.id] = run
            self._next_id += 1
            return run.item(time.monotonic())

    @staticmethod
    def _rerun_script(script: RunScript, source: Run, only_failed: bool, now: float) -> RunScript:
        """A re-run runs the source's tests, or only its failed ones once it has completed."""
        if only_failed and source.state_at(now)[0] in TERMINAL_STATES:
            return rerun_script(script, source.failed_names(now))
        if script.tests is None and source.script.tests is not None:
            try:
                return replace(script, tests=source.script.tests)
            except ValueError:  # the script's counts do not fit those tests: keep it as given
                return script
        return script

    def _run_view(
        self, project_id: int, run_id: int
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any], str] | None:
        """(run fields, per-test rows, project, shape) of a run, or None when not visible."""
        now = time.monotonic()
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.project_id != project_id:
                return None
            project = self._projects[project_id]
            return run.detail(now, project), run.rows(now), dict(project), self._shape

    def _cancel(self, project_id: int, run_id: int, reason: str | None) -> tuple[str, str] | None:
        """("cancelled" | "terminal", state before), or None when the run is not visible."""
        now = time.monotonic()
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.project_id != project_id:
                return None
            before = run.state_at(now)[0]
            return run.request_cancel(reason, now), before

    def _rerun(self, project_id: int, run_id: int, only_failed: bool, notify: bool | None) -> Any:
        """Re-run a run: the new run's list item, or the 404/400 Response."""
        from .api import error

        now = time.monotonic()
        with self._lock:
            source = self._runs.get(run_id)
            if source is None or source.project_id != project_id:
                return error(404, f"test run {run_id} not found")
            state = source.state_at(now)[0]
            if only_failed and state not in TERMINAL_STATES:
                message = f"only_failed: test run {run_id} has not completed yet (state {state})"
                return error(400, message)
            body = json.loads(json.dumps(source.body))
            for key in ("rerun_source_id", "rerun_only_failed"):
                body.pop(key, None)
            if notify is None:
                notify = source.body.get("send_notifications", True)
            body.update(rerun_source_id=run_id, rerun_only_failed=only_failed, send_notifications=notify)
        return self._create_run(project_id, body)

    def _list_items(
        self, project_id: int, run_id: int | None, days: int | None
    ) -> list[tuple[int, dict[str, Any]]]:
        """(environment id, list item) of a project's runs, newest first."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if r.project_id == project_id
                and (run_id is None or r.id == run_id)
                and (days is None or r.created_wall >= wall - days * 86400)
            ]
            return [(r.environment["id"], r.item(now)) for r in reversed(runs)]
