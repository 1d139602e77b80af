"""The Emulator: the public face of a fake Empirical service, for tests and the command line.

It owns a State (what the service remembers) and the lifecycle of the HTTP server that serves
it through the routes. The HTTP layer (http.server, slow to import) is only loaded by start(),
so importing stays cheap.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .models import DEFAULT_STATUS, Fault, RecordedRequest, RunScript, iso_utc
from .routes import App, snooze_changes, unknown_environment_message
from .state import State, UnknownEnvironment

if TYPE_CHECKING:
    from .server import EmulatorHTTPServer


class Emulator:
    """A local, scriptable stand-in for the Empirical test-runs API.

    ``shape`` selects the answer of GET /api/test-runs/{id}: "nested" (the run under
    data.test_run.testRun beside data.test_run.flattenedSummaryDetails, as Empirical's own suite
    reads it) or "flat" (the run fields directly under data.test_run). ``response_delay`` adds
    that many seconds before every /api/ answer. ``switches`` picks, where the evidence admits
    two behaviours, which one to serve (see SWITCHES in state.py and docs/emulator.md); it is
    applied after ``shape``.
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
        switches: Mapping[str, Any] | None = None,
    ) -> None:
        self._state = State(
            api_keys if api_keys is not None else {"emulator-key": 1},
            response_delay=response_delay,
            shape=shape,
            switches=switches,
        )
        self.api_keys = self._state.api_keys
        self.host = host
        self.verbose = verbose
        self.tls = tls  # (certificate file, key file): serve https, as the real API does
        self._port = port
        self._app = App(self._state, self._outage)
        self._life = threading.RLock()  # serialises start/stop
        self._server: EmulatorHTTPServer | None = None
        self._restart: threading.Timer | None = None

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

    @property
    def http_server(self) -> EmulatorHTTPServer | None:
        """The socket server while running (for benchmarks that count connections), else None."""
        return self._server

    def start(self) -> Emulator:
        """Bind (the same port again after a stop) and serve in a daemon thread."""
        with self._life:
            self._cancel_restart()
            if self._server is None:
                self._bind()
        return self

    def _bind(self) -> None:
        from .server import serve

        self._server = serve(self._app, self.host, self._port, self.tls, self.verbose)
        self._port = self._server.server_address[1]

    def stop(self) -> None:
        """Refuse new connections and cut open ones; state is kept for a later start()."""
        with self._life:
            self._cancel_restart()
            self._halt(keep=None)

    def _halt(self, keep: Any) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.halt(keep)

    def _cancel_restart(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None

    def down_for(self, seconds: float) -> None:
        """Simulate an outage: stop now, start again after `seconds` without blocking."""
        self._outage(seconds, None)

    def _outage(self, seconds: float, keep: Any) -> None:
        """down_for, keeping one connection open (the control call's) so it can be answered."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._life:
            self._cancel_restart()
            self._halt(keep)
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
        return self._state.response_delay

    def set_response_delay(self, seconds: float) -> None:
        """Add `seconds` before every /api/ answer from now on (0 for none)."""
        self._state.set_response_delay(seconds)

    @property
    def shape(self) -> str:
        """The shape of GET /api/test-runs/{id}: "nested" or "flat"."""
        return self._state.shape

    def set_shape(self, shape: str) -> None:
        """Answer GET /api/test-runs/{id} in this shape from now on ("nested" or "flat")."""
        self._state.set_shape(shape)

    @property
    def switches(self) -> dict[str, Any]:
        """The value of every switch (shape included)."""
        return self._state.switches

    def set_switches(self, **switches: Any) -> dict[str, Any]:
        """Change switches from now on (ValueError, nothing changed, if one is unknown or invalid);
        returns every switch's value."""
        return self._state.set_switches(**switches)

    def reset(self) -> None:
        """Forget runs, snoozes, faults, queued scripts and recorded requests; restore the
        constructor's settings (switches, shape, response delay)."""
        self._state.reset()

    def queue_runs(self, *scripts: RunScript) -> None:
        """Scripts for the next created runs, consumed first in, first out."""
        self._state.queue_runs(*scripts)

    def set_default_script(self, script: RunScript) -> None:
        """Script for runs with nothing queued and no environment script."""
        self._state.set_default_script(script)

    def set_environment_script(self, environment: str, script: RunScript) -> None:
        """Script for runs of one environment slug with nothing queued."""
        self._state.set_environment_script(environment, script)

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
        return self._state.add_fault(fault)

    def finish_run(
        self, run_id: int, state: str = "cancelled", error_code: str | None = None
    ) -> dict[str, Any]:
        """Force a run into a state now (KeyError if unknown); returns the run as the API shows it."""
        return self._state.finish_run(run_id, state, error_code)

    def start_run(
        self,
        environment: str = "production",
        *,
        branch: str | None = None,
        build: dict[str, str] | None = None,
        script: RunScript | None = None,
        project_id: int = 1,
        **fields: Any,
    ) -> dict[str, Any]:
        """Start a run as Empirical itself would (its schedule, its dashboard, another team's CI):
        not recorded as an API request, and it does not take a queued script (`script`, else the
        environment's or the default script). `branch` and `build` may be combined; other trigger
        fields (metadata, github_actor, test_case_ids, ...) go in `fields`. Returns the run like
        `runs` shows it; ValueError names a bad field (an unknown or disabled environment too,
        unless the unknown_environment switch makes such a run error)."""
        body: dict[str, Any] = {"environment": environment, **fields}
        if branch is not None:
            body["branch"] = branch
        if build is not None:
            body["build"] = build
        try:
            return self._app.start_run({**body, "project_id": project_id}, script)
        except UnknownEnvironment as exc:
            raise ValueError(unknown_environment_message(exc)) from None

    def run(self, run_id: int) -> dict[str, Any]:
        """One run like `runs` shows it (KeyError if unknown)."""
        return self._state.run(run_id)

    def age_run(self, run_id: int, seconds: float) -> dict[str, Any]:
        """Move a run's created_at `seconds` into the past (KeyError if unknown); returns the run."""
        return self._state.age_run(run_id, seconds)

    # --- inspection --------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """API requests received, oldest first (control calls and dashboard pages excluded)."""
        return self._state.requests

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        """How many recorded API requests match a method (None = any) and path prefix."""
        return self._state.count(method, path_prefix)

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first: its fields as GET /api/test-runs/{id} shows them (flat), plus
        for inspection only `cancel_reason` (of a cancel through the API) and `tests` (its rows)."""
        return self._state.runs()

    def trigger_body(self, run_id: int) -> dict[str, Any]:
        """The JSON body that created a run, as stored (KeyError if unknown)."""
        return self._state.trigger_body(run_id)

    # --- snoozes, test cases, environments ---------------------------------------------------------

    def add_snooze(
        self,
        test_ids: list[str],
        snooze_until: str | float | datetime | None = None,
        *,
        description: str | None = None,
        created_by: str | None = None,
        scoped_to_environment_id: int | None = None,
        created_from_test_run_id: int | None = None,
        project_id: int = 1,
    ) -> dict[str, Any]:
        """Create a snooze as a person in the dashboard would (not recorded as an API request).

        `snooze_until`: an ISO 8601 string, an epoch or an aware datetime; default 7 days from now.
        Checked like POST /api/snoozes (ValueError names the field). Returns the snooze as the API
        shows it.
        """
        if isinstance(snooze_until, datetime):
            snooze_until = snooze_until.timestamp()
        if isinstance(snooze_until, (int, float)) and not isinstance(snooze_until, bool):
            snooze_until = iso_utc(snooze_until)
        given = {
            "test_ids": test_ids,
            "snooze_until": snooze_until,
            "description": description,
            "created_by": created_by,
            "scoped_to_environment_id": scoped_to_environment_id,
            "created_from_test_run_id": created_from_test_run_id,
        }
        body = {key: value for key, value in given.items() if value is not None}
        return self._app.add_snooze({**body, "project_id": project_id})

    def update_snooze(self, snooze_id: int, **changes: Any) -> dict[str, Any]:
        """Edit a snooze like PATCH /api/snoozes/{id} (snooze_until, description, expire_now,
        scoped_to_environment_id, test_ids); KeyError if unknown, ValueError names a bad field."""
        project_id = next((s["project_id"] for s in self._state.snoozes() if s["id"] == snooze_id), None)
        if project_id is None:
            raise KeyError(snooze_id)
        fields = snooze_changes(changes, project_id, time.time())
        return self._state.update_snooze(project_id, snooze_id, **fields)

    def expire_snooze(self, snooze_id: int) -> dict[str, Any]:
        """End a snooze now, like PATCH with expire_now (KeyError if unknown)."""
        return self.update_snooze(snooze_id, expire_now=True)

    @property
    def snoozes(self) -> list[dict[str, Any]]:
        """Every snooze, oldest first: its API fields plus, for inspection only, `project_id`,
        `active`, `origin` ("api", "control" or "script") and `body` (the POST body, or None)."""
        return self._state.snoozes()

    def snooze_body(self, snooze_id: int) -> dict[str, Any] | None:
        """The body that created a snooze (of POST /api/snoozes, POST /_emulator/snoozes or
        add_snooze), None for one a RunScript created; KeyError if unknown."""
        return self._state.snooze_body(snooze_id)

    @property
    def test_cases(self) -> list[dict[str, Any]]:
        """The fixed test-case catalogue (every project has it), as GET /api/v2/test-cases shows it,
        the inactive case included."""
        return self._state.test_cases()[0]

    @property
    def environments(self) -> list[dict[str, Any]]:
        """Project 1's environments as GET /api/environments/list shows them (the disabled one too)."""
        return self._state.environments(1)
