"""The emulator's state: runs, scripts, faults and recorded requests, behind one lock.

Plain data in, plain data out: methods take validated Python values and return dicts, lists or
small result tuples, and report problems by raising the exceptions below. Nothing here knows
about HTTP, status codes, JSON envelopes or error wording; the routes module does.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .models import (
    ENVIRONMENTS,
    SHAPES,
    TERMINAL_STATES,
    Fault,
    RecordedRequest,
    Run,
    RunScript,
    rerun_script,
)

MAX_RECORDED = 100_000  # bounds memory when polled for hours; oldest requests are dropped


class RunNotFound(KeyError):
    """No run with this id in the caller's project (args[0] is the id)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class SourceNotFound(LookupError):
    """A trigger's rerun_source_id names no run of the project."""

    def __init__(self, run_id: Any) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class UnknownEnvironment(LookupError):
    """A trigger names an environment slug the project does not have."""

    def __init__(self, slug: str, available: list[str]) -> None:
        super().__init__(slug)
        self.slug, self.available = slug, available


class NotCompleted(ValueError):
    """A re-run of only the failed tests of a run that has not reached a terminal state."""

    def __init__(self, run_id: int, state: str) -> None:
        super().__init__(run_id, state)
        self.run_id, self.state = run_id, state


def check_shape(shape: Any) -> str:
    """A valid answer shape of GET /api/test-runs/{id}, else ValueError."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    return str(shape)


def check_delay(seconds: Any) -> float:
    """A response delay: a number of seconds >= 0, else ValueError."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
    return float(seconds)


def make_project(pid: int) -> dict[str, Any]:
    """The fixed description of project `pid` (project 1 is the demo project)."""
    if pid == 1:
        return {"id": 1, "name": "Demo project", "slug": "demo", "repo_name": "demo-tests"}
    slug = f"project-{pid}"
    return {"id": pid, "name": f"Project {pid}", "slug": slug, "repo_name": f"{slug}-tests"}


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data."""
    return json.loads(json.dumps(value))


class State:
    """Everything the emulator remembers; every public method is thread-safe."""

    def __init__(
        self, api_keys: Mapping[str, int], response_delay: float = 0.0, shape: str = "nested"
    ) -> None:
        self.api_keys: dict[str, int] = dict(api_keys)
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in self.api_keys.values()):
            raise ValueError("api_keys maps each key to a project id (an integer >= 1)")
        self._projects = {pid: make_project(pid) for pid in {1, *self.api_keys.values()}}
        self._lock = threading.Lock()  # guards every field below
        self._runs: dict[int, Run] = {}
        self._next_id = 1
        self._queue: deque[RunScript] = deque()
        self._default = RunScript()
        self._env_scripts: dict[str, RunScript] = {}
        self._faults: list[Fault] = []
        self._requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)
        self._initial_delay = check_delay(response_delay)
        self._response_delay = self._initial_delay
        self._initial_shape = check_shape(shape)
        self._shape = self._initial_shape

    # --- settings ----------------------------------------------------------------------------------

    def project_of_key(self, key: str) -> int | None:
        """The project a key is bound to, or None for an unknown key."""
        return self.api_keys.get(key)

    def project(self, project_id: int) -> dict[str, Any]:
        """The project's id, name, slug and repo_name."""
        return dict(self._projects[project_id])

    @property
    def response_delay(self) -> float:
        """Seconds added before every /api/ answer."""
        return self._response_delay

    def set_response_delay(self, seconds: Any) -> float:
        """Set the delay (ValueError unless a number >= 0); returns it."""
        value = check_delay(seconds)
        with self._lock:
            self._response_delay = value
        return value

    @property
    def shape(self) -> str:
        """The shape of GET /api/test-runs/{id}: "nested" or "flat"."""
        return self._shape

    def set_shape(self, shape: Any) -> str:
        """Set the answer shape (ValueError unless nested or flat); returns it."""
        value = check_shape(shape)
        with self._lock:
            self._shape = value
        return value

    def reset(self) -> None:
        """Forget runs, faults, queued scripts and recorded requests; restore the initial settings."""
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

    # --- scripts and faults ------------------------------------------------------------------------

    def queue_runs(self, *scripts: RunScript) -> None:
        """Scripts for the next created runs, consumed first in, first out."""
        if not all(isinstance(s, RunScript) for s in scripts):
            raise TypeError("queue_runs takes RunScript instances")
        with self._lock:
            self._queue.extend(scripts)

    def set_default_script(self, script: RunScript) -> None:
        """Script for runs with nothing queued and no environment script."""
        if not isinstance(script, RunScript):
            raise TypeError("set_default_script takes a RunScript")
        with self._lock:
            self._default = script

    def set_environment_script(self, environment: str, script: RunScript) -> None:
        """Script for runs of one environment slug with nothing queued."""
        if not isinstance(environment, str) or not isinstance(script, RunScript):
            raise TypeError("set_environment_script takes an environment slug and a RunScript")
        with self._lock:
            self._env_scripts[environment] = script

    def add_fault(self, fault: Fault) -> Fault:
        """Inject a misbehaviour for matching requests."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first fault matching a request, consuming one of its uses."""
        with self._lock:
            for fault in self._faults:
                if fault.method in ("*", method.upper()) and fnmatch.fnmatchcase(path, fault.path):
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # --- recorded requests -------------------------------------------------------------------------

    def record(self, request: RecordedRequest) -> None:
        """Remember an API request."""
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """API requests received, oldest first."""
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

    # --- runs --------------------------------------------------------------------------------------

    def _visible(self, project_id: int, run_id: int) -> Run:
        run = self._runs.get(run_id)
        if run is None or run.project_id != project_id:
            raise RunNotFound(run_id)
        return run

    def create_run(self, project_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """Create a run from a validated trigger body; returns its list item.

        Raises UnknownEnvironment, or SourceNotFound for a rerun_source_id outside the project.
        """
        slug = str(body["environment"])
        environment = next((e for e in ENVIRONMENTS if e["slug"] == slug), None)
        if environment is None:
            raise UnknownEnvironment(slug, [e["slug"] for e in ENVIRONMENTS])
        now = time.monotonic()
        with self._lock:
            source = self._runs.get(body.get("rerun_source_id", 0))
            if "rerun_source_id" in body and (source is None or source.project_id != project_id):
                raise SourceNotFound(body["rerun_source_id"])
            script = self._queue.popleft() if self._queue else self._env_scripts.get(slug, self._default)
            if source is not None:
                script = self._rerun_script(script, source, body.get("rerun_only_failed") is True, now)
            run = Run(self._next_id, project_id, dict(environment), script, _copy(body))
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

    def rerun(
        self, project_id: int, run_id: int, only_failed: bool, send_notifications: bool | None
    ) -> dict[str, Any]:
        """Re-run a run of the project; returns the new run's list item.

        Raises RunNotFound, or NotCompleted for only_failed on a run that is not terminal.
        """
        now = time.monotonic()
        with self._lock:
            source = self._visible(project_id, run_id)
            state = source.state_at(now)[0]
            if only_failed and state not in TERMINAL_STATES:
                raise NotCompleted(run_id, state)
            body = _copy(source.body)
            for key in ("rerun_source_id", "rerun_only_failed"):
                body.pop(key, None)
            if send_notifications is None:
                send_notifications = source.body.get("send_notifications", True)
            body.update(
                rerun_source_id=run_id, rerun_only_failed=only_failed, send_notifications=send_notifications
            )
        return self.create_run(project_id, body)

    def run_view(self, project_id: int, run_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(run fields, per-test rows) of a run of the project; raises RunNotFound."""
        now = time.monotonic()
        with self._lock:
            run = self._visible(project_id, run_id)
            return run.detail(now, self._projects[project_id]), run.rows(now)

    def cancel(self, project_id: int, run_id: int, reason: str | None) -> tuple[str, str]:
        """("cancelled" | "terminal", state before) of a cancel request; raises RunNotFound."""
        now = time.monotonic()
        with self._lock:
            run = self._visible(project_id, run_id)
            before = run.state_at(now)[0]
            return run.request_cancel(reason, now), before

    def list_items(
        self, project_id: int, run_id: int | None = None, days: int | None = None
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

    def finish_run(
        self, run_id: int, state: str = "cancelled", error_code: str | None = None
    ) -> dict[str, Any]:
        """Force a run into a state now (RunNotFound if unknown); returns the inspected run."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            now = time.monotonic()
            run.force(state, error_code, now)
            return self._inspect(run, now)

    def age_run(self, run_id: int, seconds: float) -> dict[str, Any]:
        """Move a run's creation time `seconds` into the past (RunNotFound if unknown)."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            run.created_wall -= seconds
            return self._inspect(run, time.monotonic())

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, with the inspection-only keys."""
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
        """The JSON body that created a run, as stored (RunNotFound if unknown)."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            body: dict[str, Any] = _copy(run.body)
            return body
