"""The test run as this provider sees it: a typed, plain-JSON dict parsed defensively.

The run answer's schema is not published. Empirical's own tooling reads it nested
(`data.test_run.testRun`, with one row per test in `data.test_run.flattenedSummaryDetails`);
the list items and older guesses are flat (`data.test_run` or `data`). The parser accepts
every one of them, reads each field from whichever level holds it, tolerates unknown fields
and states, and records counts it cannot read instead of guessing: an unreadable result
must never pass a test gate. Plain dicts travel through XCom and trigger events unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, TypedDict

TERMINAL_STATES = frozenset({"ended", "error", "cancelled"})

ERROR_CODES = {
    "merge_conflict": "merge conflict when merging the test branch",
    "dispatch_failed": "failed to dispatch the run to workers",
    "report_not_generated": "the test report was not generated",
    "run_failed_with_error": "the run failed with an error during execution",
    "worker_interrupted": "a test worker was interrupted",
    "merge_reports_failed": "failed to merge sharded reports",
}

COUNTS = ("total_count", "success_count", "failed_count", "skipped_count", "flaky_count")
# Per-test statuses: Playwright's own words plus Empirical's "flaky".
FAILED_STATUSES = frozenset({"failed", "timedout", "timed_out", "interrupted", "error", "crashed"})
FLAKY_STATUSES = frozenset({"flaky"})
SKIPPED_STATUSES = frozenset({"skipped", "pending", "queued", "running", "not_run"})
MAX_LISTED_TESTS = 1000  # bounds a trigger event / XCom; the counts stay exact


class TestCase(TypedDict):
    """One test of a run, from the run answer's per-test rows."""

    name: str
    status: str
    pw_test_id: str | None


class TestRun(TypedDict):
    """A test run; field names mirror the API's list items."""

    id: int
    state: str
    total_count: int | None
    success_count: int | None
    failed_count: int | None
    skipped_count: int | None
    flaky_count: int | None
    duration: int | None  # milliseconds
    error_code: str | None
    test_run_branch: str | None
    environment_slug: str | None
    created_at: str | None
    commit: str | None  # of the build under test, when the run was started with one
    build_url: str | None
    build_branch: str | None
    project_slug: str | None
    failed_tests: list[TestCase] | None  # None: the answer carried no per-test rows
    flaky_tests: list[TestCase] | None
    unreadable: list[str]  # count fields that were present but not a whole number >= 0


TestRun.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class
TestCase.__test__ = False  # type: ignore[attr-defined]

Result = Literal["passed", "failed", "empty", "unreadable", "error", "cancelled"]


def _int_or_none(value: Any) -> int | None:
    """A whole number >= 0, from an int, an integral float or a digit string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _locate(payload: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's own dict, and the dicts around it that may hold its other fields (nearest first)."""
    if not isinstance(payload, dict):
        raise ValueError("the response is not a JSON object")
    data = _dict(payload.get("data"))
    wrapper = _dict(data.get("test_run"))
    nested = wrapper.get("testRun", wrapper.get("test_run"))
    for run, around in (
        (nested, [wrapper, data, payload]),  # data.test_run.testRun (Empirical's own tooling)
        (wrapper, [data, payload]),  # data.test_run (flat)
        (data, [payload]),  # data
        (payload, []),  # a bare list item
    ):
        if isinstance(run, dict) and "id" in run:
            return run, around
    raise ValueError(
        "no test run in the response (top-level keys: "
        f"{sorted(str(key) for key in payload)[:10]}; under data: {sorted(str(key) for key in data)[:10]})"
    )


def _pick(levels: list[dict[str, Any]], *names: str) -> Any:
    """The first present value of any of `names`, looking in the run first, then around it."""
    for level in levels:
        for name in names:
            if level.get(name) is not None:
                return level[name]
    return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _error_code(levels: list[dict[str, Any]]) -> str | None:
    """`error_code`, `errorCode` or `error.code`: the API does not document which one it uses."""
    code = _pick(levels, "error_code", "errorCode")
    if code is None:
        code = _dict(_pick(levels, "error")).get("code")
    return _str_or_none(code)


def _rows(levels: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    rows = _pick(levels, "flattenedSummaryDetails", "flattened_summary_details")
    if not isinstance(rows, list):
        return None
    return [row for row in rows if isinstance(row, dict)]


def parse_test_cases(rows: list[dict[str, Any]]) -> list[TestCase]:
    """Per-test rows (`name`, `status`, `pw_test_id`) as TestCase dicts; nameless rows keep their id."""
    cases = []
    for row in rows:
        pw_test_id = _str_or_none(row.get("pw_test_id"))
        name = _str_or_none(row.get("name")) or _str_or_none(row.get("title")) or pw_test_id
        name = name or "(unnamed test)"
        cases.append(TestCase(name=name, status=str(row.get("status") or "unknown"), pw_test_id=pw_test_id))
    return cases


def _status_is(case: TestCase, statuses: frozenset[str]) -> bool:
    return case["status"].lower() in statuses


def parse_test_run(payload: Any) -> TestRun:
    """Parse a run from any of the response shapes; raises ValueError without an integer id."""
    raw, around = _locate(payload)
    run_id = _int_or_none(raw.get("id"))
    if run_id is None or run_id == 0:
        raise ValueError(f"the test run id is not an integer >= 1 (got a {type(raw.get('id')).__name__})")
    levels = [raw, *around]
    counts: dict[str, int | None] = {}
    unreadable = []
    for name in COUNTS:
        value = _pick(levels, name, _camel(name))
        counts[name] = _int_or_none(value)
        if value is not None and counts[name] is None:
            unreadable.append(name)
    state = str(_pick(levels, "state") or "unknown")
    # per-test rows matter once the run has finished; parsing thousands of them on every poll of
    # a running one would be most of a trigger's CPU (bench figure 2)
    rows = _rows(levels) if state in TERMINAL_STATES else None
    cases = parse_test_cases(rows) if rows is not None else None
    failed = flaky = None
    if cases is not None:
        failed = [case for case in cases if _status_is(case, FAILED_STATUSES)]
        flaky = [case for case in cases if _status_is(case, FLAKY_STATUSES)]
        _fill_counts_from_rows(counts, unreadable, cases, failed, flaky)
    project = _dict(_pick(levels, "project"))
    return TestRun(
        id=run_id,
        state=state,
        total_count=counts["total_count"],
        success_count=counts["success_count"],
        failed_count=counts["failed_count"],
        skipped_count=counts["skipped_count"],
        flaky_count=counts["flaky_count"],
        duration=_int_or_none(_pick(levels, "duration")),
        error_code=_error_code(levels),
        test_run_branch=_str_or_none(_pick(levels, "test_run_branch", "testRunBranch")),
        environment_slug=_str_or_none(_pick(levels, "environment_slug", "environmentSlug")),
        created_at=_str_or_none(_pick(levels, "created_at", "createdAt")),
        commit=_str_or_none(_pick(levels, "commit")),
        build_url=_str_or_none(_pick(levels, "build_url", "buildUrl")),
        build_branch=_str_or_none(_pick(levels, "build_branch", "buildBranch")),
        project_slug=_str_or_none(project.get("slug")) or _str_or_none(_pick(levels, "project_slug")),
        failed_tests=failed[:MAX_LISTED_TESTS] if failed is not None else None,
        flaky_tests=flaky[:MAX_LISTED_TESTS] if flaky is not None else None,
        unreadable=unreadable,
    )


def _fill_counts_from_rows(
    counts: dict[str, int | None],
    unreadable: list[str],
    cases: list[TestCase],
    failed: list[TestCase],
    flaky: list[TestCase],
) -> None:
    """Counts the run level lacks are taken from the rows; more failed rows than counted fail closed."""
    skipped = sum(1 for case in cases if _status_is(case, SKIPPED_STATUSES))
    from_rows = {
        "total_count": len(cases),
        "failed_count": len(failed),
        "flaky_count": len(flaky),
        "skipped_count": skipped,
        "success_count": len(cases) - len(failed) - len(flaky) - skipped,
    }
    for name, value in from_rows.items():
        if counts[name] is None and name not in unreadable and cases:
            counts[name] = value
    if counts["failed_count"] is not None and len(failed) > counts["failed_count"]:
        counts["failed_count"] = len(failed)


def parse_created_at(value: Any) -> datetime | None:
    """An ISO 8601 time as the API writes it (`2024-01-15T10:30:00.000Z`), timezone-aware; else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def is_terminal(run: Mapping[str, Any]) -> bool:
    return run["state"] in TERMINAL_STATES


def executed_count(run: Mapping[str, Any]) -> int | None:
    """How many tests actually ran (skipped ones did not), or None when the answer does not say."""
    success, failed, flaky = (run.get(name) for name in ("success_count", "failed_count", "flaky_count"))
    if success is not None and failed is not None:
        return int(success) + int(failed) + int(flaky or 0)
    total = run.get("total_count")
    if total is not None:
        return max(0, int(total) - int(run.get("skipped_count") or 0))
    return None


def result_of(run: Mapping[str, Any]) -> Result:
    """How a run in a terminal state ended, failing closed when its counts cannot be read."""
    state = run["state"]
    if state == "error":
        return "error"
    if state == "cancelled":
        return "cancelled"
    if "failed_count" in (run.get("unreadable") or ()) or run.get("failed_count") is None:
        return "unreadable"
    if run["failed_count"] > 0:
        return "failed"
    executed = executed_count(run)
    if executed is None:
        return "unreadable"
    return "empty" if executed == 0 else "passed"


def passed(run: Mapping[str, Any]) -> bool:
    """Ended with tests executed and none failed, every count that decides it readable."""
    return run["state"] == "ended" and result_of(run) == "passed"


def format_duration(ms: int | None) -> str:
    if ms is None:
        return "?"
    seconds = round(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def explain_error_code(code: str | None) -> str:
    if not code:
        return "no error code given"
    return f"{code}: {ERROR_CODES.get(code, 'an error code this provider does not know')}"


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
        result = result_of(run)
        if result == "unreadable":
            missing = ", ".join(run.get("unreadable") or []) or "no failed or executed count"
            line += (
                f", but its result cannot be read ({missing} in the API answer is not a whole number): "
                "failing closed. This is an API contract mismatch, please report it"
            )
        elif result == "empty":
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
