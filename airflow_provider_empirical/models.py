"""The test run as this provider sees it: a typed, plain-JSON dict parsed defensively.

The GET schema is not published, so the parser accepts the run under `data.test_run`,
under `data`, or at the top level, tolerates unknown fields and states, and leaves
missing counts as None. Plain dicts travel through XCom and trigger events unchanged.
"""

from __future__ import annotations

from typing import Any, TypedDict

TERMINAL_STATES = frozenset({"ended", "error", "cancelled"})

ERROR_CODES = {
    "merge_conflict": "merge conflict when merging the test branch",
    "dispatch_failed": "failed to dispatch the run to workers",
    "report_not_generated": "the test report was not generated",
    "run_failed_with_error": "the run failed with an error during execution",
    "worker_interrupted": "a test worker was interrupted",
    "merge_reports_failed": "failed to merge sharded reports",
}

_COUNTS = ("total_count", "success_count", "failed_count", "skipped_count", "flaky_count")


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


TestRun.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _find_run(payload: Any) -> dict[str, Any]:
    data = payload.get("data", payload) if isinstance(payload, dict) else None
    if isinstance(data, dict):
        for candidate in (data.get("test_run"), data, payload):
            if isinstance(candidate, dict) and "id" in candidate:
                return candidate
    raise ValueError(
        f"no test run in the response (top-level keys: {sorted(payload)[:10]})"
        if isinstance(payload, dict)
        else "the response is not a JSON object"
    )


def parse_test_run(payload: Any) -> TestRun:
    """Parse a run from any of the response shapes; raises ValueError without an integer id."""
    raw = _find_run(payload)
    run_id = _int_or_none(raw.get("id"))
    if run_id is None:
        raise ValueError(f"the test run id {raw.get('id')!r} is not an integer")
    counts = {name: _int_or_none(raw.get(name)) for name in _COUNTS}
    return TestRun(
        id=run_id,
        state=str(raw.get("state") or "unknown"),
        total_count=counts["total_count"],
        success_count=counts["success_count"],
        failed_count=counts["failed_count"],
        skipped_count=counts["skipped_count"],
        flaky_count=counts["flaky_count"],
        duration=_int_or_none(raw.get("duration")),
        error_code=_str_or_none(raw.get("error_code")),
        test_run_branch=_str_or_none(raw.get("test_run_branch")),
        environment_slug=_str_or_none(raw.get("environment_slug")),
        created_at=_str_or_none(raw.get("created_at")),
    )


def is_terminal(run: TestRun) -> bool:
    return run["state"] in TERMINAL_STATES


def passed(run: TestRun) -> bool:
    """Ended with no failed test (a run whose counts are missing is judged by its state)."""
    return run["state"] == "ended" and not run.get("failed_count")


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


def describe(run: TestRun, url: str | None = None) -> str:
    """One line a human can read, e.g. `... ended: 48 passed, 2 failed, 1 flaky, 0 skipped in 2m00s <url>`."""

    def count(name: str) -> str:
        value = run.get(name)
        return "?" if value is None else str(value)

    head = f"Empirical test run {run['id']}"
    tail = f" {url}" if url else ""
    state = run["state"]
    if state == "ended":
        return (
            f"{head} ended: {count('success_count')} passed, {count('failed_count')} failed, "
            f"{count('flaky_count')} flaky, {count('skipped_count')} skipped "
            f"in {format_duration(run.get('duration'))}{tail}"
        )
    if state == "error":
        return (
            f"{head} failed with an error ({explain_error_code(run.get('error_code'))}) "
            f"after {format_duration(run.get('duration'))}{tail}"
        )
    if state == "cancelled":
        return f"{head} was cancelled{tail}"
    return f"{head} is {state}{tail}"
