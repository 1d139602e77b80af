"""Every request this provider can send, each method and path written once (as Databricks' hook
keeps its endpoint constants). A function returns the `Call`; nothing here sends anything.

Paths are the API reference's. Ids are checked here, so no caller can put a path together from
an unchecked value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_empirical.http.protocol import Call
from airflow_provider_empirical.validation import positive_int, text

TEST_RUNS = "/api/test-runs"
TEST_RUN = TEST_RUNS + "/{id}"
TEST_RUN_CANCEL = TEST_RUN + "/cancel"
TEST_RUN_RERUN = TEST_RUN + "/re-run"
TEST_RUN_CASES = "/api/v2/test-runs/{id}/cases"  # undocumented; Empirical's own suite reads it
SNOOZES = "/api/snoozes"
SNOOZE = SNOOZES + "/{id}"
TEST_CASES = "/api/v2/test-cases"
ENVIRONMENTS = "/api/environments/list"
TEST_RUN_ANALYTICS = "/api/v2/analytics/test-runs"

MAX_PER_PAGE = 100  # every paginated endpoint's documented maximum
CANCEL_REASON_CHARS = 500


def _path(template: str, ident: Any, field: str) -> str:
    return template.format(id=positive_int(ident, field))


# -- test runs --


def get_test_run(test_run_id: Any) -> Call:
    return Call("GET", _path(TEST_RUN, test_run_id, "test_run_id"))


def list_test_runs(page: int, per_page: int, filters: Mapping[str, Any]) -> Call:
    return Call("GET", TEST_RUNS, params={**filters, "page": page, "per_page": per_page})


def trigger_test_run(body: Mapping[str, Any]) -> Call:
    """`PUT /api/test-runs`: creates a run, so it is never sent twice on a doubt."""
    return Call("PUT", TEST_RUNS, body=body, creates="test run")


def rerun_test_run(test_run_id: Any, body: Mapping[str, Any]) -> Call:
    """`POST .../re-run`: creates a run, like the trigger."""
    return Call("POST", _path(TEST_RUN_RERUN, test_run_id, "test_run_id"), body=body, creates="test run")


def cancel_test_run(test_run_id: Any, reason: str | None) -> Call:
    """`POST .../cancel`: harmless to repeat (a second cancel of an ended run answers 412)."""
    body = {"reason": text(reason, "reason")[:CANCEL_REASON_CHARS]} if reason is not None else {}
    return Call("POST", _path(TEST_RUN_CANCEL, test_run_id, "test_run_id"), body=body, repeatable=True)


def test_run_cases(test_run_id: Any) -> Call:
    return Call("GET", _path(TEST_RUN_CASES, test_run_id, "test_run_id"))


# -- snoozes --


def list_snoozes(page: int, per_page: int, filters: Mapping[str, Any]) -> Call:
    return Call("GET", SNOOZES, params={**filters, "page": page, "per_page": per_page})


def get_snooze(snooze_id: Any) -> Call:
    return Call("GET", _path(SNOOZE, snooze_id, "snooze_id"))


def create_snooze(body: Mapping[str, Any]) -> Call:
    """`POST /api/snoozes`: creates a snooze, so it is never sent twice on a doubt."""
    return Call("POST", SNOOZES, body=body, creates="snooze")


def update_snooze(snooze_id: Any, body: Mapping[str, Any]) -> Call:
    """`PATCH /api/snoozes/{id}`: sets fields (or `expire_now`), harmless to repeat."""
    return Call("PATCH", _path(SNOOZE, snooze_id, "snooze_id"), body=body, repeatable=True)


# -- test cases, environments --


def list_test_cases(page: int, per_page: int, filters: Mapping[str, Any]) -> Call:
    return Call("GET", TEST_CASES, params={**filters, "page": page, "per_page": per_page})


def list_environments(filters: Mapping[str, Any]) -> Call:
    return Call("GET", ENVIRONMENTS, params=dict(filters))
