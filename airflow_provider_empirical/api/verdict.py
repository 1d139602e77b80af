"""The verdict: how a finished test run ended, and whether the task's policy lets it pass.

One vocabulary of outcomes for runs, wait events and task summaries, and one pure function,
`judge(run, policy)`, used by the operator, the sensor, the trigger, the durable "already
ended well" check and the probe. Adding a wait condition means: a field of `Policy`, a rule
in `judge`, and its line in the docs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from airflow_provider_empirical.api.test_runs import executed_count, explain_error_code, format_duration

# How a wait ended. `success`: the run ended with tests executed and none failing; `failed`:
# tests failed; `empty`: no test was executed; `unreadable`: the answer does not let us tell
# (fail closed); `error` / `cancelled`: the run's own state; `timeout`: we stopped waiting.
Outcome = Literal["success", "failed", "empty", "unreadable", "error", "cancelled", "timeout"]
OUTCOMES: frozenset[str] = frozenset(
    {"success", "failed", "empty", "unreadable", "error", "cancelled", "timeout"}
)


@dataclass(frozen=True)
class Policy:
    """What a task asks of a finished run before it succeeds (the operator's and sensor's flags)."""

    fail_on_test_failure: bool = True
    fail_on_empty_run: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, for trigger kwargs."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> Policy:
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in (values or {}).items() if key in known})


@dataclass(frozen=True)
class Verdict:
    """The outcome of a run, whether the policy lets the task pass, and the rule that decided."""

    outcome: Outcome
    passes: bool
    reason: str  # the rule that decided, for the log and the failure message


def outcome_of(run: Mapping[str, Any]) -> Outcome:
    """How a run in a terminal state ended, failing closed when its result cannot be read."""
    state = run["state"]
    if state == "error":
        return "error"
    if state == "cancelled":
        return "cancelled"
    if run.get("unreadable") or run.get("failed_count") is None:
        return "unreadable"
    if run["failed_count"] > 0:
        return "failed"
    executed = executed_count(run)
    if executed is None:
        return "unreadable"
    return "empty" if executed == 0 else "success"


def judge(run: Mapping[str, Any], policy: Policy) -> Verdict:
    """The verdict on a run in a terminal state under `policy`."""
    outcome = outcome_of(run)
    if outcome == "success":
        return Verdict(outcome, True, "tests were executed and none failed")
    if outcome == "failed":
        if not policy.fail_on_test_failure:
            return Verdict(outcome, True, "tests failed, and fail_on_test_failure=False lets it pass")
        return Verdict(outcome, False, f"{run['failed_count']} test(s) failed")
    if outcome == "empty":
        if not policy.fail_on_empty_run:
            return Verdict(outcome, True, "no test was executed, and fail_on_empty_run=False lets it pass")
        return Verdict(
            outcome,
            False,
            "A run that executes no test proves nothing (check the tags, test_case_ids and the "
            "environment); set fail_on_empty_run=False to allow it",
        )
    if outcome == "unreadable":
        return Verdict(outcome, False, "its result cannot be read (fail closed)")
    if outcome == "error":
        return Verdict(
            outcome, False, f"the run failed with an error ({explain_error_code(run.get('error_code'))})"
        )
    return Verdict(outcome, False, "the run was cancelled")


def passes(run: Mapping[str, Any], policy: Policy) -> bool:
    return judge(run, policy).passes


def describe(run: Mapping[str, Any], url: str | None = None) -> str:
    """One line a human can read, e.g. `... ended: 48 passed, 2 failed, 1 flaky, 0 skipped in 2m00s <url>`."""

    def count(name: str) -> str:
        value = run.get(name)
        return "?" if value is None else str(value)

    head = f"Empirical test run {run['id']}"
    tail = f" {url}" if url else ""
    state = run["state"]
    if state == "ended":
        line = (
            f"{head} ended: {count('success_count')} passed, {count('failed_count')} failed, "
            f"{count('flaky_count')} flaky, {count('skipped_count')} skipped "
            f"in {format_duration(run.get('duration'))}"
        )
        outcome = outcome_of(run)
        if outcome == "unreadable":
            missing = "; ".join(run.get("unreadable") or []) or "no failed or executed count"
            line += (
                f", but its result cannot be read ({missing} in the API answer is not what this "
                "provider understands): failing closed. This is an API contract mismatch, please report it"
            )
        elif outcome == "empty":
            line += ", but no test was executed"
        return line + tail
    if state == "error":
        return (
            f"{head} failed with an error ({explain_error_code(run.get('error_code'))}) "
            f"after {format_duration(run.get('duration'))}{tail}"
        )
    if state == "cancelled":
        return f"{head} was cancelled{tail}"
    return f"{head} is {state}{tail}"
