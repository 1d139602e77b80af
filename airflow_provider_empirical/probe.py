"""Contract probe: check with a real key that Empirical answers the way this provider expects.

Everything else in this project is proven against our own emulator, which encodes our reading
of an API whose run answer is not fully documented. This command makes read-only GET calls to
the real service and prints, field by field, which shapes and fields the provider relies on were
found and which were missing, so a mismatch can be reported before a task waits on it.

    python -m airflow_provider_empirical.probe [--conn-id ID] [--api-url URL] [--run-id N] [--json]

It prints keys, types and presence, never values (except run ids, states, slugs and counts),
never the key or any header; all output goes through `ApiConfig.redact`.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_empirical.api.errors import EmpiricalError, EmpiricalTransportError
from airflow_provider_empirical.api.test_runs import COUNTS, KNOWN_STATES, locate_run, parse_test_run
from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.get_provider_info import API_URL
from airflow_provider_empirical.http import endpoints
from airflow_provider_empirical.http.protocol import Call
from airflow_provider_empirical.http.sync import EmpiricalClient

OK, WARN, MISSING, INFO = "ok", "warn", "MISSING", "info"
RUN_FIELDS = ("id", "state", *COUNTS, "duration", "created_at", "environment_slug")
ROW_FIELDS = ("name", "status", "pw_test_id", "slug")
SHOWN = frozenset({"id", "state", *COUNTS})  # values harmless enough to print
LIST_PER_PAGE = 5
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
    verdict: str = ""
    exit_code: int = 0

    def add(self, section: str, name: str, found: bool, detail: str = "", required: bool = False) -> None:
        self.checks.append(Check(section, name, OK if found else MISSING if required else WARN, detail))

    def info(self, section: str, name: str, detail: str) -> None:
        self.checks.append(Check(section, name, INFO, detail))


# --- reading JSON without trusting it ------------------------------------------------------------


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


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def shown(name: str, value: Any) -> str:
    """A value when harmless (ids, states, counts), else only its type."""
    return repr(value) if name in SHOWN and isinstance(value, (int, str)) else kind(value)


def unknown_keys(report: Report, section: str, where: str, obj: Any, known: set[str]) -> None:
    if isinstance(obj, dict):
        extra = sorted(str(key)[:40] for key in obj if key not in known)
        report.info(section, f"unknown keys in {where}", ", ".join(extra[:20]) or "none")


def unknown_states(report: Report, section: str, states: list[Any]) -> None:
    odd = sorted({str(s)[:30] for s in states if isinstance(s, str) and s not in KNOWN_STATES})
    if odd:
        report.add(section, "unknown state values", False, ", ".join(odd))


# --- the list answer -----------------------------------------------------------------------------


def check_list(report: Report, section: str, payload: Any) -> int | None:
    """Check GET /api/test-runs; returns the newest run id seen."""
    items = dig(payload, "data.test_runs.items")
    is_list = isinstance(items, list)
    report.add(
        section, "data.test_runs.items", is_list, f"list of {len(items)}" if is_list else kind(items), True
    )
    total_pages = dig(payload, "pagination.total_pages")
    report.add(section, "pagination.total_pages", as_int(total_pages) is not None, kind(total_pages))
    slug = dig(payload, "data.project.slug")
    report.add(section, "data.project.slug", isinstance(slug, str) and bool(slug), shown("state", slug))
    rows = [item for item in items if isinstance(item, dict)] if is_list else []
    for name in RUN_FIELDS if rows else ():
        values = [row[name] for row in rows if name in row]
        types = ", ".join(sorted({kind(v) for v in values}))
        found = len(values) == len(rows) and (name != "id" or all(as_int(v) is not None for v in values))
        report.add(
            section, f"item.{name}", found, f"in {len(values)}/{len(rows)} items ({types})", name == "id"
        )
    unknown_states(report, section, [row.get("state") for row in rows])
    unknown_keys(report, section, "the answer", payload, {"data", "pagination"})
    unknown_keys(report, section, "data", dig(payload, "data"), {"project", "test_runs"})
    ids = [i for i in (as_int(row.get("id")) for row in rows) if i is not None]
    return max(ids) if ids else None


# --- the run answer ------------------------------------------------------------------------------


Levels = list[tuple[str, Any]]  # (path, object) where run fields may sit, innermost first


def run_levels(payload: Any) -> tuple[str, Levels]:
    """Which of the known shapes holds the run (as the provider's parser sees it), and the levels
    to search for its fields, each with its path."""
    try:
        located = locate_run(payload)
    except ValueError:
        return "none", []
    paths = {
        "nested data.test_run.testRun": ["data.test_run.testRun", "data.test_run", "data", "(top level)"],
        "flat data.test_run": ["data.test_run", "data", "(top level)"],
        "flat data": ["data", "(top level)"],
        "bare": ["(top level)"],
    }[located.shape]
    return located.shape, list(zip(paths, located.levels, strict=True))


def find(levels: Levels, path: str) -> tuple[Any, str]:
    """The value at `path` in the first level holding it, and where it was."""
    for where, level in levels:
        value = dig(level, path)
        if value is not _ABSENT:
            return value, where
    return _ABSENT, ""


def check_run(report: Report, section: str, payload: Any) -> tuple[int | None, bool]:
    """Check GET /api/test-runs/{id}; returns (failed count, whether per-test rows came)."""
    shape, levels = run_levels(payload)
    report.shape = shape
    report.add(section, "shape", shape != "none", shape, True)
    if shape == "none":  # no run fields to look at: say only what the answer holds instead
        unknown_keys(report, section, "the answer", payload, {"data"})
        unknown_keys(report, section, "data", dig(payload, "data"), {"test_run", "project"})
        return None, False
    for name in RUN_FIELDS:
        value, where = find(levels, name)
        detail = shown(name, value) + (f" (at {where})" if where and where != levels[0][0] else "")
        if name == "id":
            report.add(section, "run.id", as_int(value) is not None, detail, True)
        elif name == "state":
            report.add(section, "run.state", isinstance(value, str) and bool(value), detail, True)
            unknown_states(report, section, [value])
        else:
            report.add(section, f"run.{name}", value is not _ABSENT, detail)
    check_error_code(report, section, levels)
    rows = check_rows(report, section, levels)
    slug, where = find(levels, "project.slug")
    detail = f"{shown('state', slug)} at {where}.project.slug" if where else "missing"
    report.add(section, "project slug", isinstance(slug, str) and bool(slug), detail)
    unknown_keys(report, section, "the answer", payload, {"data"})
    if shape != "flat data":
        unknown_keys(report, section, "data", dig(payload, "data"), {"test_run", "project"})
    if shape.startswith("nested"):
        known = {"testRun", "flattenedSummaryDetails", "project"}
        unknown_keys(report, section, "data.test_run", dig(payload, "data.test_run"), known)
    failed, _ = find(levels, "failed_count")
    return as_int(failed), rows


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


def check_rows(report: Report, section: str, levels: Levels) -> bool:
    """Per-test rows (`flattenedSummaryDetails`): where failed test names come from."""
    rows, where = find(levels, "flattenedSummaryDetails")
    if not isinstance(rows, list):
        report.add(section, "flattenedSummaryDetails", False, f"{kind(rows)} (failed tests: counts only)")
        return False
    report.add(section, "flattenedSummaryDetails", True, f"list of {len(rows)} at {where}")
    dicts = [row for row in rows if isinstance(row, dict)]
    for name in ROW_FIELDS if dicts else ():
        present = sum(1 for row in dicts if name in row)
        report.add(section, f"row.{name}", present == len(dicts), f"in {present}/{len(dicts)} rows")
    if dicts:
        failed = sum(1 for row in dicts if row.get("status") == "failed")
        report.info(section, "rows with status failed", str(failed))
    return bool(rows)


def check_cases(report: Report, client: EmpiricalClient, run_id: int) -> None:
    """The undocumented per-test endpoint, tried only as the fallback it is; never required."""
    section = f"GET /api/v2/test-runs/{run_id}/cases (undocumented, optional)"
    try:
        payload = client.request(endpoints.test_run_cases(run_id))
    except EmpiricalError as exc:
        report.info(section, "per-test rows", f"missing (HTTP {exc.status or type(exc).__name__})")
        return
    rows = dig(payload, "data")
    if not isinstance(rows, list):
        report.info(section, "per-test rows", f"missing (data is {kind(rows)})")
        return
    with_id = sum(1 for row in rows if isinstance(row, dict) and "pw_test_id" in row)
    report.info(section, "per-test rows", f"found: list of {len(rows)}, pw_test_id in {with_id}")


def check_parser(report: Report, payload: Any) -> None:
    """The final word: does the provider's own parser read this answer?"""
    try:
        run = parse_test_run(payload)
    except ValueError as exc:
        report.parser = f"cannot read the run: {exc}"
        report.add("provider", "parse_test_run", False, report.parser, True)
        return
    report.parser = f"reads run {run['id']}, state {run['state']}"
    report.add("provider", "parse_test_run", True, report.parser)


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
        newest = check_list(report, section, listed)
        run_id = run_id or newest
        if run_id is not None:
            section = f"GET {endpoints.TEST_RUNS}/{run_id}"
            payload = fetch(client, report, section, endpoints.get_test_run(run_id))
            failed, has_rows = check_run(report, section, payload)
            if failed and not has_rows:
                check_cases(report, client, run_id)
            check_parser(report, payload)
    finally:
        client.close()
    conclude(report, run_id is not None)
    return report


def conclude(report: Report, run_checked: bool) -> None:
    missing = [c.name for c in report.checks if c.status == MISSING]
    warnings = sum(1 for c in report.checks if c.status == WARN)
    if missing:
        report.verdict = f"MISMATCH: required {', '.join(missing)} missing; please report it (see docs)"
        report.exit_code = 1
    elif not run_checked:
        report.verdict = "INCOMPLETE: no test run to fetch; trigger one or pass --run-id, then probe again"
        report.exit_code = 1
    else:
        report.verdict = (
            f"OK: everything the provider needs was found ({warnings} warning(s) on nice-to-have fields)"
        )


def render(report: Report) -> str:
    lines = [f"Empirical API contract probe: {report.api_url} (read-only, GET requests only)"]
    section = None
    width = max((len(check.name) for check in report.checks), default=0) + 1
    for check in report.checks:
        if check.section == "provider":
            continue
        if check.section != section:
            section = check.section
            lines += ["", section]
        lines.append(f"  {check.status:<8} {check.name:<{width}} {check.detail}".rstrip())
    lines += ["", f"Run answer shape: {report.shape}", f"Provider parser (parse_test_run): {report.parser}"]
    lines.append(f"Verdict: {report.verdict}")
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
        print(f"probe: {config.redact(explain(exc, config))}", file=sys.stderr)
        return 2
    text = json.dumps(dataclasses.asdict(report), indent=2) if args.json else render(report)
    print(config.redact(text))
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
