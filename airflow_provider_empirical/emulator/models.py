"""Data types of the emulator: scripted run outcomes, faults, recorded requests and runs.

Run state is derived from the clock at read time, so no thread per run is needed.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

OUTCOMES = ("passed", "failed", "error", "cancelled", "never")
STATES = ("pending", "queued", "started", "ended", "error", "cancelling", "cancelled")
TERMINAL_STATES = ("ended", "error", "cancelled")
ENVIRONMENTS: tuple[dict[str, Any], ...] = (
    {"id": 1, "slug": "production", "name": "Production"},
    {"id": 2, "slug": "staging", "name": "Staging"},
    {"id": 3, "slug": "development", "name": "Development"},
)
CANCELLING_FOR = 0.5
DEFAULT_STATUS = 0  # Fault.status when not given: 503, or 500 for echo_auth (resolved on creation)
COUNT_KEYS = ("total", "success", "failed", "skipped", "flaky")
# the status of a per-test row for each count
ROW_STATUS = {"success": "passed", "failed": "failed", "flaky": "flaky", "skipped": "skipped"}
SHAPES = ("nested", "flat")
ERROR_CODE_KEYS = ("error_code", "errorCode", "error.code")
SEP = " \u203a "  # Playwright's title separator (a single right-pointing angle quote)
SUITES = ("checkout", "login", "search", "cart", "profile", "settings", "onboarding")
ACTIONS = (
    "pays with card",
    "signs in with email",
    "shows only matching cards",
    "keeps items after reload",
    "updates the avatar",
    "saves the new password",
    "invites a teammate",
    "applies a discount code",
    "logs out everywhere",
)
# Final counts per outcome when a script gives none (a cancelled run reports the rest as skipped).
DEFAULT_COUNTS: dict[str, tuple[int, int, int, int, int]] = {
    "passed": (24, 23, 0, 1, 0),
    "never": (24, 23, 0, 1, 0),
    "failed": (24, 20, 3, 1, 0),
    "error": (0, 0, 0, 0, 0),
    "cancelled": (24, 10, 0, 14, 0),
}


def test_name(index: int) -> str:
    """Deterministic name of the index-th generated test (1-based): "checkout > pays with card #1",
    with Playwright's separator (U+203A) in place of ">"."""
    return f"{SUITES[(index - 1) % len(SUITES)]}{SEP}{ACTIONS[(index - 1) % len(ACTIONS)]} #{index}"


def _hex(text: str, size: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:size]


def pw_test_id(name: str) -> str:
    """A Playwright-like test id, "<file hash>-<test hash>", stable for a name across runs."""
    suite = name.split(SEP, 1)[0]
    return f"{_hex('file:' + suite, 20)}-{_hex('test:' + name, 20)}"


def test_row(name: str, status: str) -> dict[str, Any]:
    """One row of flattenedSummaryDetails; only failures and flaky tests have a diagnosis slug."""
    slug = None
    if status in ("failed", "flaky"):
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + "-" + _hex("slug:" + name, 6)
    return {"name": name, "pw_test_id": pw_test_id(name), "status": status, "slug": slug, "snooze_info": []}


def _names(value: Any, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{name} must be a list of non-empty strings or None, got {value!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{name} must not repeat a test name")


def iso_utc(epoch: float) -> str:
    """Format like the API does: ISO 8601 UTC with milliseconds and a Z."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class RunScript:
    """How one run behaves over time; counts left as None are derived from the outcome.

    ``tests`` names every test of the run (total = its length) and ``failed_tests`` names the ones
    that fail (failed = its length); other tests get the remaining statuses in order: passed,
    then flaky, then skipped. Without ``tests`` the names are generated ("checkout > pays with
    card #1", ... with U+203A for ">"). ``error_code_key`` picks the spelling of a run's error
    code in answers.
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
        _names(self.tests, "tests")
        _names(self.failed_tests, "failed_tests")
        if self.tests is not None:
            if self.total is not None and self.total != len(self.tests):
                raise ValueError(f"total ({self.total}) must equal the number of tests ({len(self.tests)})")
            unknown = sorted(set(self.failed_tests or ()) - set(self.tests))
            if unknown:
                raise ValueError(f"failed_tests not in tests: {', '.join(unknown)}")
        if self.failed_tests is not None and self.failed not in (None, len(self.failed_tests)):
            raise ValueError(f"failed ({self.failed}) must equal the number of failed_tests")
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
        """(name, final status) of each test, in order; one per counted test."""
        counts = self.counts()
        failed_names = list(self.failed_tests or [])
        names = list(self.tests) if self.tests is not None else None
        statuses = (
            ["passed"] * counts["success"]
            + ["failed"] * (counts["failed"] - len(failed_names))
            + ["flaky"] * counts["flaky"]
            + ["skipped"] * counts["skipped"]
        )
        if names is None:
            taken = set(failed_names)
            generated = (test_name(i) for i in range(1, 10**9))
            fresh = (g for g in generated if g not in taken)
            names = failed_names + [n for n, _ in zip(fresh, statuses, strict=False)]
        failing = set(failed_names)
        rest = iter(statuses)
        planned: list[tuple[str, str]] = []
        for name in names:
            status = "failed" if name in failing else next(rest, None)
            if status is not None:
                planned.append((name, status))
        return planned

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


def rerun_script(script: RunScript, failed: list[str]) -> RunScript:
    """The script of a re-run of only the `failed` tests: the outcome stays scriptable.

    "passed" makes them all pass, "failed" makes them fail again (or only the script's
    failed_tests among them, or its first `failed` ones), "cancelled" skips the later half,
    and "error" keeps the script's own counts.
    """
    if script.outcome == "error":
        return script
    unset: dict[str, Any] = dict.fromkeys(COUNT_KEYS)
    if script.outcome == "cancelled":
        skipped = len(failed) - len(failed) // 2
        return replace(script, **unset, tests=failed, failed_tests=None, skipped=skipped)
    if script.failed_tests is not None:
        failing = [name for name in failed if name in script.failed_tests]
    elif script.failed is not None:
        failing = failed[: script.failed]
    else:
        failing = failed if script.outcome == "failed" else []
    return replace(script, **unset, tests=failed, failed_tests=failing)


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


class Run:
    """A triggered run: what was sent, its script and its creation time."""

    def __init__(
        self,
        run_id: int,
        project_id: int,
        environment: dict[str, Any],
        script: RunScript,
        body: dict[str, Any],
    ) -> None:
        self.id = run_id
        self.project_id = project_id
        self.environment = environment
        self.script = script
        self.body = body
        self.created_wall = time.time()  # for created_at and interval_in_days
        self.created = time.monotonic()  # for the state timeline, immune to clock changes
        self.forced: Forced | None = None
        self.cancel: Cancel | None = None
        self._plans: dict[str, tuple[int, list[tuple[str, str]]]] = {}

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

    def _plan(self, outcome: str) -> tuple[int, list[tuple[str, str]]]:
        """Total and final (name, status) of each test for an outcome (the script's, or a forced one)."""
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

    def tests_at(self, now: float) -> tuple[dict[str, int | None], list[tuple[str, str]]]:
        """Counts and the (name, status) rows of finished tests at `now`.

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
            rows = [(name, status if i in done else "skipped") for i, (name, status) in enumerate(planned)]
        else:
            total, planned = self._plan(outcome)
            rows = planned if state in TERMINAL_STATES else [planned[i] for i in _finished(planned, progress)]
        counts: dict[str, int | None] = {"total": total}
        for key, status in ROW_STATUS.items():
            counts[key] = sum(1 for _, s in rows if s == status)
        return counts, rows

    def rows(self, now: float) -> list[dict[str, Any]]:
        """flattenedSummaryDetails: one row per finished test."""
        return [test_row(name, status) for name, status in self.tests_at(now)[1]]

    def item(self, now: float) -> dict[str, Any]:
        """The run as a list item of GET /api/test-runs."""
        state, _, _ = self.state_at(now)
        counts, _ = self.tests_at(now)
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
        build = self.body.get("build") or {}
        return {
            "id": self.id,
            "state": state,
            "total_count": counts["total"],
            "success_count": counts["success"],
            "failed_count": counts["failed"],
            "skipped_count": counts["skipped"],
            "flaky_count": counts["flaky"],
            "duration": duration,
            "test_run_branch": self.body.get("branch") or build.get("branch") or "main",
            "environment_slug": self.environment["slug"],
            "environment_name": self.environment["name"],
            "build_url": build.get("url"),
            "build_branch": build.get("branch"),
            "commit": build.get("commit"),
            "created_at": iso_utc(self.created_wall),
            "rerun_source_id": self.body.get("rerun_source_id"),
        }

    def detail(self, now: float, project: dict[str, Any]) -> dict[str, Any]:
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
            **self.item(now),
            **error_field,
            "metadata": dict(self.body.get("metadata") or {}),
            "tags": list(self.body.get("tags") or []),
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

    def failed_names(self, now: float) -> list[str]:
        """Names of the tests that failed (final once the run is terminal)."""
        return [name for name, status in self.tests_at(now)[1] if status == "failed"]

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
