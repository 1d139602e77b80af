"""Test runs as this provider reads them: both run shapes, list pages and per-test rows.

The run answer's schema is not published (docs/api-evidence.md). Empirical's own tooling reads
it nested (`data.test_run.testRun`, with one row per test in
`data.test_run.flattenedSummaryDetails`); list items and older guesses are flat (`data.test_run`
or `data`). The parser accepts every one of them, reads each field from whichever level holds
it, tolerates unknown fields and states, and records what it cannot read instead of guessing:
an unreadable result must never pass a test gate. Plain dicts travel through XCom and trigger
events unchanged.

Every string taken from an answer passes through `clean` (the connection's `ApiConfig.clean`
when the hook parses): the key never survives, and no control character reaches a log.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypedDict
from urllib.parse import quote

from airflow_provider_empirical.config import printable

Clean = Callable[[str], str]

TERMINAL_STATES = frozenset({"ended", "error", "cancelled"})
KNOWN_STATES = frozenset({"pending", "queued", "started", "ended", "error", "cancelling", "cancelled"})

ERROR_CODES = {
    "merge_conflict": "merge conflict when merging the test branch",
    "dispatch_failed": "failed to dispatch the run to workers",
    "report_not_generated": "the test report was not generated",
    "run_failed_with_error": "the run failed with an error during execution",
    "worker_interrupted": "a test worker was interrupted",
    "merge_reports_failed": "failed to merge sharded reports",
}

# The run's counts, named once: parser, summary, asset events, lineage and probe read this tuple.
# `failed_count_after_snoozing`: the failures no snooze covers, as Empirical's dashboard judges a run.
COUNTS = (
    "total_count",
    "success_count",
    "failed_count",
    "skipped_count",
    "flaky_count",
    "failed_count_after_snoozing",
)

# Per-test statuses: Empirical's words (passed, failed, flaky, skipped), and Playwright's own
# (timedOut, interrupted, expected, unexpected) in case an answer passes those through. Any other
# status makes a finished run's result unreadable: it is never taken for a pass.
PASSED_STATUSES = frozenset({"passed", "expected"})
FAILED_STATUSES = frozenset({"failed", "timedout", "timed_out", "interrupted", "unexpected"})
FLAKY_STATUSES = frozenset({"flaky"})
NOT_RUN_STATUSES = frozenset({"skipped", "pending", "not_run"})
KNOWN_STATUSES = PASSED_STATUSES | FAILED_STATUSES | FLAKY_STATUSES | NOT_RUN_STATUSES

MAX_LISTED_TESTS = 1000  # bounds a trigger event / XCom; the counts stay exact

# Every key this parser reads in a per-test row (READ_RUN_KEYS, below, at the run level with the
# camelCase twins): the probe lists what an answer carries beyond these, so a key holder learns
# what we ignore.
READ_ROW_KEYS = frozenset({"name", "title", "status", "pw_test_id", "nesting", "test_project", "snooze_info"})
MAX_TEXT = 500  # characters kept of any one string from an answer (a test title, a branch...)


class SnoozeInfo(TypedDict):
    """What a row's `snooze_info` says of the snooze that covers its failure (only the id is sure)."""

    snooze_id: int | None
    snooze_until: str | None
    description: str | None


class TestCase(TypedDict, total=False):
    """One test of a run, from the run answer's per-test rows."""

    name: str  # always set
    status: str  # always set
    pw_test_id: str | None  # always set
    file: str | None  # the first element of `nesting`
    project: str | None  # the Playwright project (`test_project`)
    snooze: SnoozeInfo | None  # the snooze that covers this failure; None: none; absent: the row does not say
    url: str | None  # the test's own page (video, trace), set by the hook


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
    failed_count_after_snoozing: int | None  # None: the answer does not say (or not readably)
    environment_id: int | None
    failed_tests: list[TestCase] | None  # every failed row, snoozed or not; None: no per-test rows
    flaky_tests: list[TestCase] | None
    failed_rows: int | None  # how many failed rows the answer had (the lists are capped)
    snoozed_rows: int | None  # how many of them a snooze covers
    unreadable: list[str]  # what could not be read: count fields, unknown per-test statuses


TestRun.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class
TestCase.__test__ = False  # type: ignore[attr-defined]


# -- reading JSON without trusting it ------------------------------------------------------------


def int_or_none(value: Any) -> int | None:
    """A whole number >= 0, from an int, an integral float or a short digit string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        digits = value.strip()
        if digits.isascii() and digits.isdigit() and len(digits) <= 18:
            return int(digits)
    return None


def _text(value: Any, clean: Clean) -> str | None:
    return clean(value)[:MAX_TEXT] if isinstance(value, str) and value else None


def _time_text(value: Any, clean: Clean) -> str | None:
    """A time as text: an ISO string, or an epoch number written as digits (`parse_time` reads both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if 0 < value < 10**15 else None
    if isinstance(value, float):
        return (str(int(value)) if value.is_integer() else str(value)) if 0 < value < 1e15 else None
    return _text(value, clean)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def keys_of(value: Any, clean: Clean = printable) -> str:
    """The first keys of a JSON object, for a message about an answer we cannot read (never values)."""
    if not isinstance(value, dict):
        return type(value).__name__
    return str(sorted(clean(str(key))[:40] for key in value)[:10])


@dataclass(frozen=True)
class RunLocation:
    """Where a run sits in an answer: which known shape, the run's dict, and the dicts around it."""

    shape: str
    run: dict[str, Any]
    around: list[dict[str, Any]]  # nearest first: other fields of the run may sit there

    @property
    def levels(self) -> list[dict[str, Any]]:
        return [self.run, *self.around]


def locate_run(payload: Any, clean: Clean = printable) -> RunLocation:
    """Find the run in any of the shapes; ValueError (naming the keys seen) when there is none."""
    if not isinstance(payload, dict):
        raise ValueError(f"the response is not a JSON object but a {type(payload).__name__}")
    data = _dict(payload.get("data"))
    wrapper = _dict(data.get("test_run"))
    nested = wrapper.get("testRun", wrapper.get("test_run"))
    for shape, run, around in (
        ("nested data.test_run.testRun", nested, [wrapper, data, payload]),  # Empirical's own tooling
        ("flat data.test_run", wrapper, [data, payload]),
        ("flat data", data, [payload]),
        ("bare", payload, []),  # a list item
    ):
        if isinstance(run, dict) and "id" in run:
            return RunLocation(shape, run, around)
    raise ValueError(
        f"no test run in the response (top-level keys: {keys_of(payload, clean)}; "
        f"under data: {keys_of(data, clean)})"
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


_READ_SNAKE = (
    "id", "state", *COUNTS, "duration", "error_code", "error", "test_run_branch", "environment_slug",
    "environment_id", "created_at", "commit", "build_url", "build_branch", "project", "project_slug",
    "flattened_summary_details",
)  # fmt: skip
READ_RUN_KEYS = frozenset({*_READ_SNAKE, *(_camel(name) for name in _READ_SNAKE), "flattenedSummaryDetails"})


def _error_code(levels: list[dict[str, Any]], clean: Clean) -> str | None:
    """`error_code`, `errorCode` or `error.code`: the API does not document which one it uses."""
    code = _pick(levels, "error_code", "errorCode")
    if code is None:
        code = _dict(_pick(levels, "error")).get("code")
    return _text(code, clean)


def _rows(levels: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    rows = _pick(levels, "flattenedSummaryDetails", "flattened_summary_details")
    if not isinstance(rows, list):
        return None
    return [row for row in rows if isinstance(row, dict)]


def parse_test_cases(rows: list[dict[str, Any]], clean: Clean = printable) -> list[TestCase]:
    """Per-test rows as TestCase dicts; nameless rows keep their id.

    A row without a status gets the status "missing", which is not a known one.
    """
    cases = []
    for row in rows:
        pw_test_id = _text(row.get("pw_test_id"), clean)
        name = _text(row.get("name"), clean) or _text(row.get("title"), clean) or pw_test_id
        status = _text(row.get("status"), clean) or "missing"
        case = TestCase(name=name or "(unnamed test)", status=status, pw_test_id=pw_test_id)
        nesting = row.get("nesting")
        if isinstance(nesting, list) and nesting:
            case["file"] = _text(nesting[0], clean)
        if row.get("test_project") is not None:
            case["project"] = _text(row.get("test_project"), clean)
        if "snooze_info" in row:  # present (even empty) means the row tells whether a snooze covers it
            case["snooze"] = _snooze_of(row.get("snooze_info"), clean)
        cases.append(case)
    return cases


def _snooze_of(info: Any, clean: Clean) -> SnoozeInfo | None:
    """The first snooze of a row's `snooze_info` (a list, non-empty when a snooze covers the row)."""
    if not isinstance(info, list) or not info:
        return None
    first = _dict(info[0])
    return SnoozeInfo(
        snooze_id=int_or_none(first.get("snooze_id")),
        snooze_until=_text(first.get("snooze_until"), clean),
        description=_text(first.get("description"), clean),
    )


def status_in(case: TestCase, statuses: frozenset[str]) -> bool:
    return case["status"].lower() in statuses


def parse_test_run(payload: Any, clean: Clean = printable) -> TestRun:
    """Parse a run from any of the response shapes; ValueError without an integer id."""
    located = locate_run(payload, clean)
    raw, levels = located.run, located.levels
    run_id = int_or_none(raw.get("id"))
    if run_id is None or run_id == 0:
        raise ValueError(f"the test run id is not an integer >= 1 (got a {type(raw.get('id')).__name__})")
    counts: dict[str, int | None] = {}
    unreadable = []
    for name in COUNTS:
        value = _pick(levels, name, _camel(name))
        counts[name] = int_or_none(value)
        if value is not None and counts[name] is None and name != "failed_count_after_snoozing":
            unreadable.append(
                name
            )  # an unreadable after-snoozing count is only not used (raw failures count)
    state = _text(_pick(levels, "state"), clean) or "unknown"
    # per-test rows matter once the run has finished; parsing thousands of them on every poll of
    # a running one would be most of a trigger's CPU (docs/performance.md)
    rows = _rows(levels) if state in TERMINAL_STATES else None
    failed = flaky = None
    snoozed_rows = None
    if rows is not None:
        cases = parse_test_cases(rows, clean)
        failed, flaky = _judge_rows(cases, counts, unreadable)
        if all("snooze" in case for case in failed):  # every failed row says whether it is snoozed
            snoozed_rows = sum(1 for case in failed if case.get("snooze"))
    project = _dict(_pick(levels, "project"))
    return TestRun(
        id=run_id,
        state=state,
        total_count=counts["total_count"],
        success_count=counts["success_count"],
        failed_count=counts["failed_count"],
        skipped_count=counts["skipped_count"],
        flaky_count=counts["flaky_count"],
        duration=int_or_none(_pick(levels, "duration")),
        error_code=_error_code(levels, clean),
        test_run_branch=_text(_pick(levels, "test_run_branch", "testRunBranch"), clean),
        environment_slug=_text(_pick(levels, "environment_slug", "environmentSlug"), clean),
        created_at=_time_text(_pick(levels, "created_at", "createdAt"), clean),
        commit=_text(_pick(levels, "commit"), clean),
        build_url=_text(_pick(levels, "build_url", "buildUrl"), clean),
        build_branch=_text(_pick(levels, "build_branch", "buildBranch"), clean),
        project_slug=_text(project.get("slug"), clean) or _text(_pick(levels, "project_slug"), clean),
        failed_count_after_snoozing=counts["failed_count_after_snoozing"],
        environment_id=int_or_none(_pick(levels, "environment_id", "environmentId")),
        failed_tests=failed[:MAX_LISTED_TESTS] if failed is not None else None,
        flaky_tests=flaky[:MAX_LISTED_TESTS] if flaky is not None else None,
        failed_rows=len(failed) if failed is not None else None,
        snoozed_rows=snoozed_rows,
        unreadable=unreadable,
    )


def _judge_rows(
    cases: list[TestCase], counts: dict[str, int | None], unreadable: list[str]
) -> tuple[list[TestCase], list[TestCase]]:
    """The failed and flaky rows; counts the run level lacks are taken from the rows.

    Fails closed: a status we do not know makes the result unreadable (it is recorded in
    `unreadable`), and more failed rows than the run counts raise the failed count.
    """
    failed = [case for case in cases if status_in(case, FAILED_STATUSES)]
    flaky = [case for case in cases if status_in(case, FLAKY_STATUSES)]
    unknown = sorted({case["status"] for case in cases if not status_in(case, KNOWN_STATUSES)})
    if unknown:
        unreadable.append("per-test status " + ", ".join(repr(status) for status in unknown[:5]))
        return failed, flaky
    not_run = sum(1 for case in cases if status_in(case, NOT_RUN_STATUSES))
    from_rows = {
        "total_count": len(cases),
        "failed_count": len(failed),
        "flaky_count": len(flaky),
        "skipped_count": not_run,
        "success_count": len(cases) - len(failed) - len(flaky) - not_run,
    }
    for name, value in from_rows.items():
        if counts[name] is None and name not in unreadable and cases:
            counts[name] = value
    if counts["failed_count"] is not None and len(failed) > counts["failed_count"]:
        counts["failed_count"] = len(failed)
    return failed, flaky


def link_tests(run: TestRun, run_url: str) -> TestRun:
    """Give each listed test its own page, as Empirical's own suite opens it (the video and trace):
    `<run page>?test_id=<Playwright test id>`."""
    for case in [*(run.get("failed_tests") or []), *(run.get("flaky_tests") or [])]:
        if case.get("pw_test_id"):
            case["url"] = f"{run_url}?test_id={quote(str(case['pw_test_id']), safe='')}"
    return run


def parse_cases_answer(payload: Any, clean: Clean = printable) -> list[TestCase]:
    """The rows of `GET /api/v2/test-runs/{id}/cases` (undocumented: `data` is a list of rows)."""
    rows = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError("an answer without rows under data")
    return parse_test_cases([row for row in rows if isinstance(row, dict)], clean)


# -- list pages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPage:
    """One page of `GET /api/test-runs`: its runs (newest first), the project, the page count."""

    runs: list[TestRun]
    project: dict[str, Any]
    total_pages: int | None


def project_of(payload: Any) -> dict[str, Any]:
    """`data.project` of an answer (the list names the key's project there), or {}."""
    return _dict(_dict(payload.get("data") if isinstance(payload, dict) else None).get("project"))


def parse_run_page(payload: Any, clean: Clean = printable) -> RunPage:
    """A list page; ValueError when `data.test_runs.items` is missing or an item has no run id."""
    data = _dict(payload.get("data") if isinstance(payload, dict) else None)
    items = _dict(data.get("test_runs")).get("items")
    if not isinstance(items, list):
        raise ValueError(f"no data.test_runs.items in the answer (keys: {keys_of(payload, clean)})")
    runs = []
    for index, item in enumerate(items):
        try:
            runs.append(parse_test_run(item, clean))
        except ValueError as exc:
            raise ValueError(f"item {index} of data.test_runs.items: {exc}") from None
    pages = _dict(payload.get("pagination") if isinstance(payload, dict) else None).get("total_pages")
    return RunPage(runs, project_of(payload), int_or_none(pages))


# -- times ---------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """A time as an answer may write it, timezone-aware; None when it cannot be read.

    ISO 8601 (`2024-01-15T10:30:00.000Z`, an offset, a space instead of `T`, no zone = UTC) and
    epoch numbers (seconds, or milliseconds when larger than 10^11), as numbers or digit strings.
    """
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value <= 0:
            return None
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# -- what a run says -----------------------------------------------------------------------------


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
