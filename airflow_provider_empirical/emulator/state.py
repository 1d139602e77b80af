"""The emulator's state: runs, snoozes, scripts, faults, switches and recorded requests, behind one lock.

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
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

from .catalogue import (
    ACTIVE_IDS,
    CASES,
    ENVIRONMENTS,
    SYNC_ERROR,
    SYNC_SHA,
    describe,
    diagnosis_slug,
    enabled_slugs,
    environment,
    environment_by_id,
    environment_row,
    test_case_row,
)
from .models import (
    TERMINAL_STATES,
    Counts,
    Fault,
    RecordedRequest,
    Rows,
    Run,
    RunScript,
    Snooze,
    SnoozeVersion,
    iso_utc,
    select_script,
)

MAX_RECORDED = 100_000  # bounds memory when polled for hours; oldest requests are dropped
SCRIPTED_SNOOZE_DAYS = 7

# Behaviours the evidence leaves open: name -> (default, allowed values). See docs/emulator.md.
SWITCHES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "shape": ("nested", ("nested", "flat")),
    "list_environment_id": (False, (False, True)),
    "row_names": ("title", ("title", "title_path")),
    "snooze_info_details": (False, (False, True)),
    "snooze_counts": ("live", ("live", "frozen")),
    "snoozed_failures_pass": (True, (False, True)),
    "unknown_environment": ("reject", ("reject", "error_run")),
    "environments_endpoint": (True, (False, True)),
    "analytics_endpoint": (True, (False, True)),
    "test_cases_sync_error": (False, (False, True)),
}


class RunNotFound(KeyError):
    """No run with this id in the caller's project (args[0] is the id)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class SnoozeNotFound(KeyError):
    """No snooze with this id in the caller's project (args[0] is the id)."""

    def __init__(self, snooze_id: int) -> None:
        super().__init__(snooze_id)
        self.snooze_id = snooze_id


class SourceNotFound(LookupError):
    """A trigger's rerun_source_id names no run of the project."""

    def __init__(self, run_id: Any) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class UnknownEnvironment(LookupError):
    """A trigger names an environment slug the project does not have, or a disabled one."""

    def __init__(self, slug: str, available: list[str], disabled: bool = False) -> None:
        super().__init__(slug)
        self.slug, self.available, self.disabled = slug, available, disabled


class NotCompleted(ValueError):
    """A re-run of only the failed tests of a run that has not reached a terminal state."""

    def __init__(self, run_id: int, state: str) -> None:
        super().__init__(run_id, state)
        self.run_id, self.state = run_id, state


class BadReference(ValueError):
    """A snooze field names an environment or a run the project does not have."""

    def __init__(self, field: str, value: Any, available: list[int]) -> None:
        super().__init__(field, value)
        self.field, self.value, self.available = field, value, available


def check_switches(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validated switch values (ValueError names the switch and its allowed values)."""
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in SWITCHES:
            raise ValueError(f"unknown switch {name!r} (switches: {', '.join(SWITCHES)})")
        allowed = SWITCHES[name][1]
        is_bool = isinstance(allowed[0], bool)
        if is_bool != isinstance(value, bool) or value not in allowed:
            choices = ", ".join(json.dumps(a) for a in allowed)
            raise ValueError(f"switch {name} must be one of {choices}, got {json.dumps(value)}")
        checked[name] = value
    return checked


def check_shape(shape: Any) -> str:
    """A valid answer shape of GET /api/test-runs/{id}, else ValueError."""
    allowed = SWITCHES["shape"][1]
    if shape not in allowed:
        raise ValueError(f"shape must be one of {', '.join(allowed)}, got {shape!r}")
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


def run_result(item: dict[str, Any], snoozed_failures_pass: bool = True) -> str | None:
    """ "passed" (ended with no failure left: after snoozes, or at all), "failed" (any other
    terminal run) or None (not finished)."""
    if item["state"] not in TERMINAL_STATES:
        return None
    failures = item["failed_count_after_snoozing" if snoozed_failures_pass else "failed_count"]
    return "passed" if item["state"] == "ended" and not failures else "failed"


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data."""
    return json.loads(json.dumps(value))


def _error_script(script: RunScript) -> RunScript:
    """The script of a run that errors without running a test, on the given script's timeline."""
    code = script.error_code if script.outcome == "error" else "run_failed_with_error"
    return RunScript(
        queued_for=script.queued_for,
        run_for=script.run_for,
        outcome="error",
        error_code=code,
        error_code_key=script.error_code_key,
    )


# pw_test_id -> the project's snoozes that ever named it
SnoozeIndex = dict[str, list[Snooze]]


class State:
    """Everything the emulator remembers; every public method is thread-safe."""

    def __init__(
        self,
        api_keys: Mapping[str, int],
        response_delay: float = 0.0,
        shape: str = "nested",
        switches: Mapping[str, Any] | None = None,
    ) -> None:
        self.api_keys: dict[str, int] = dict(api_keys)
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in self.api_keys.values()):
            raise ValueError("api_keys maps each key to a project id (an integer >= 1)")
        self._projects = {pid: make_project(pid) for pid in {1, *self.api_keys.values()}}
        self._lock = threading.Lock()  # guards every field below
        self._runs: dict[int, Run] = {}
        self._next_id = 1
        self._snoozes: dict[int, Snooze] = {}
        self._next_snooze_id = 1
        self._queue: deque[RunScript] = deque()
        self._default = RunScript()
        self._env_scripts: dict[str, RunScript] = {}
        self._faults: list[Fault] = []
        self._requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED)
        self._initial_delay = check_delay(response_delay)
        self._response_delay = self._initial_delay
        initial = {name: default for name, (default, _) in SWITCHES.items()}
        initial["shape"] = check_shape(shape)
        initial.update(check_switches(switches or {}))
        self._initial_switches = initial
        self._switches = dict(initial)

    # --- settings ----------------------------------------------------------------------------------

    def project_of_key(self, key: str) -> int | None:
        """The project a key is bound to, or None for an unknown key."""
        return self.api_keys.get(key)

    def has_project(self, project_id: int) -> bool:
        """Whether some key (or the default) gives access to this project."""
        return project_id in self._projects

    def project(self, project_id: int) -> dict[str, Any]:
        """The project's id, name, slug and repo_name."""
        return dict(self._projects[project_id])

    def project_by_slug(self, slug: str) -> dict[str, Any] | None:
        """The project with this dashboard slug, or None."""
        return next((dict(p) for p in self._projects.values() if p["slug"] == slug), None)

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
    def switches(self) -> dict[str, Any]:
        """The current value of every switch."""
        with self._lock:
            return dict(self._switches)

    def switch(self, name: str) -> Any:
        """The current value of one switch."""
        return self._switches[name]

    def set_switches(self, **changes: Any) -> dict[str, Any]:
        """Change some switches (ValueError, and nothing changed, if one is invalid); returns all."""
        checked = check_switches(changes)
        with self._lock:
            self._switches.update(checked)
            return dict(self._switches)

    @property
    def shape(self) -> str:
        """The shape of GET /api/test-runs/{id}: "nested" or "flat"."""
        return str(self._switches["shape"])

    def set_shape(self, shape: Any) -> str:
        """Set the answer shape (ValueError unless nested or flat); returns it."""
        value = check_shape(shape)
        with self._lock:
            self._switches["shape"] = value
        return value

    def reset(self) -> None:
        """Forget runs, snoozes, faults, queued scripts and recorded requests; restore the initial
        settings."""
        with self._lock:
            self._response_delay = self._initial_delay
            self._switches = dict(self._initial_switches)
            self._runs.clear()
            self._next_id = 1
            self._snoozes.clear()
            self._next_snooze_id = 1
            self._queue.clear()
            self._default = RunScript()
            self._env_scripts.clear()
            self._faults.clear()
            self._requests.clear()

    # --- scripts and faults ------------------------------------------------------------------------

    def queue_runs(self, *scripts: RunScript) -> None:
        """Scripts for the next runs created through the API, consumed first in, first out."""
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

    # --- how runs are shown (callers hold the lock) ------------------------------------------------

    def _snooze_index(self, project_id: int) -> SnoozeIndex:
        index: SnoozeIndex = {}
        for snooze in self._snoozes.values():
            if snooze.project_id == project_id:
                for test_id in {t for v in snooze.versions for t in v.test_ids}:
                    index.setdefault(test_id, []).append(snooze)
        return index

    def _tests(
        self, run: Run, now: float, wall: float, index: SnoozeIndex
    ) -> tuple[tuple[Counts, Rows], Callable[[str], list[Snooze]], Callable[[str], bool]]:
        """A run's (counts, rows), the snoozes covering a key now, and whether a key's failure is
        left out of failed_count_after_snoozing (live, or as of the run's end when frozen)."""
        env_id = run.environment["id"]

        def covering(key: str) -> list[Snooze]:
            test_id = describe(key).pw_test_id
            return [s for s in index.get(test_id, ()) if s.covers(test_id, env_id, wall)]

        at = wall
        if self._switches["snooze_counts"] == "frozen":
            at = run.ended_wall(now) or wall

        def counted(key: str) -> bool:
            test_id = describe(key).pw_test_id
            return any(s.covers(test_id, env_id, at) for s in index.get(test_id, ()))

        return run.tests_at(now), covering, counted

    def _row(self, key: str, status: str, snoozes: list[Snooze]) -> dict[str, Any]:
        info = describe(key)
        details = self._switches["snooze_info_details"]
        snooze_info = []
        for snooze in snoozes if status == "failed" else ():
            entry: dict[str, Any] = {"snooze_id": snooze.id}
            if details:
                entry.update(
                    snooze_until=iso_utc(snooze.current.until), description=snooze.current.description
                )
            snooze_info.append(entry)
        return {
            "name": info.title if self._switches["row_names"] == "title" else info.title_path,
            "pw_test_id": info.pw_test_id,
            "status": status,
            "slug": diagnosis_slug(info) if status in ("failed", "flaky") else None,
            "snooze_info": snooze_info,
            "nesting": list(info.nesting),
            "test_project": info.test_project,
        }

    def _view(
        self, run: Run, now: float, wall: float, index: SnoozeIndex
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        tests, covering, counted = self._tests(run, now, wall, index)
        fields = run.detail(now, tests, counted, self._projects[run.project_id])
        rows = [self._row(key, status, covering(key)) for key, status in tests[1]]
        return fields, rows

    def _item(self, run: Run, now: float, wall: float, index: SnoozeIndex) -> dict[str, Any]:
        tests, _, counted = self._tests(run, now, wall, index)
        return run.item(now, tests, counted)

    def _inspect(self, run: Run, now: float, wall: float) -> dict[str, Any]:
        fields, rows = self._view(run, now, wall, self._snooze_index(run.project_id))
        reason = run.cancel.reason if run.cancel else None
        return {**fields, "cancel_reason": reason, "origin": run.origin, "tests": rows}

    # --- runs --------------------------------------------------------------------------------------

    def _visible(self, project_id: int, run_id: int) -> Run:
        run = self._runs.get(run_id)
        if run is None or run.project_id != project_id:
            raise RunNotFound(run_id)
        return run

    def create_run(
        self, project_id: int, body: dict[str, Any], origin: str = "api", script: RunScript | None = None
    ) -> dict[str, Any]:
        """Create a run from a validated trigger body; returns its list item.

        ``origin`` "api" takes the next queued script; "control" (a run started outside the API)
        skips the queue. A given `script` wins over both. Raises UnknownEnvironment (unless the
        unknown_environment switch makes such a run error instead), or SourceNotFound for a
        rerun_source_id outside the project.
        """
        slug = str(body["environment"])
        env = environment(slug)
        errored = env is None or bool(env["is_disabled"])
        if errored and self._switches["unknown_environment"] == "reject":
            raise UnknownEnvironment(slug, enabled_slugs(), disabled=env is not None)
        env = {"id": None, "slug": slug, "name": slug} if env is None else env
        now = time.monotonic()
        with self._lock:
            source = self._runs.get(body.get("rerun_source_id", 0))
            if "rerun_source_id" in body and (source is None or source.project_id != project_id):
                raise SourceNotFound(body["rerun_source_id"])
            if script is None:
                if origin == "api" and self._queue:
                    script = self._queue.popleft()
                else:
                    script = self._env_scripts.get(slug, self._default)
            if errored:
                script = _error_script(script)
            elif source is not None:
                script = self._rerun_script(script, source, body.get("rerun_only_failed") is True, now)
            elif body.get("test_case_ids"):
                wanted = set(body["test_case_ids"])
                selected = [key for key in ACTIVE_IDS if key in wanted]  # unknown ids are ignored
                script = select_script(script, selected) if selected else _error_script(script)
            env_fields = {k: env[k] for k in ("id", "slug", "name")}
            run = Run(self._next_id, project_id, env_fields, script, _copy(body), origin)
            self._runs[run.id] = run
            self._next_id += 1
            snoozed = [describe(key).pw_test_id for key in script.snoozed_keys()]
            wall = time.time()
            if snoozed:
                until = wall + SCRIPTED_SNOOZE_DAYS * 86400
                version = SnoozeVersion(wall, tuple(snoozed), until, None, f"Scripted for test run {run.id}")
                self._add_snooze(project_id, version, None, "emulator", "script", None)
            return self._item(run, time.monotonic(), wall, self._snooze_index(project_id))

    @staticmethod
    def _rerun_script(script: RunScript, source: Run, only_failed: bool, now: float) -> RunScript:
        """A re-run runs the source's tests, or only its failed ones once it has completed."""
        if only_failed and source.state_at(now)[0] in TERMINAL_STATES:
            return select_script(script, source.failed_keys(now))
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
        now, wall = time.monotonic(), time.time()
        with self._lock:
            run = self._visible(project_id, run_id)
            return self._view(run, now, wall, self._snooze_index(project_id))

    def cancel(self, project_id: int, run_id: int, reason: str | None) -> tuple[str, str]:
        """("cancelled" | "terminal", state before) of a cancel request; raises RunNotFound."""
        now = time.monotonic()
        with self._lock:
            run = self._visible(project_id, run_id)
            before = run.state_at(now)[0]
            return run.request_cancel(reason, now), before

    def list_items(
        self, project_id: int, run_id: int | None = None, days: int | None = None
    ) -> list[dict[str, Any]]:
        """List items of a project's runs (environment_id included), newest first."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            index = self._snooze_index(project_id)
            runs = [
                r
                for r in self._runs.values()
                if r.project_id == project_id
                and (run_id is None or r.id == run_id)
                and (days is None or r.created_wall >= wall - days * 86400)
            ]
            return [self._item(r, now, wall, index) for r in reversed(runs)]

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
            return self._inspect(run, now, time.time())

    def age_run(self, run_id: int, seconds: float) -> dict[str, Any]:
        """Move a run's creation time `seconds` into the past (RunNotFound if unknown)."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
            raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            run.created_wall -= seconds
            return self._inspect(run, time.monotonic(), time.time())

    def run(self, run_id: int) -> dict[str, Any]:
        """One run (any project) with the inspection-only keys; RunNotFound if unknown."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            return self._inspect(run, time.monotonic(), time.time())

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, with the inspection-only keys."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            return [self._inspect(run, now, wall) for run in self._runs.values()]

    def trigger_body(self, run_id: int) -> dict[str, Any]:
        """The JSON body that created a run, as stored (RunNotFound if unknown)."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise RunNotFound(run_id)
            body: dict[str, Any] = _copy(run.body)
            return body

    # --- snoozes -----------------------------------------------------------------------------------

    def _add_snooze(
        self,
        project_id: int,
        version: SnoozeVersion,
        created_from: int | None,
        created_by: str | None,
        origin: str,
        body: dict[str, Any] | None,
    ) -> Snooze:
        snooze = Snooze(self._next_snooze_id, project_id, version, created_from, created_by, origin, body)
        self._snoozes[snooze.id] = snooze
        self._next_snooze_id += 1
        return snooze

    def _check_references(self, project_id: int, scope: int | None, created_from: int | None) -> None:
        if scope is not None and environment_by_id(scope) is None:
            raise BadReference("scoped_to_environment_id", scope, [e["id"] for e in ENVIRONMENTS])
        if created_from is not None:
            run = self._runs.get(created_from)
            if run is None or run.project_id != project_id:
                raise BadReference("created_from_test_run_id", created_from, [])

    def create_snooze(
        self,
        project_id: int,
        test_ids: list[str],
        snooze_until: float,
        description: str | None = None,
        created_by: str | None = None,
        scoped_to_environment_id: int | None = None,
        created_from_test_run_id: int | None = None,
        origin: str = "api",
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a snooze (times are wall-clock epochs); raises BadReference. Returns its view."""
        wall = time.time()
        with self._lock:
            self._check_references(project_id, scoped_to_environment_id, created_from_test_run_id)
            version = SnoozeVersion(
                wall, tuple(test_ids), snooze_until, scoped_to_environment_id, description
            )
            body = None if body is None else _copy(body)
            snooze = self._add_snooze(project_id, version, created_from_test_run_id, created_by, origin, body)
            return snooze.view()

    def update_snooze(self, project_id: int, snooze_id: int, **changes: Any) -> dict[str, Any]:
        """Edit a snooze: any of test_ids, until, scope, description (SnoozeNotFound, BadReference)."""
        unknown = set(changes) - {"test_ids", "until", "scope", "description"}
        if unknown:
            raise TypeError(f"update_snooze got unknown fields: {', '.join(sorted(unknown))}")
        if "test_ids" in changes:
            changes["test_ids"] = tuple(changes["test_ids"])
        wall = time.time()
        with self._lock:
            snooze = self._snoozes.get(snooze_id)
            if snooze is None or snooze.project_id != project_id:
                raise SnoozeNotFound(snooze_id)
            self._check_references(project_id, changes.get("scope"), None)
            snooze.update(wall, **changes)
            return snooze.view()

    def snooze(self, project_id: int, snooze_id: int) -> dict[str, Any]:
        """One snooze of the project (SnoozeNotFound)."""
        with self._lock:
            snooze = self._snoozes.get(snooze_id)
            if snooze is None or snooze.project_id != project_id:
                raise SnoozeNotFound(snooze_id)
            return snooze.view()

    def list_snoozes(
        self, project_id: int, status: str = "active", environment_id: int | None = None
    ) -> list[Any]:
        """The project's snoozes, newest first: status active | expired | all; environment_id keeps
        only the snoozes scoped to that environment."""
        wall = time.time()
        with self._lock:
            return [
                s.view()
                for s in reversed(self._snoozes.values())
                if s.project_id == project_id
                and (status == "all" or s.active(wall) == (status == "active"))
                and (environment_id is None or s.current.scope == environment_id)
            ]

    def snoozes(self) -> list[dict[str, Any]]:
        """Every snooze, oldest first, with inspection-only keys (project_id, active, origin, body)."""
        wall = time.time()
        with self._lock:
            return [
                {
                    **s.view(),
                    "project_id": s.project_id,
                    "active": s.active(wall),
                    "origin": s.origin,
                    "body": s.body,
                }
                for s in self._snoozes.values()
            ]

    def snooze_body(self, snooze_id: int) -> dict[str, Any] | None:
        """The POST body that created a snooze (None if not created by a POST); SnoozeNotFound."""
        with self._lock:
            snooze = self._snoozes.get(snooze_id)
            if snooze is None:
                raise SnoozeNotFound(snooze_id)
            body: dict[str, Any] | None = _copy(snooze.body)
            return body

    # --- environments, test cases, analytics -------------------------------------------------------

    def environments(self, project_id: int) -> list[dict[str, Any]]:
        """The project's environments; latest_build is the build of its newest run that sent one."""
        with self._lock:
            runs = [
                r for r in reversed(self._runs.values()) if r.project_id == project_id and r.body.get("build")
            ]
            rows = []
            for env in ENVIRONMENTS:
                run = next((r for r in runs if r.environment["id"] == env["id"]), None)
                build = None
                if run is not None:
                    sent = run.body["build"]
                    build = {
                        "id": run.id,
                        "project_id": project_id,
                        "build_url": sent.get("url"),
                        "commit": sent.get("commit"),
                        "commit_url": sent.get("commit_url"),
                        "version": sent.get("version"),
                        "branch": sent.get("branch"),
                        "environment_id": env["id"],
                        "created_at": iso_utc(run.created_wall),
                    }
                rows.append(environment_row(env, project_id, build))
            return rows

    def test_cases(
        self,
        ids: list[str] | None = None,
        file_path: str | None = None,
        playwright_project: str | None = None,
        tags: list[str] | None = None,
        search: str | None = None,
        is_active: bool | None = None,
        first_seen_commit_sha: str | None = None,
        last_seen_commit_sha: str | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The catalogue filtered (every filter optional), and the sync error if switched on."""
        wanted = None if ids is None else set(ids)
        needle = None if search is None else search.lower()
        rows = []
        for case in CASES:
            row = test_case_row(case)
            if (
                (wanted is None or case.id in wanted)
                and (file_path is None or case.file_path.startswith(file_path))
                and (playwright_project is None or case.playwright_project == playwright_project)
                and (tags is None or set(tags) & set(case.tags))
                and (needle is None or needle in case.title.lower() or needle in case.file_path.lower())
                and (is_active is None or (row["last_seen_commit_sha"] == SYNC_SHA) == is_active)
                and (first_seen_commit_sha is None or row["first_seen_commit_sha"] == first_seen_commit_sha)
                and (last_seen_commit_sha is None or row["last_seen_commit_sha"] == last_seen_commit_sha)
            ):
                rows.append(row)
        sync_error = dict(SYNC_ERROR) if self._switches["test_cases_sync_error"] else None
        return rows, sync_error

    def analytics(
        self,
        project_id: int,
        first: date,
        last: date,
        environment_id: int | None = None,
        branch: str | None = None,
    ) -> dict[str, Any]:
        """Daily and summary figures of the project's finished runs created from `first` to `last`
        (UTC days, inclusive), as GET /api/v2/analytics/test-runs shows them."""
        keys = (
            "run_count",
            "passed_runs",
            "failed_runs",
            "error_runs",
            "cancelled_runs",
            "rerun_count",
            "total_tests",
            "passed_tests",
            "failed_tests",
            "failed_tests_after_snooze",
            "flaky_tests",
        )
        days = {
            (first + timedelta(days=n)).isoformat(): dict.fromkeys(keys, 0)
            for n in range((last - first).days + 1)
        }
        passing = self._switches["snoozed_failures_pass"]
        for item in self.list_items(project_id):
            created = datetime.strptime(item["created_at"][:10], "%Y-%m-%d").replace(tzinfo=timezone.utc)
            day = days.get(created.date().isoformat())
            result = run_result(item, passing)
            if (
                day is None
                or result is None
                or (environment_id is not None and item["environment_id"] != environment_id)
                or (branch is not None and item["test_run_branch"] != branch)
            ):
                continue
            day["run_count"] += 1
            if item["state"] == "ended":
                day["passed_runs" if result == "passed" else "failed_runs"] += 1
            else:
                day[f"{item['state']}_runs"] += 1
            day["rerun_count"] += item["rerun_source_id"] is not None
            for key, field in (
                ("total_tests", "total_count"),
                ("passed_tests", "success_count"),
                ("failed_tests", "failed_count"),
                ("failed_tests_after_snooze", "failed_count_after_snoozing"),
                ("flaky_tests", "flaky_count"),
            ):
                day[key] += item[field] or 0
        total = sum(d["run_count"] for d in days.values())

        def percent(part: int) -> int:
            return int(100 * part / total + 0.5) if total else 0

        passed, reruns = (
            sum(d["passed_runs"] for d in days.values()),
            sum(d["rerun_count"] for d in days.values()),
        )
        tests = sum(d["total_tests"] for d in days.values())
        summary = {
            "total_runs": total,
            "passed_runs": passed,
            "failed_runs": sum(d["failed_runs"] for d in days.values()),
            "error_runs": sum(d["error_runs"] for d in days.values()),
            "pass_rate": percent(passed),
            "avg_tests_per_run": int(tests / total + 0.5) if total else 0,
            "rerun_count": reruns,
            "rerun_rate": percent(reruns),
        }
        return {"daily": [{"date": day, **figures} for day, figures in days.items()], "summary": summary}
