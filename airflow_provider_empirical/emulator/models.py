"""Value types of the emulator: scripted run outcomes, faults, recorded requests, runs and snoozes.

Run state is derived from the clock at read time, so no thread per run is needed. Tests are
known by key (see catalogue): a catalogue Playwright id, or an ad-hoc test's name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

from .catalogue import pool, resolve

OUTCOMES = ("passed", "failed", "error", "cancelled", "never")
STATES = ("pending", "queued", "started", "ended", "error", "cancelling", "cancelled")
TERMINAL_STATES = ("ended", "error", "cancelled")
CANCELLING_FOR = 0.5
DEFAULT_STATUS = 0  # Fault.status when not given: 503, or 500 for echo_auth (resolved on creation)
COUNT_KEYS = ("total", "success", "failed", "skipped", "flaky")
# the status of a per-test row for each count
ROW_STATUS = {"success": "passed", "failed": "failed", "flaky": "flaky", "skipped": "skipped"}
ERROR_CODE_KEYS = ("error_code", "errorCode", "error.code")
# Final counts per outcome when a script gives none (a cancelled run reports the rest as skipped).
DEFAULT_COUNTS: dict[str, tuple[int, int, int, int, int]] = {
    "passed": (24, 23, 0, 1, 0),
    "never": (24, 23, 0, 1, 0),
    "failed": (24, 20, 3, 1, 0),
    "error": (0, 0, 0, 0, 0),
    "cancelled": (24, 10, 0, 14, 0),
}


def _names(value: Any, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{name} must be a list of non-empty strings or None, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} must not repeat a test name")
    keys = [resolve(v) for v in value]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{name} names the same test twice (a catalogue title and its id?)")


def _keys(value: list[str] | None) -> list[str]:
    return [resolve(v) for v in value or ()]


def iso_utc(epoch: float) -> str:
    """Format like the API does: ISO 8601 UTC with milliseconds and a Z."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class RunScript:
    """How one run behaves over time; counts left as None are derived from the outcome.

    ``tests`` names every test of the run (total = its length); ``failed_tests`` and
    ``flaky_tests`` name the ones that fail or pass only on retry. Names may be catalogue titles
    or Playwright ids (see catalogue) or any other name (an ad-hoc test). Other tests get the
    remaining statuses in order: passed, failed, flaky, skipped. Without ``tests`` a run executes
    the active catalogue (24 tests), then generated ad-hoc tests if the total is larger.
    ``snoozed_tests``: True, or the failed_tests that a snooze covers; the emulator creates that
    snooze (7 days, every environment) when the run is created. ``error_code_key`` picks the
    spelling of a run's error code in answers.
    """

    queued_for: float = 0.5
    run_for: float = 2.0
    outcome: str = "passed"
    total: int | None = None
    success: int | None = None
    failed: int | None = None
    skipped: int | None = None
    flaky: int | None = None
    error_code: str | None = None
    tests: list[str] | None = None
    failed_tests: list[str] | None = None
    error_code_key: str = "error_code"
    flaky_tests: list[str] | None = None
    snoozed_tests: list[str] | bool | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        for name in ("queued_for", "run_for"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in COUNT_KEYS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be an integer >= 0 or None, got {value!r}")
        if self.error_code is not None and not isinstance(self.error_code, str):
            raise ValueError(f"error_code must be a string or None, got {self.error_code!r}")
        if self.outcome == "error" and self.error_code is None:
            self.error_code = "run_failed_with_error"
        if self.error_code_key not in ERROR_CODE_KEYS:
            raise ValueError(f"error_code_key must be one of {', '.join(ERROR_CODE_KEYS)}")
        for name in ("tests", "failed_tests", "flaky_tests"):
            _names(getattr(self, name), name)
        failing, flaky = set(_keys(self.failed_tests)), set(_keys(self.flaky_tests))
        if failing & flaky:
            raise ValueError("a test cannot be in both failed_tests and flaky_tests")
        if self.tests is not None:
            if self.total is not None and self.total != len(self.tests):
                raise ValueError(f"total ({self.total}) must equal the number of tests ({len(self.tests)})")
            known = set(_keys(self.tests))
            for name in ("failed_tests", "flaky_tests"):
                unknown = [v for v in getattr(self, name) or () if resolve(v) not in known]
                if unknown:
                    raise ValueError(f"{name} not in tests: {', '.join(unknown)}")
        if self.failed_tests is not None and self.failed not in (None, len(self.failed_tests)):
            raise ValueError(f"failed ({self.failed}) must equal the number of failed_tests")
        if self.flaky_tests is not None and self.flaky not in (None, len(self.flaky_tests)):
            raise ValueError(f"flaky ({self.flaky}) must equal the number of flaky_tests")
        snoozed = self.snoozed_tests
        if isinstance(snoozed, list):
            _names(snoozed, "snoozed_tests")
            outside = [v for v in snoozed if resolve(v) not in failing]
            if outside:
                raise ValueError(f"snoozed_tests must be failed_tests, not: {', '.join(outside)}")
        elif snoozed is not None and not isinstance(snoozed, bool):
            raise ValueError(
                f"snoozed_tests must be true, false, a list of failed_tests or None, got {snoozed!r}"
            )
        if self.tests is not None:
            counts = self.counts()
            rows = sum(counts[k] for k in ROW_STATUS)
            if rows != len(self.tests):
                raise ValueError(f"counts add up to {rows} tests but tests names {len(self.tests)}")

    def counts(self) -> dict[str, int]:
        """Final counts: given ones win, total defaults to the sum, success to the remainder."""
        given = {key: getattr(self, key) for key in COUNT_KEYS}
        if self.tests is not None:
            given["total"] = len(self.tests)
        if self.failed_tests is not None:
            given["failed"] = len(self.failed_tests)
        if self.flaky_tests is not None:
            given["flaky"] = len(self.flaky_tests)
        if all(value is None for value in given.values()):
            return dict(zip(COUNT_KEYS, DEFAULT_COUNTS[self.outcome], strict=True))
        failed, skipped, flaky = (given[k] or 0 for k in ("failed", "skipped", "flaky"))
        total = given["total"]
        success = given["success"]
        if success is None:
            success = max(0, (total or 0) - failed - skipped - flaky)
        if total is None:
            total = success + failed + skipped + flaky
        return {"total": total, "success": success, "failed": failed, "skipped": skipped, "flaky": flaky}

    def plan(self) -> list[tuple[str, str]]:
        """(test key, final status) of each test, in order; one per counted test."""
        counts = self.counts()
        failed_keys, flaky_keys = _keys(self.failed_tests), _keys(self.flaky_tests)
        named = {**dict.fromkeys(failed_keys, "failed"), **dict.fromkeys(flaky_keys, "flaky")}
        statuses = (
            ["passed"] * counts["success"]
            + ["failed"] * (counts["failed"] - len(failed_keys))
            + ["flaky"] * (counts["flaky"] - len(flaky_keys))
            + ["skipped"] * counts["skipped"]
        )
        if self.tests is not None:
            keys = _keys(self.tests)
        else:
            fresh = (key for key in pool() if key not in named)
            keys = [*named, *(key for key, _ in zip(fresh, statuses, strict=False))]
        rest = iter(statuses)
        planned: list[tuple[str, str]] = []
        for key in keys:
            status = named.get(key) or next(rest, None)
            if status is not None:
                planned.append((key, status))
        return planned

    def snoozed_keys(self) -> list[str]:
        """Keys of the failing tests this script says a snooze covers."""
        if not self.snoozed_tests:
            return []
        failing = [key for key, status in self.plan() if status == "failed"]
        if self.snoozed_tests is True:
            return failing
        chosen = set(_keys(self.snoozed_tests if isinstance(self.snoozed_tests, list) else None))
        return [key for key in failing if key in chosen]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as accepted by from_dict and the control API."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunScript:
        """Build from control-API JSON; unknown keys are an error so typos do not pass silently."""
        if not isinstance(data, dict):
            raise ValueError("a run script must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown run script keys: {', '.join(unknown)}")
        return cls(**data)


def select_script(script: RunScript, keys: list[str]) -> RunScript:
    """The script of a run of exactly `keys` (a re-run of failed tests, or a test_case_ids trigger).

    The outcome stays scriptable: "passed" makes them all pass, "failed" makes them fail (or only
    the script's failed_tests among them, or its first `failed` ones), "cancelled" skips the later
    half, and "error" keeps the script's own counts. flaky_tests and snoozed_tests among them carry
    over.
    """
    if script.outcome == "error":
        return script
    unset: dict[str, Any] = dict.fromkeys(COUNT_KEYS)
    if script.outcome == "cancelled":
        skipped = len(keys) - len(keys) // 2
        return replace(
            script,
            **unset,
            tests=keys,
            failed_tests=None,
            flaky_tests=None,
            snoozed_tests=None,
            skipped=skipped,
        )
    if script.failed_tests is not None:
        chosen = set(_keys(script.failed_tests))
        failing = [key for key in keys if key in chosen]
    elif script.failed is not None:
        failing = keys[: script.failed]
    else:
        failing = keys if script.outcome == "failed" else []
    flaky_chosen = set(_keys(script.flaky_tests))
    flaky = [key for key in keys if key in flaky_chosen and key not in failing]
    snoozed: list[str] | bool | None = script.snoozed_tests
    if isinstance(snoozed, list):
        chosen = set(_keys(snoozed))
        snoozed = [key for key in failing if key in chosen] or None
    return replace(
        script, **unset, tests=keys, failed_tests=failing, flaky_tests=flaky or None, snoozed_tests=snoozed
    )


@dataclass
class Fault:
    """An injected misbehaviour for requests matching method and path glob.

    ``status`` left at its default becomes 503 (500 with ``echo_auth``); ``None`` means a pure
    delay or drip of the normal answer. ``drip`` sends the body (normal or injected) at that many
    bytes per second after prompt headers with a correct Content-Length.
    """

    method: str = "GET"
    path: str = "/api/test-runs/*"
    times: int = 1
    status: int | None = DEFAULT_STATUS
    headers: dict[str, str] | None = None
    body: Any = None
    after_create: bool = False
    delay: float = 0.0
    malformed: bool = False
    drop: bool = False
    echo_auth: bool = False
    drip: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not isinstance(self.path, str):
            raise ValueError("method and path must be strings")
        if self.status == DEFAULT_STATUS and not isinstance(self.status, bool):
            self.status = 500 if self.echo_auth else 503
        self.method = self.method.upper()
        times_ok = isinstance(self.times, int) and not isinstance(self.times, bool)
        if not times_ok or not (self.times >= 1 or self.times == -1):
            raise ValueError("times must be a positive integer, or -1 for forever")
        if self.status is not None and (
            isinstance(self.status, bool) or not isinstance(self.status, int) or not 100 <= self.status <= 599
        ):
            raise ValueError("status must be an HTTP status code (100-599) or None")
        if self.headers is not None and not (
            isinstance(self.headers, dict) and all(isinstance(v, str) for v in self.headers.values())
        ):
            raise ValueError("headers must be an object of strings")
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise ValueError("delay must be a number >= 0")
        if self.drip is not None and (
            isinstance(self.drip, bool) or not isinstance(self.drip, (int, float)) or not self.drip > 0
        ):
            raise ValueError("drip must be a number of bytes per second > 0, or None")

    @property
    def acts(self) -> bool:
        """Whether the fault replaces the response (a pure delay does not)."""
        return self.drop or self.malformed or self.echo_auth or self.status is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class RecordedRequest:
    """One API request as the emulator received it, for assertions on client behaviour."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    time: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class Forced:
    """A state imposed by finish_run, frozen at the moment it was applied."""

    __slots__ = ("at", "error_code", "outcome", "state")

    def __init__(self, state: str, outcome: str, at: float, error_code: str | None) -> None:
        self.state, self.outcome, self.at, self.error_code = state, outcome, at, error_code


@dataclass(frozen=True)
class Cancel:
    """A cancel request that took effect: when, why, and how far the run had got."""

    at: float
    reason: str | None
    progress: float
    outcome: str  # the outcome whose finished tests keep their status


def _finished(tests: list[tuple[str, str]], progress: float) -> list[int]:
    """Indexes of the tests done at `progress`: the first floor(n * progress) of each status."""
    by_status: dict[str, list[int]] = {}
    for index, (_, status) in enumerate(tests):
        by_status.setdefault(status, []).append(index)
    done = [i for indexes in by_status.values() for i in indexes[: math.floor(len(indexes) * progress)]]
    return sorted(done)


Counts = dict[str, "int | None"]
Rows = list[tuple[str, str]]  # (test key, status)


class Run:
    """A triggered run: what was sent, its script, its environment and its creation time.

    ``environment`` is {"id", "slug", "name"}; the id is None for a run started on a slug the
    project does not have. ``origin`` is "api" (the trigger or re-run routes) or "control" (started
    by the emulator's control API, as Empirical's own schedule would).
    """

    def __init__(
        self,
        run_id: int,
        project_id: int,
        environment: dict[str, Any],
        script: RunScript,
        body: dict[str, Any],
        origin: str = "api",
    ) -> None:
        self.id = run_id
        self.project_id = project_id
        self.environment = environment
        self.script = script
        self.body = body
        self.origin = origin
        self.created_wall = time.time()  # for created_at, interval_in_days and analytics
        self.created = time.monotonic()  # for the state timeline, immune to clock changes
        self.forced: Forced | None = None
        self.cancel: Cancel | None = None
        self._plans: dict[str, tuple[int, Rows]] = {}

    def _natural(self, now: float) -> tuple[str, str, float]:
        """State, outcome and progress (0..1) from the script timeline."""
        s = self.script
        elapsed = now - self.created
        if elapsed < s.queued_for:
            return "queued", s.outcome, 0.0
        running = elapsed - s.queued_for
        if s.outcome == "never" or running < s.run_for:
            return "started", s.outcome, min(0.99, running / s.run_for) if s.run_for else 0.99
        if s.outcome in ("passed", "failed"):
            return "ended", s.outcome, 1.0
        if s.outcome == "error":
            return "error", s.outcome, 1.0
        return ("cancelling" if running < s.run_for + CANCELLING_FOR else "cancelled"), s.outcome, 1.0

    def _cancelled(self) -> Cancel | None:
        """The cancel in effect: the latest of a cancel request and a forced state wins."""
        if self.cancel is not None and (self.forced is None or self.forced.at <= self.cancel.at):
            return self.cancel
        return None

    def state_at(self, now: float) -> tuple[str, str, float]:
        """State, outcome and progress, honouring a cancel request or a forced state."""
        cancel = self._cancelled()
        if cancel is not None:
            state = "cancelling" if now < cancel.at + CANCELLING_FOR else "cancelled"
            return state, "cancelled", cancel.progress
        if self.forced is None:
            return self._natural(now)
        _, _, progress = self._natural(self.forced.at)
        terminal = self.forced.state in TERMINAL_STATES
        return self.forced.state, self.forced.outcome, 1.0 if terminal else progress

    def ended_wall(self, now: float) -> float | None:
        """Wall-clock time at which the run reached its terminal state, or None if it has not."""
        if self.state_at(now)[0] not in TERMINAL_STATES:
            return None
        cancel = self._cancelled()
        if cancel is not None:
            ended = cancel.at + CANCELLING_FOR
        elif self.forced is not None:
            ended = self.forced.at
        else:
            s = self.script
            ended = (
                self.created + s.queued_for + s.run_for + (CANCELLING_FOR if s.outcome == "cancelled" else 0)
            )
        return self.created_wall + (ended - self.created)

    def _plan(self, outcome: str) -> tuple[int, Rows]:
        """Total and final (key, status) of each test for an outcome (the script's, or a forced one)."""
        if outcome not in self._plans:
            script = self.script
            if script.outcome != outcome:
                keep = outcome in ("passed", "failed") and script.tests is not None
                script = RunScript(
                    outcome=outcome,
                    tests=script.tests if keep else None,
                    failed_tests=script.failed_tests if keep and outcome == "failed" else None,
                )
            self._plans[outcome] = (script.counts()["total"], script.plan())
        return self._plans[outcome]

    def tests_at(self, now: float) -> tuple[Counts, Rows]:
        """Counts and the (key, status) rows of finished tests at `now`.

        Queued: no counts, no rows. Started: the total, and rows (and counts) of finished tests
        only. Terminal: every test. Cancelled through the API: tests finished by then keep their
        status, the rest are skipped.
        """
        state, outcome, progress = self.state_at(now)
        if state in ("pending", "queued"):
            return dict.fromkeys(COUNT_KEYS), []
        cancel = self._cancelled()
        if cancel is not None:
            total, planned = self._plan(cancel.outcome)
            done = set(_finished(planned, cancel.progress))
            rows = [(key, status if i in done else "skipped") for i, (key, status) in enumerate(planned)]
        else:
            total, planned = self._plan(outcome)
            rows = planned if state in TERMINAL_STATES else [planned[i] for i in _finished(planned, progress)]
        counts: Counts = {"total": total}
        for key, status in ROW_STATUS.items():
            counts[key] = sum(1 for _, s in rows if s == status)
        return counts, rows

    def item(self, now: float, tests: tuple[Counts, Rows], snoozed: Callable[[str], bool]) -> dict[str, Any]:
        """The run's list-item fields; `snoozed(key)` says whether a snooze covers a failure."""
        state, _, _ = self.state_at(now)
        counts, rows = tests
        duration = None
        cancel = self._cancelled()
        if state in TERMINAL_STATES:
            if cancel is not None:
                ended = cancel.at + CANCELLING_FOR
                duration = round(max(0.0, ended - self.created - self.script.queued_for) * 1000)
            elif self.forced is not None:
                duration = round(max(0.0, self.forced.at - self.created - self.script.queued_for) * 1000)
            else:
                duration = round(self.script.run_for * 1000)
        after = counts["failed"]
        if after is not None:
            after -= sum(1 for key, status in rows if status == "failed" and snoozed(key))
        build = self.body.get("build") or {}
        return {
            "id": self.id,
            "state": state,
            "total_count": counts["total"],
            "success_count": counts["success"],
            "failed_count": counts["failed"],
            "failed_count_after_snoozing": after,
            "skipped_count": counts["skipped"],
            "flaky_count": counts["flaky"],
            "duration": duration,
            "test_run_branch": self.body.get("branch") or build.get("branch") or "main",
            "environment_id": self.environment["id"],
            "environment_slug": self.environment["slug"],
            "environment_name": self.environment["name"],
            "build_url": build.get("url"),
            "build_branch": build.get("branch"),
            "commit": build.get("commit"),
            "environment_variables_overrides": [
                dict(o) for o in self.body.get("environment_variables_overrides") or ()
            ],
            "created_at": iso_utc(self.created_wall),
            "rerun_source_id": self.body.get("rerun_source_id"),
        }

    def detail(
        self, now: float, tests: tuple[Counts, Rows], snoozed: Callable[[str], bool], project: dict[str, Any]
    ) -> dict[str, Any]:
        """The run's fields as GET /api/test-runs/{id} shows them (the same in both shapes)."""
        state, _, _ = self.state_at(now)
        error_code = None
        if state == "error":
            error_code = (self.forced.error_code if self.forced else None) or self.script.error_code
            error_code = error_code or "run_failed_with_error"
        key = self.script.error_code_key
        error_field: dict[str, Any]
        if key == "error.code":
            error_field = {"error": None if error_code is None else {"code": error_code}}
        else:
            error_field = {key: error_code}
        return {
            **self.item(now, tests, snoozed),
            **error_field,
            "metadata": dict(self.body.get("metadata") or {}),
            "tags": list(self.body.get("tags") or []),
            "test_case_ids": list(self.body.get("test_case_ids") or []),
            "project": dict(project),
        }

    def request_cancel(self, reason: str | None, now: float) -> str:
        """Cancel: "cancelled" (taking effect or already cancelling), or "terminal" (nothing to do)."""
        state, outcome, progress = self.state_at(now)
        if state in TERMINAL_STATES:
            return "terminal"
        if state != "cancelling":
            self.cancel = Cancel(now, reason, progress if state == "started" else 0.0, outcome)
        return "cancelled"

    def failed_keys(self, now: float) -> list[str]:
        """Keys of the tests that failed (final once the run is terminal)."""
        return [key for key, status in self.tests_at(now)[1] if status == "failed"]

    def force(self, state: str, error_code: str | None, now: float) -> None:
        """Impose a state; "passed"/"failed" are shorthands for "ended" with those counts.

        Unlike the cancel route, a forced "cancelled" keeps the fixed counts of that outcome.
        """
        if state in ("passed", "failed"):
            state, outcome = "ended", state
        elif state == "ended":
            outcome = self.script.outcome if self.script.outcome in ("passed", "failed") else "passed"
        elif state in ("error", "cancelled"):
            outcome = state
        elif state in STATES:
            outcome = self.script.outcome
        else:
            allowed = ", ".join((*STATES, "passed", "failed"))
            raise ValueError(f"state must be one of {allowed}, got {state!r}")
        self.forced = Forced(state, outcome, now, error_code)


@dataclass(frozen=True)
class SnoozeVersion:
    """What a snooze says from wall-clock time `at` on (until the next version)."""

    at: float
    test_ids: tuple[str, ...]
    until: float
    scope: int | None  # scoped_to_environment_id; None = every environment
    description: str | None


class Snooze:
    """A snooze of some Playwright tests until a time, with its history of edits.

    The history lets a run's failed_count_after_snoozing be frozen at the moment the run ended.
    ``origin`` is "api" (POST /api/snoozes), "control" (the control API) or "script" (a RunScript's
    snoozed_tests); ``body`` is the POST body that created it, if any.
    """

    def __init__(
        self,
        snooze_id: int,
        project_id: int,
        first: SnoozeVersion,
        created_from_test_run_id: int | None,
        created_by: str | None,
        origin: str,
        body: dict[str, Any] | None,
    ) -> None:
        self.id = snooze_id
        self.project_id = project_id
        self.versions = [first]
        self.created_from_test_run_id = created_from_test_run_id
        self.created_by = created_by
        self.origin = origin
        self.body = body

    @property
    def current(self) -> SnoozeVersion:
        return self.versions[-1]

    def version_at(self, wall: float) -> SnoozeVersion | None:
        """The version in force at `wall`, or None before the snooze existed."""
        for version in reversed(self.versions):
            if version.at <= wall:
                return version
        return None

    def covers(self, test_id: str, environment_id: int | None, wall: float) -> bool:
        """Whether the snooze covered a failure of `test_id` in that environment at `wall`."""
        version = self.version_at(wall)
        return (
            version is not None
            and wall < version.until
            and test_id in version.test_ids
            and (version.scope is None or version.scope == environment_id)
        )

    def active(self, wall: float) -> bool:
        """Active means snooze_until is still in the future."""
        return self.current.until > wall

    def update(self, wall: float, **changes: Any) -> None:
        """A new version from `wall` on: test_ids, until, scope and/or description changed."""
        self.versions.append(replace(self.current, at=wall, **changes))

    def view(self) -> dict[str, Any]:
        """The snooze as the API shows it."""
        current = self.current
        return {
            "id": self.id,
            "test_ids": list(current.test_ids),
            "snooze_until": iso_utc(current.until),
            "description": current.description,
            "created_from_test_run_id": self.created_from_test_run_id,
            "created_by": self.created_by,
            "created_at": iso_utc(self.versions[0].at),
            "updated_at": iso_utc(current.at),
            "scoped_to_environment_id": current.scope,
        }
