"""The verdict: how a finished test run ended, and whether the task's policy lets it pass.

One vocabulary of outcomes for runs, wait events and task summaries, and one pure function,
`judge(run, policy)`, used by the operator, the sensor, the trigger, the durable "already ended
well" check and the event-driven watcher. Adding a wait condition means: a field of `Policy`, a
rule in `judge`, the parameter in `waiting.BaseEmpiricalWaitOperator`, and its line in the docs.

Snoozes. Empirical lets a team snooze known failing tests, and its dashboard shows a run whose
only failures are snoozed as Passed; by default (`honor_snoozes=True`) so do we. The failures
that count are read from `failed_count_after_snoozing` when the answer has it, else from the
per-test rows' `snooze_info`; when neither can be read, the raw failures count (fail closed) and
the verdict says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from airflow_provider_empirical.api.test_runs import (
    TestCase,
    executed_count,
    explain_error_code,
    format_duration,
)

# How a wait ended. `success`: the run ended with tests executed and no failure that counts;
# `failed`: failures count; `empty`: no test was executed; `unreadable`: the answer does not let
# us tell (fail closed); `error` / `cancelled`: the run's own state; `timeout`: we stopped waiting.
Outcome = Literal["success", "failed", "empty", "unreadable", "error", "cancelled", "timeout"]
OUTCOMES: frozenset[str] = frozenset(
    {"success", "failed", "empty", "unreadable", "error", "cancelled", "timeout"}
)


@dataclass(frozen=True)
class Policy:
    """What a task asks of a finished run before it succeeds (the operator's and sensor's flags)."""

    fail_on_test_failure: bool = True
    fail_on_empty_run: bool = True
    honor_snoozes: bool = True
    max_failed_tests: int = 0
    fail_on_flaky: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, for trigger kwargs."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> Policy:
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in (values or {}).items() if key in known})


@dataclass(frozen=True)
class Failures:
    """The failed tests of a run as the policy counts them."""

    count: int | None  # failures that count; None: the run's result cannot be read
    raw: int | None  # every failure, snoozed or not
    counted: list[TestCase] | None  # rows of the failures that count (None: no rows)
    snoozed: list[TestCase] | None  # rows of failures a snooze covers (None: no rows)
    basis: str  # where `count` comes from, for the log


@dataclass(frozen=True)
class Verdict:
    """The outcome of a run, whether the policy lets the task pass, and the rule that decided."""

    outcome: Outcome
    passes: bool
    reason: str  # the rule that decided, for the log and the failure message
    failures: Failures


def failures_of(run: Mapping[str, Any], honor_snoozes: bool = True) -> Failures:
    """Which failures count: without snoozes, all of them; with, those no snooze covers."""
    raw = run.get("failed_count")
    rows: list[TestCase] | None = run.get("failed_tests")
    snoozed = [case for case in rows if case.get("snooze")] if rows is not None else None
    unsnoozed = [case for case in rows if not case.get("snooze")] if rows is not None else None
    if raw is None:
        return Failures(None, None, rows, snoozed, "no failed count")
    if not honor_snoozes:
        return Failures(raw, raw, rows, snoozed, "every failure counts (honor_snoozes=False)")
    after = run.get("failed_count_after_snoozing")
    if after is not None:  # how Empirical's dashboard judges the run
        if rows is not None and not any("snooze" in case for case in rows):
            # rows that do not say which failures are snoozed (the cases endpoint): name them by the count
            if after == 0:
                unsnoozed, snoozed = [], rows
            elif after < raw:
                snoozed = None  # which of the rows count is not known: all are named
        return Failures(after, raw, unsnoozed, snoozed, "failed_count_after_snoozing")
    if rows is not None and run.get("failed_rows") == raw and run.get("snoozed_rows") is not None:
        return Failures(
            raw - int(run["snoozed_rows"]), raw, unsnoozed, snoozed, "the per-test rows' snooze_info"
        )
    why = (
        "the answer carries neither failed_count_after_snoozing nor per-test rows for every failure, "
        "so snoozes cannot be told apart: every failure counts"
    )
    return Failures(raw, raw, rows, snoozed, why)


def outcome_of(run: Mapping[str, Any], honor_snoozes: bool = True) -> Outcome:
    """How a run in a terminal state ended, failing closed when its result cannot be read."""
    state = run["state"]
    if state == "error":
        return "error"
    if state == "cancelled":
        return "cancelled"
    if run.get("unreadable") or run.get("failed_count") is None:
        return "unreadable"
    count = failures_of(run, honor_snoozes).count
    if count is None:
        return "unreadable"
    if count > 0:
        return "failed"
    executed = executed_count(run)
    if executed is None:
        return "unreadable"
    return "empty" if executed == 0 else "success"


def judge(run: Mapping[str, Any], policy: Policy) -> Verdict:
    """The verdict on a run in a terminal state under `policy`."""
    outcome = outcome_of(run, policy.honor_snoozes)
    failures = failures_of(run, policy.honor_snoozes)
    if outcome == "error":
        return Verdict(
            outcome,
            False,
            f"the run failed with an error ({explain_error_code(run.get('error_code'))})",
            failures,
        )
    if outcome == "cancelled":
        return Verdict(outcome, False, "the run was cancelled", failures)
    if outcome == "unreadable":
        return Verdict(outcome, False, "its result cannot be read (fail closed)", failures)
    if outcome == "empty":
        if not policy.fail_on_empty_run:
            return Verdict(
                outcome, True, "no test was executed, and fail_on_empty_run=False lets it pass", failures
            )
        return Verdict(
            outcome,
            False,
            "A run that executes no test proves nothing (check the tags, test_case_ids and the "
            "environment); set fail_on_empty_run=False to allow it",
            failures,
        )
    passing = "tests were executed and none failed"
    if outcome == "failed":
        count = failures.count or 0
        snoozes = " (snoozed failures not counted)" if policy.honor_snoozes and failures.snoozed else ""
        if policy.fail_on_test_failure and count > policy.max_failed_tests:
            limit = (
                f", more than max_failed_tests={policy.max_failed_tests}" if policy.max_failed_tests else ""
            )
            return Verdict(outcome, False, f"{count} test(s) failed{snoozes}{limit}", failures)
        if policy.fail_on_test_failure:
            passing = f"{count} test(s) failed{snoozes}, within max_failed_tests={policy.max_failed_tests}"
        else:
            passing = f"{count} test(s) failed, and fail_on_test_failure=False lets it pass"
    elif failures.raw:
        passing = f"every failure ({failures.raw}) is snoozed, as Empirical judges it"
    flaky = run.get("flaky_count")
    if policy.fail_on_flaky and (flaky is None or flaky > 0):
        why = "the answer has no flaky count" if flaky is None else f"{flaky} test(s) were flaky"
        return Verdict(outcome, False, f"{why}, and fail_on_flaky=True", failures)
    return Verdict(outcome, True, passing, failures)


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
        after = run.get("failed_count_after_snoozing")
        snoozed = (
            f" ({after} after snoozing)" if after is not None and after != run.get("failed_count") else ""
        )
        line = (
            f"{head} ended: {count('success_count')} passed, {count('failed_count')} failed{snoozed}, "
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
