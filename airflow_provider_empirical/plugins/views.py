"""What the plugin's pages show, as plain JSON-ready data: no I/O, no Airflow, no FastAPI.

A run is read by `api.test_runs` (the hook parses it) and judged by `api.verdict` (with the
task's own pass policy): this module only arranges what those say for a page, so the "Empirical
tests" tab, its JSON twin and the task's log can never disagree on a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow_provider_empirical.api.test_runs import (
    MAX_LISTED_TESTS,
    TERMINAL_STATES,
    TestCase,
    TestRun,
    explain_error_code,
    format_duration,
    int_or_none,
    parse_time,
)
from airflow_provider_empirical.api.verdict import Policy, failures_of, judge, outcome_of

# Filters of the tests table: the failures that count, the snoozed ones, the flaky ones, or all three.
STATUSES = ("failed", "snoozed", "flaky", "all")
PAGE_SIZE = 100  # rows of the tests table per page: a run of thousands of tests stays one quick page
MAX_QUERY = 200  # characters of a name search
RUNS_PER_ENVIRONMENT = 10  # the project page's last runs of each environment
PASS_RATE_DAYS = 30


# -- the task's run ------------------------------------------------------------------------------


def _test(case: TestCase) -> dict[str, Any]:
    snooze = case.get("snooze")
    row: dict[str, Any] = {
        "name": case["name"],
        "status": case["status"],
        "file": case.get("file"),
        "project": case.get("project"),
        "pw_test_id": case.get("pw_test_id"),
        "url": case.get("url"),
    }
    if snooze is not None:
        row["snooze"] = {
            "id": snooze.get("snooze_id"),
            "until": snooze.get("snooze_until"),
            "description": snooze.get("description"),
        }
    return row


def task_run_data(
    run: TestRun, policy: Policy, *, run_url: str | None, snoozes_url: str | None
) -> dict[str, Any]:
    """Everything the "Empirical tests" tab shows of the task's run, JSON-ready.

    `verdict` is the task's pass policy applied to the run (None while it has not finished);
    `tests` lists the failures that count, the snoozed failures and the flaky tests, each with
    its own page's link. `listed` says how many rows each list has and `complete` whether the
    answer named every one of them (it names none while the run is going).
    """
    terminal = run["state"] in TERMINAL_STATES
    verdict = judge(run, policy) if terminal else None
    failures = failures_of(run, policy.honor_snoozes)
    counted = failures.counted or []
    snoozed = failures.snoozed or []
    flaky = run.get("flaky_tests") or []
    failed_rows = run.get("failed_rows")
    named = run.get("failed_tests") is not None
    complete = named and (failed_rows is None or failed_rows <= MAX_LISTED_TESTS)
    if named and run.get("flaky_count") is not None and len(flaky) < int(run["flaky_count"] or 0):
        complete = False
    return {
        "test_run": {
            "id": run["id"],
            "state": run["state"],
            "finished": terminal,
            "environment": run.get("environment_slug"),
            "branch": run.get("test_run_branch"),
            "created_at": run.get("created_at"),
            "duration_ms": run.get("duration"),
            "duration": format_duration(run.get("duration")) if run.get("duration") is not None else None,
            "commit": run.get("commit"),
            "build_url": run.get("build_url"),
            "build_branch": run.get("build_branch"),
            "error": explain_error_code(run.get("error_code")) if run["state"] == "error" else None,
            "unreadable": list(run.get("unreadable") or []),
        },
        "verdict": None
        if verdict is None
        else {
            "outcome": verdict.outcome,
            "passes": verdict.passes,
            "reason": verdict.reason,
            "policy": policy.to_dict(),
        },
        "counts": {
            "total": run.get("total_count"),
            "passed": run.get("success_count"),
            "failed": run.get("failed_count"),
            "failed_counting": failures.count,
            "counting_basis": failures.basis,
            "snoozed": _snoozed_count(run, len(snoozed) if named else None),
            "flaky": run.get("flaky_count"),
            "skipped": run.get("skipped_count"),
        },
        "tests": {
            "failed": [_test(case) for case in counted],
            "snoozed": [_test(case) for case in snoozed],
            "flaky": [_test(case) for case in flaky],
        },
        "listed": {"named": named, "complete": complete, "failed_rows": failed_rows},
        "links": {
            "run": run_url,
            "report": f"{run_url}/debug/html" if run_url else None,
            "snoozes": snoozes_url,
        },
    }


def _snoozed_count(run: TestRun, rows: int | None) -> int | None:
    """Failures a snooze covers: the run's two counts when it has both, else its snoozed rows."""
    raw, after = run.get("failed_count"), run.get("failed_count_after_snoozing")
    if raw is not None and after is not None and after <= raw:
        return raw - after
    return rows


def status_filter(value: str | None) -> str:
    """The tests table's filter from the query string; anything else is the default, `failed`."""
    return value if value in STATUSES else "failed"


def page_number(value: str | None) -> int:
    number = int_or_none(value)
    return number if number is not None and 1 <= number <= 1_000_000 else 1


def select_tests(
    tests: Mapping[str, Sequence[Mapping[str, Any]]], status: str, query: str, page: int
) -> tuple[list[dict[str, Any]], int, int, int]:
    """One page of the tests table: (rows, matching rows, page, pages).

    Each row gets a `kind` (failed / snoozed / flaky); `query` keeps the rows whose name, file
    or Playwright project contains it (case-insensitive). A page past the end shows the last one.
    """
    kinds = ("failed", "snoozed", "flaky") if status == "all" else (status,)
    needle = query.strip().lower()[:MAX_QUERY]
    rows = [
        {**row, "kind": kind}
        for kind in kinds
        for row in tests.get(kind, [])
        if not needle
        or needle in str(row.get("name") or "").lower()
        or needle in str(row.get("file") or "").lower()
        or needle in str(row.get("project") or "").lower()
    ]
    pages = max(1, math.ceil(len(rows) / PAGE_SIZE))
    page = min(max(1, page), pages)
    start = (page - 1) * PAGE_SIZE
    return rows[start : start + PAGE_SIZE], len(rows), page, pages


# -- the project page ----------------------------------------------------------------------------


def run_row(run: TestRun, url: str | None) -> dict[str, Any]:
    """One run of the project page: its counts and Empirical's own verdict (default pass policy)."""
    terminal = run["state"] in TERMINAL_STATES
    verdict = judge(run, Policy()) if terminal else None
    return {
        "id": run["id"],
        "state": run["state"],
        "outcome": verdict.outcome if verdict else None,
        "passes": verdict.passes if verdict else None,
        "reason": verdict.reason if verdict else None,
        "created_at": run.get("created_at"),
        "branch": run.get("test_run_branch"),
        "commit": run.get("commit"),
        "total": run.get("total_count"),
        "failed": run.get("failed_count"),
        "failed_counting": run.get("failed_count_after_snoozing"),
        "flaky": run.get("flaky_count"),
        "duration": format_duration(run.get("duration")) if run.get("duration") is not None else None,
        "url": url,
    }


def group_by_environment(
    runs: Iterable[TestRun], limit: int = RUNS_PER_ENVIRONMENT
) -> dict[str, list[TestRun]]:
    """The newest `limit` runs of each environment slug (runs come newest first), in first-seen order."""
    groups: dict[str, list[TestRun]] = {}
    for run in runs:
        slug = run.get("environment_slug") or "(no environment)"
        group = groups.setdefault(slug, [])
        if len(group) < limit:
            group.append(run)
    return groups


def _days(today: date, days: int) -> list[date]:
    return [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def _rate(passed: int, total: int) -> int | None:
    """A percentage 0-100 rounded half up, as Empirical's analytics gives it; None without runs."""
    return math.floor(passed * 100 / total + 0.5) if total else None


def pass_rate_from_runs(
    runs: Iterable[TestRun], *, today: date | None = None, days: int = PASS_RATE_DAYS
) -> dict[str, Any]:
    """The daily pass rate computed from runs, when the analytics endpoint does not answer.

    As Empirical's analytics counts them: finished runs by the UTC day they were created; a run
    passes when it ended with tests executed and no failure left after snoozing. Runs still
    going and runs whose time cannot be read are left out.
    """
    today = today or datetime.now(timezone.utc).date()
    window = _days(today, days)
    first = window[0]
    totals = {day: [0, 0] for day in window}
    for run in runs:
        if run["state"] not in TERMINAL_STATES:
            continue
        created = parse_time(run.get("created_at"))
        if created is None:
            continue
        day = created.astimezone(timezone.utc).date()
        if day < first or day > today:
            continue
        totals[day][1] += 1
        if outcome_of(run) == "success":
            totals[day][0] += 1
    passed = sum(value[0] for value in totals.values())
    total = sum(value[1] for value in totals.values())
    return {
        "source": "runs",
        "days": [
            {
                "date": day.isoformat(),
                "runs": totals[day][1],
                "passed": totals[day][0],
                "rate": _rate(*totals[day]),
            }
            for day in window
        ],
        "summary": {"runs": total, "passed": passed, "rate": _rate(passed, total)},
    }


def pass_rate_from_analytics(payload: Any, *, days: int = PASS_RATE_DAYS) -> dict[str, Any]:
    """The daily pass rate of `GET /api/v2/analytics/test-runs` (documented: `data.daily[]` with
    `date`, `run_count`, `passed_runs`; `data.summary.pass_rate` an integer 0-100).

    ValueError when the answer has no readable `data.daily`: the caller computes from the runs.
    """
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, Mapping):
        raise ValueError("no data in the analytics answer")
    daily = data.get("daily")
    if not isinstance(daily, list):
        raise ValueError("no data.daily in the analytics answer")
    rows = []
    for item in daily[-days:]:
        if not isinstance(item, Mapping) or not isinstance(item.get("date"), str):
            raise ValueError("an analytics day without a date")
        runs = int_or_none(item.get("run_count"))
        passed = int_or_none(item.get("passed_runs"))
        if runs is None or passed is None or passed > runs:
            raise ValueError(f"analytics day {item['date'][:10]!r} without readable run counts")
        rows.append({"date": item["date"][:10], "runs": runs, "passed": passed, "rate": _rate(passed, runs)})
    summary = data.get("summary")
    summary = summary if isinstance(summary, Mapping) else {}
    total = sum(row["runs"] for row in rows)
    passed_total = sum(row["passed"] for row in rows)
    rate = int_or_none(summary.get("pass_rate"))
    return {
        "source": "analytics",
        "days": rows,
        "summary": {
            "runs": total,
            "passed": passed_total,
            "rate": rate if rate is not None and rate <= 100 else _rate(passed_total, total),
        },
    }
