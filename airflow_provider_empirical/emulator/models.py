"""Data types of the emulator: scripted run outcomes, faults, recorded requests and runs.

Run state is derived from the clock at read time, so no thread per run is needed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
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
# Final counts per outcome when a script gives none (a cancelled run reports the rest as skipped).
DEFAULT_COUNTS: dict[str, tuple[int, int, int, int, int]] = {
    "passed": (24, 23, 0, 1, 0),
    "never": (24, 23, 0, 1, 0),
    "failed": (24, 20, 3, 1, 0),
    "error": (0, 0, 0, 0, 0),
    "cancelled": (24, 10, 0, 14, 0),
}


def iso_utc(epoch: float) -> str:
    """Format like the API does: ISO 8601 UTC with milliseconds and a Z."""
    dt = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class RunScript:
    """How one run behaves over time; counts left as None are derived from the outcome."""

    queued_for: float = 0.5
    run_for: float = 2.0
    outcome: str = "passed"
    total: int | None = None
    success: int | None = None
    failed: int | None = None
    skipped: int | None = None
    flaky: int | None = None
    error_code: str | None = None

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

    def counts(self) -> dict[str, int]:
        """Final counts: given ones win, total defaults to the sum, success to the remainder."""
        given = {key: getattr(self, key) for key in COUNT_KEYS}
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

    def state_at(self, now: float) -> tuple[str, str, float]:
        """State, outcome and progress, honouring a forced state."""
        if self.forced is None:
            return self._natural(now)
        _, _, progress = self._natural(self.forced.at)
        terminal = self.forced.state in TERMINAL_STATES
        return self.forced.state, self.forced.outcome, 1.0 if terminal else progress

    def _final_counts(self, outcome: str) -> dict[str, int]:
        script = self.script if self.script.outcome == outcome else RunScript(outcome=outcome)
        return script.counts()

    def item(self, now: float) -> dict[str, Any]:
        """The run as a list item of GET /api/test-runs."""
        state, outcome, progress = self.state_at(now)
        counts: dict[str, int | None] = dict.fromkeys(COUNT_KEYS)
        if state not in ("pending", "queued"):
            final = self._final_counts(outcome)
            # while started the total is known and the other counts grow with progress
            counts = {k: v if k == "total" else math.floor(v * progress) for k, v in final.items()}
        duration = None
        if state in TERMINAL_STATES:
            if self.forced is not None:
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
        }

    def detail(self, now: float, project: dict[str, Any]) -> dict[str, Any]:
        """The run as GET /api/test-runs/{id} shows it."""
        state, _, _ = self.state_at(now)
        error_code = None
        if state == "error":
            error_code = (self.forced.error_code if self.forced else None) or self.script.error_code
            error_code = error_code or "run_failed_with_error"
        return {
            **self.item(now),
            "error_code": error_code,
            "metadata": dict(self.body.get("metadata") or {}),
            "tags": list(self.body.get("tags") or []),
            "project": dict(project),
        }

    def force(self, state: str, error_code: str | None, now: float) -> None:
        """Impose a state; "passed"/"failed" are shorthands for "ended" with those counts."""
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
