"""Contract probe: check with a real key that Empirical answers the way this provider expects.

Everything else in this project is proven against our own emulator, which encodes our reading
of an API whose run answer is not fully documented. This command makes read-only GET calls to
the real service and prints, field by field, which shapes and fields the provider relies on were
found and which were missing, which keys the answer carries that the provider does not read, and
how the provider would judge the run, so a mismatch can be reported before a task waits on it.

    python -m airflow_provider_empirical.probe [--conn-id ID] [--api-url URL] [--run-id N] [--json]

It reads the answers with the provider's own code (`locate_run`, `parse_run_page`,
`parse_test_run`, the per-test fallback of `http.operations`, `judge`), never a second parser.
It prints keys, types and presence, never values (except run and environment ids, states,
statuses, slugs and counts), never the key or any header. Every server-derived string goes
through `ApiConfig.clean` (see `safe`): the key removed first, control characters escaped, then cut.
Exit codes: 0 everything required was found, 1 something required is missing, 2 usage, auth or
connection error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from airflow_provider_empirical.api.errors import EmpiricalError, EmpiricalTransportError
from airflow_provider_empirical.api.test_runs import (
    COUNTS,
    KNOWN_STATES,
    KNOWN_STATUSES,
    READ_ROW_KEYS,
    READ_RUN_KEYS,
    TestRun,
    int_or_none,
    is_terminal,
    locate_run,
    parse_run_page,
    parse_test_cases,
    parse_test_run,
    status_in,
)
from airflow_provider_empirical.api.verdict import Policy, failures_of, judge
from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.get_provider_info import API_URL
from airflow_provider_empirical.http import endpoints, operations
from airflow_provider_empirical.http.protocol import Call
from airflow_provider_empirical.http.sync import EmpiricalClient

OK, WARN, MISSING, INFO = "ok", "warn", "MISSING", "info"
LIST_FIELDS = ("id", "state", *COUNTS, "duration", "created_at", "environment_slug")
RUN_FIELDS = (*LIST_FIELDS, "environment_id")
ROW_FIELDS = ("name", "status", "pw_test_id", "nesting", "test_project")
ROWS_KEYS = ("flattenedSummaryDetails", "flattened_summary_details")  # the parser reads both
SHOWN = frozenset({"id", "state", "environment_id", *COUNTS})  # values harmless enough to print
VALUE_CHARS = 30  # of a state, status or slug shown
KEY_CHARS = 40  # of a key name shown
TEXT_CHARS = 300  # of an error or a reason shown
MAX_NAMES = 20  # names listed in one finding
LIST_PER_PAGE = 5
# The bases `failures_of` gives when snoozes are told apart (any other: every failure counts).
HONOURED = ("failed_count_after_snoozing", "the per-test rows' snooze_info")
_ABSENT = object()


@dataclass
class Check:
    """One finding: `section` is the request it came from."""

    section: str
    name: str
    status: str  # ok | warn | MISSING | info
    detail: str = ""


@dataclass
class Report:
    """Everything the probe found; plain data so it prints as text or JSON alike."""

    api_url: str
    checks: list[Check] = field(default_factory=list)
    shape: str = "not checked"
    parser: str = "not checked"
    judgement: str = "not checked"
    unread_keys: list[str] = field(default_factory=list)  # keys the answers carry, the provider ignores
    verdict: str = ""
    exit_code: int = 0

    def add(self, section: str, name: str, found: bool, detail: str = "", required: bool = False) -> None:
        self.checks.append(Check(section, name, OK if found else MISSING if required else WARN, detail))

    def info(self, section: str, name: str, detail: str) -> None:
        self.checks.append(Check(section, name, INFO, detail))


# --- looking at JSON without trusting it ---------------------------------------------------------


def dig(obj: Any, path: str) -> Any:
    """The value at a dotted path, or _ABSENT."""
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return _ABSENT
        obj = obj[part]
    return obj


def kind(value: Any) -> str:
    """JSON type name: what the report shows instead of a value."""
    if value is _ABSENT:
        return "missing"
    if value is None:
        return "null"
    names = (
        (bool, "bool"),
        (int, "int"),
        (float, "number"),
        (str, "string"),
        (list, "list"),
        (dict, "object"),
    )
    return next((name for cls, name in names if isinstance(value, cls)), type(value).__name__)


def safe(config: ApiConfig, text: str, limit: int | None = None) -> str:
    """Server text made safe to show: `ApiConfig.clean` (the key removed, control characters
    escaped, then cut), with the key removed once more before the cut, because escaping can write
    it (a key holding a backslash and `n`, in a text holding it with a real newline there)."""
    return config.clean(config.clean(text), limit)


def quoted(config: ApiConfig, text: str) -> str:
    """A state, status or slug from the server: redacted, escaped, then cut (in that order)."""
    return f"'{safe(config, text, VALUE_CHARS)}'"


def shown(config: ApiConfig, name: str, value: Any) -> str:
    """A value when harmless (ids, states, counts), else only its type."""
    if name in SHOWN and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if name in SHOWN and isinstance(value, str):
        return quoted(config, value)
    return kind(value)


def key_names(config: ApiConfig, keys: Iterable[Any]) -> list[str]:
    """Key names from the server, each cleaned and cut, sorted, without repeats."""
    return sorted({safe(config, str(key), KEY_CHARS) for key in keys})


def listing(names: Sequence[str], empty: str = "none") -> str:
    more = f" (and {len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else ""
    return ", ".join(names[:MAX_NAMES]) + more if names else empty


def not_read(
    report: Report,
    config: ApiConfig,
    where: tuple[str, str, str],
    objects: Iterable[Any],
    read: Iterable[str],
) -> None:
    """Report the keys of `objects` outside `read`; `where` is (section, check name, path prefix)."""
    section, name, prefix = where
    known = frozenset(read)
    keys = key_names(
        config, (key for obj in objects if isinstance(obj, dict) for key in obj if key not in known)
    )
    report.info(section, name, listing(keys))
    report.unread_keys += [prefix + key for key in keys]


def unknown_states(report: Report, config: ApiConfig, section: str, states: list[Any]) -> None:
    odd = sorted(
        {safe(config, s, VALUE_CHARS) for s in states if isinstance(s, str) and s not in KNOWN_STATES}
    )
    if odd:
        report.add(section, "unknown state values", False, listing(odd))


# --- the list answer -----------------------------------------------------------------------------


def check_list(report: Report, config: ApiConfig, section: str, payload: Any) -> int | None:
    """Check GET /api/test-runs; returns the newest run id the provider's parser reads there."""
    items = dig(payload, "data.test_runs.items")
    is_list = isinstance(items, list)
    report.add(
        section, "data.test_runs.items", is_list, f"list of {len(items)}" if is_list else kind(items), True
    )
    total_pages = dig(payload, "pagination.total_pages")
    report.add(section, "pagination.total_pages", int_or_none(total_pages) is not None, kind(total_pages))
    slug = dig(payload, "data.project.slug")
    slug_detail = quoted(config, slug) if isinstance(slug, str) else kind(slug)
    report.add(section, "data.project.slug", isinstance(slug, str) and bool(slug), slug_detail)
    rows = [item for item in items if isinstance(item, dict)] if is_list else []
    for name in LIST_FIELDS if rows else ():
        values = [row[name] for row in rows if name in row]
        types = ", ".join(sorted({kind(v) for v in values}))
        found = len(values) == len(rows) and (name != "id" or all(int_or_none(v) for v in values))
        report.add(
            section, f"item.{name}", found, f"in {len(values)}/{len(rows)} items ({types})", name == "id"
        )
    unknown_states(report, config, section, [row.get("state") for row in rows])
    not_read(report, config, (section, "item keys not read", "run."), rows, READ_RUN_KEYS)
    not_read(report, config, (section, "unknown keys in the answer", ""), [payload], {"data", "pagination"})
    not_read(
        report,
        config,
        (section, "unknown keys in data", "data."),
        [dig(payload, "data")],
        {"project", "test_runs"},
    )
    try:
        page = parse_run_page(payload, partial(safe, config))
    except ValueError as exc:
        report.add(
            section,
            "parse_run_page",
            False,
            f"cannot read the list: {safe(config, str(exc), TEXT_CHARS)}",
            True,
        )
        return None
    report.add(section, "parse_run_page", True, f"reads {len(page.runs)} run(s)")
    return max((run["id"] for run in page.runs), default=None)


# --- the run answer ------------------------------------------------------------------------------


Levels = list[tuple[str, Any]]  # (path, object) where run fields may sit, innermost first

# For each shape: the path of each level `locate_run` returns, and the keys that only lead to the
# run there (beside them, a level may carry run fields: the parser looks for those in every level).
SHAPES: dict[str, list[tuple[str, frozenset[str]]]] = {
    "nested data.test_run.testRun": [
        ("data.test_run.testRun", frozenset()),
        ("data.test_run", frozenset({"testRun", "test_run"})),
        ("data", frozenset({"test_run"})),
        ("(top level)", frozenset({"data"})),
    ],
    "flat data.test_run": [
        ("data.test_run", frozenset()),
        ("data", frozenset({"test_run"})),
        ("(top level)", frozenset({"data"})),
    ],
    "flat data": [("data", frozenset()), ("(top level)", frozenset({"data"}))],
    "bare": [("(top level)", frozenset())],
}


def run_levels(payload: Any) -> tuple[str, Levels]:
    """Which of the known shapes holds the run (as the provider's parser sees it), and the levels
    to search for its fields, each with its path."""
    try:
        located = locate_run(payload)
    except ValueError:
        return "none", []
    paths = [path for path, _ in SHAPES[located.shape]]
    return located.shape, list(zip(paths, located.levels, strict=True))


def find(levels: Levels, path: str) -> tuple[Any, str]:
    """The value at `path` in the first level holding it, and where it was."""
    for where, level in levels:
        value = dig(level, path)
        if value is not _ABSENT:
            return value, where
    return _ABSENT, ""


def check_run(report: Report, config: ApiConfig, section: str, payload: Any) -> list[dict[str, Any]]:
    """Check GET /api/test-runs/{id}; returns the per-test rows (objects) it carries."""
    shape, levels = run_levels(payload)
    report.shape = shape
    report.add(section, "shape", shape != "none", shape, True)
    if shape == "none":  # no run fields to look at: say only what the answer holds instead
        not_read(report, config, (section, "unknown keys in the answer", ""), [payload], {"data"})
        data = dig(payload, "data")
        not_read(report, config, (section, "unknown keys in data", "data."), [data], {"test_run", "project"})
        return []
    for name in RUN_FIELDS:
        value, where = find(levels, name)
        detail = shown(config, name, value) + (f" (at {where})" if where and where != levels[0][0] else "")
        if name == "id":
            report.add(section, "run.id", int_or_none(value) is not None, detail, True)
        elif name == "state":
            report.add(section, "run.state", isinstance(value, str) and bool(value), detail, True)
            unknown_states(report, config, section, [value])
        else:
            report.add(section, f"run.{name}", value is not _ABSENT, detail)
    check_error_code(report, section, levels)
    rows = check_rows(report, config, section, levels)
    slug, where = find(levels, "project.slug")
    detail = f"{quoted(config, slug) if isinstance(slug, str) else kind(slug)} at {where}.project.slug"
    report.add(section, "project slug", isinstance(slug, str) and bool(slug), detail if where else "missing")
    (_, run), *around = levels
    not_read(report, config, (section, "run keys not read", "run."), [run], READ_RUN_KEYS)
    if rows:
        not_read(report, config, (section, "row keys not read", "row."), rows, READ_ROW_KEYS)
    for (path, level), (_, leads) in zip(around, SHAPES[shape][1:], strict=True):
        name = "unknown keys in the answer" if path == "(top level)" else f"unknown keys in {path}"
        prefix = "" if path == "(top level)" else f"{path}."
        not_read(report, config, (section, name, prefix), [level], leads | READ_RUN_KEYS)
    return rows


def check_error_code(report: Report, section: str, levels: Levels) -> None:
    """Which spelling carries the error code: undocumented, so every one seen is reported."""
    seen = []
    for key in ("error_code", "errorCode", "error.code"):
        value, where = find(levels, key)
        if value is not _ABSENT:
            seen.append(f"{key} ({kind(value)}) at {where}")
    if seen:
        report.info(section, "error code key", "; ".join(seen))
        return
    state, _ = find(levels, "state")
    status = WARN if state == "error" else INFO  # only a run in state error must carry one
    report.checks.append(Check(section, "error code key", status, "none seen"))


def check_rows(report: Report, config: ApiConfig, section: str, levels: Levels) -> list[dict[str, Any]]:
    """Per-test rows (`flattenedSummaryDetails`): failed test names, snoozes, statuses."""
    rows: Any = _ABSENT
    where = spelled = ""
    for spelled in ROWS_KEYS:
        rows, where = find(levels, spelled)
        if rows is not _ABSENT:
            break
    if not isinstance(rows, list):
        report.add(section, "flattenedSummaryDetails", False, f"{kind(rows)} (failed tests: counts only)")
        return []
    as_spelled = f" (as {spelled})" if spelled != ROWS_KEYS[0] else ""
    report.add(section, "flattenedSummaryDetails", True, f"list of {len(rows)} at {where}{as_spelled}")
    dicts = [row for row in rows if isinstance(row, dict)]
    if len(dicts) < len(rows):
        report.add(
            section, "rows that are objects", False, f"{len(dicts)}/{len(rows)} (the others are ignored)"
        )
    if not dicts:
        return dicts
    for name in ROW_FIELDS:
        present = sum(1 for row in dicts if name in row)
        report.add(section, f"row.{name}", present == len(dicts), f"in {present}/{len(dicts)} rows")
    report.add(
        section, "row.snooze_info", all("snooze_info" in row for row in dicts), snooze_detail(config, dicts)
    )
    cases = parse_test_cases(dicts, partial(safe, config))  # statuses as the parser reads them
    tally = Counter(safe(config, case["status"], VALUE_CHARS) for case in cases)
    report.info(section, "row statuses", ", ".join(f"{status} {n}" for status, n in sorted(tally.items())))
    unknown = Counter(quoted(config, case["status"]) for case in cases if not status_in(case, KNOWN_STATUSES))
    if unknown:
        named = [f"{status} in {n} row(s)" for status, n in sorted(unknown.items())]
        detail = f"{listing(named)}: the provider fails closed on a finished run with them"
        report.add(section, "unknown per-test statuses", False, detail, True)
    return dicts


def snooze_detail(config: ApiConfig, rows: list[dict[str, Any]]) -> str:
    """How many rows carry `snooze_info`, how many non-empty, and the keys of its items (never values)."""
    infos = [row["snooze_info"] for row in rows if "snooze_info" in row]
    types = ", ".join(sorted({kind(info) for info in infos}))
    non_empty = sum(1 for info in infos if isinstance(info, list) and info)
    items = [item for info in infos if isinstance(info, list) for item in info]
    keys = key_names(config, (key for item in items if isinstance(item, dict) for key in item))
    return (
        f"in {len(infos)}/{len(rows)} rows ({types}), non-empty in {non_empty}; "
        f"item keys: {listing(keys, 'none seen')}"
    )


def check_cases(
    report: Report, config: ApiConfig, client: EmpiricalClient, run: TestRun
) -> tuple[TestRun, list[dict[str, Any]]]:
    """The undocumented per-test endpoint, asked as the provider asks it (`operations.failed_test_names`)
    for a finished run with failed tests but no rows; never required. Returns the run as the
    provider would then judge it, and the rows (objects) the answer held."""
    section = f"GET /api/v2/test-runs/{run['id']}/cases (undocumented, optional)"
    operation = operations.failed_test_names(config, run)
    call, _ = operations.start(operation)
    assert call is not None
    try:
        payload = client.request(call)
    except EmpiricalError as exc:
        report.info(section, "per-test rows", f"missing (HTTP {exc.status or type(exc).__name__})")
        _, result = operations.advance(operation, error=exc)
        return (result[0] if result else run), []
    rows = dig(payload, "data")
    if isinstance(rows, list):
        dicts = [row for row in rows if isinstance(row, dict)]
        with_id = sum(1 for row in dicts if "pw_test_id" in row)
        with_snooze = sum(1 for row in dicts if "snooze_info" in row)
        detail = f"found: list of {len(rows)}, pw_test_id in {with_id}, snooze_info in {with_snooze}"
        report.info(section, "per-test rows", detail)
        not_read(report, config, (section, "row keys not read", "row."), dicts, READ_ROW_KEYS)
    else:
        dicts = []
        report.info(section, "per-test rows", f"missing (data is {kind(rows)})")
    _, result = operations.advance(operation, payload)
    return (result[0] if result else run), dicts


# --- what the provider makes of it ---------------------------------------------------------------


def check_parser(report: Report, config: ApiConfig, payload: Any) -> TestRun | None:
    """Does the provider's own parser read this answer?"""
    try:
        run = parse_test_run(payload, partial(safe, config))
    except ValueError as exc:
        report.parser = f"cannot read the run: {safe(config, str(exc), TEXT_CHARS)}"
        report.add("provider", "parse_test_run", False, report.parser, True)
        return None
    report.parser = f"reads run {run['id']}, state {safe(config, run['state'], VALUE_CHARS)}"
    report.add("provider", "parse_test_run", True, report.parser)
    return run


def check_snoozes(report: Report, section: str, run: TestRun, rows: list[dict[str, Any]]) -> None:
    """Can the provider tell snoozed failures apart, as Empirical's dashboard does?"""
    failures = max(run["failed_count"] or 0, run["failed_rows"] or 0)
    basis = failures_of(run).basis
    if not failures:
        report.info(section, "snoozes", "no failure in this run: nothing to tell apart")
    elif run["failed_count_after_snoozing"] is None and not any("snooze_info" in row for row in rows):
        report.add(
            section,
            "snoozes",
            False,
            "failures, but neither failed_count_after_snoozing nor snooze_info: "
            "the provider cannot honour snoozes (every failure counts)",
        )
    elif basis in HONOURED:
        report.add(section, "snoozes", True, f"honoured: failures counted from {basis}")
    else:
        report.add(section, "snoozes", False, f"the provider cannot honour snoozes here: {basis}")


def check_judgement(report: Report, config: ApiConfig, run: TestRun) -> None:
    """How the provider would judge the run with the default policy (snoozes honoured)."""
    if not is_terminal(run):
        state = safe(config, run["state"], VALUE_CHARS)
        report.judgement = (
            f"not judged: the run is {state}, not finished (probe a finished one with --run-id)"
        )
        report.info("provider", "judge", report.judgement)
        return
    verdict = judge(run, Policy())
    failures = failures_of(run)
    count, raw = ("?" if n is None else str(n) for n in (failures.count, failures.raw))
    unreadable = "; ".join(run["unreadable"])
    why = f" (cannot read: {unreadable})" if unreadable else ""
    report.judgement = safe(
        config,
        f"{verdict.outcome}: a task would {'pass' if verdict.passes else 'fail'}, {verdict.reason}{why}; "
        f"failures that count: {count} of {raw} (basis: {failures.basis})",
        TEXT_CHARS * 2,
    )
    if verdict.outcome == "unreadable":  # every wait on such a run fails closed
        report.add("provider", "judge", False, report.judgement, True)
    else:
        report.info("provider", "judge", report.judgement)


# --- the whole probe -----------------------------------------------------------------------------


def fetch(client: EmpiricalClient, report: Report, section: str, call: Call) -> Any:
    """GET a JSON answer; a 2xx that is not JSON is a finding, other errors end the probe."""
    try:
        return client.request(call)
    except EmpiricalError as exc:
        if exc.status is not None and 200 <= exc.status < 300:
            report.add(section, "JSON body", False, f"HTTP {exc.status} with a body that is not JSON", True)
            return None
        raise


def probe(config: ApiConfig, run_id: int | None = None) -> Report:
    """Run every check; raises EmpiricalError for auth and connection problems."""
    report = Report(api_url=config.base_url)
    client = EmpiricalClient(config)
    try:
        section = f"GET {endpoints.TEST_RUNS}?per_page={LIST_PER_PAGE}"
        listed = fetch(client, report, section, endpoints.list_test_runs(1, LIST_PER_PAGE, {}))
        newest = check_list(report, config, section, listed)
        run_id = run_id or newest
        if run_id is not None:
            section = f"GET {endpoints.TEST_RUNS}/{run_id}"
            payload = fetch(client, report, section, endpoints.get_test_run(run_id))
            rows = check_run(report, config, section, payload)
            run = check_parser(report, config, payload)
            if run is not None:
                if is_terminal(run) and run["failed_tests"] is None and run["failed_count"]:
                    run, cases = check_cases(report, config, client, run)  # as the provider would
                    rows = [*rows, *cases]
                check_snoozes(report, section, run, rows)
                check_judgement(report, config, run)
    finally:
        client.close()
    conclude(report, run_id is not None)
    return report


def conclude(report: Report, run_checked: bool) -> None:
    missing = list(dict.fromkeys(c.name for c in report.checks if c.status == MISSING))
    warnings = list(dict.fromkeys(c.name for c in report.checks if c.status == WARN))
    report.unread_keys = sorted(set(report.unread_keys))
    unread = report.unread_keys
    ignored = f"; it does not read {len(unread)} key(s) of the answers: {listing(unread)}" if unread else ""
    if missing:
        report.verdict = (
            f"MISMATCH: required {', '.join(missing)} missing; please report it (see docs){ignored}"
        )
        report.exit_code = 1
    elif not run_checked:
        report.verdict = "INCOMPLETE: no test run to fetch; trigger one or pass --run-id, then probe again"
        report.exit_code = 1
    else:
        noted = (
            f" ({len(warnings)} warning(s) on nice-to-have fields: {', '.join(warnings)})" if warnings else ""
        )
        report.verdict = f"OK: everything the provider needs was found{noted}{ignored}"


def render(report: Report) -> str:
    lines = [f"Empirical API contract probe: {report.api_url} (read-only, GET requests only)"]
    shown_checks = [check for check in report.checks if check.section != "provider"]
    width = max((len(check.name) for check in shown_checks), default=0) + 1
    for section in dict.fromkeys(check.section for check in shown_checks):  # in order of first finding
        lines += ["", section]
        for check in (each for each in shown_checks if each.section == section):
            lines.append(f"  {check.status:<8} {check.name:<{width}} {check.detail}".rstrip())
    lines += [
        "",
        f"Run answer shape: {report.shape}",
        f"Provider parser (parse_test_run): {report.parser}",
        f"Provider verdict (judge, default Policy): {report.judgement}",
        f"Verdict: {report.verdict}",
    ]
    return "\n".join(lines)


# --- command line --------------------------------------------------------------------------------


def load_config(args: argparse.Namespace) -> ApiConfig:
    """From the Airflow connection when named, else from the EMPIRICAL_* environment variables."""
    if args.conn_id:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook

        config: ApiConfig = EmpiricalHook(args.conn_id).config
    else:
        key = os.environ.get("EMPIRICAL_API_KEY", "")
        if not key.strip():
            raise ValueError("set EMPIRICAL_API_KEY (or pass --conn-id with an Airflow connection)")
        project = os.environ.get("EMPIRICAL_PROJECT_ID", "").strip()
        if project and not (project.isdigit() and int(project) >= 1):
            raise ValueError("EMPIRICAL_PROJECT_ID must be an integer >= 1")
        url = os.environ.get("EMPIRICAL_API_URL") or API_URL
        config = ApiConfig(api_key=key, base_url=url, project_id=int(project) if project else None)
    return dataclasses.replace(config, base_url=args.api_url) if args.api_url else config


def explain(exc: EmpiricalError, config: ApiConfig) -> str:
    if exc.status == 401:
        return f"HTTP 401 from {config.base_url}: the API key was refused; check the key"
    if exc.status == 403:
        return f"HTTP 403 from {config.base_url}: the key cannot see this project; check key and project id"
    if isinstance(exc, EmpiricalTransportError):
        return f"could not reach {config.base_url}: {exc.message}"
    return exc.message


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_empirical.probe",
        description="Read-only check that the Empirical API answers the way this provider expects. "
        "Key from --conn-id, else EMPIRICAL_API_KEY (EMPIRICAL_API_URL, EMPIRICAL_PROJECT_ID optional).",
    )
    parser.add_argument("--conn-id", help="Airflow connection of type empirical to take the key and URL from")
    parser.add_argument(
        "--api-url", help="API base URL (overrides EMPIRICAL_API_URL or the connection's host)"
    )
    parser.add_argument("--run-id", type=int, help="test run to fetch (default: the newest listed)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.run_id is not None and args.run_id < 1:
        parser.error("--run-id must be an integer >= 1")
    return args


def _logs_to_stderr() -> None:
    """Standard output is the report alone (`--json` must parse): logs go to standard error.

    Airflow 2 configures logging when it is imported, with a handler on standard output that
    also prints httpx's line per request.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in (each for each in loggers if isinstance(each, logging.Logger)):
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
                replacement = logging.StreamHandler(sys.stderr)  # Airflow 2's handler cannot be re-pointed
                replacement.setLevel(handler.level)
                replacement.setFormatter(handler.formatter)
                logger.removeHandler(handler)
                logger.addHandler(replacement)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit code 0 all required found, 1 something required missing, 2 usage/auth/connection error."""
    _logs_to_stderr()
    args = parse_args(argv)
    try:
        config = load_config(args)
    except Exception as exc:  # a bad variable, a missing or invalid connection: all usage errors
        key = os.environ.get("EMPIRICAL_API_KEY", "").strip()
        print(f"probe: {str(exc).replace(key, '***') if key else exc}", file=sys.stderr)
        return 2
    try:
        report = probe(config, args.run_id)
    except EmpiricalError as exc:
        print(f"probe: {safe(config, explain(exc, config), TEXT_CHARS)}", file=sys.stderr)
        return 2
    text = json.dumps(dataclasses.asdict(report), indent=2) if args.json else render(report)
    print(config.redact(text))  # every server string was cleaned already: this is a last guard
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
