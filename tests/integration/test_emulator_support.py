"""Helpers shared by the emulator's test modules (test_emulator*.py); this module holds no tests.

Everything goes over real loopback HTTP to a real Emulator; nothing is mocked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx

from airflow_provider_empirical.emulator import Emulator, RunScript

KEY, OTHER_KEY = "test-key", "other-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIST_ITEM_KEYS = {
    "id",
    "state",
    "total_count",
    "success_count",
    "failed_count",
    "failed_count_after_snoozing",  # seen on list items in Empirical's own suite
    "skipped_count",
    "flaky_count",
    "duration",
    "test_run_branch",
    "environment_slug",
    "environment_name",
    "build_url",
    "build_branch",
    "commit",
    "environment_variables_overrides",  # seen on list items in Empirical's own suite
    "created_at",
    "rerun_source_id",  # not in the README's list: the emulator's link from a re-run to its source
}
DETAIL_KEYS = LIST_ITEM_KEYS | {
    "environment_id",
    "error_code",
    "metadata",
    "tags",
    "test_case_ids",
    "project",
}
PROJECT = {"id": 1, "name": "Demo project", "slug": "demo", "repo_name": "demo-tests"}
ROW_KEYS = {"name", "pw_test_id", "status", "slug", "snooze_info", "nesting", "test_project"}
PW_ID = re.compile(r"^[0-9a-f]{20}-[0-9a-f]{20}$")
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FAST = RunScript(queued_for=0.0, run_for=0.0)
FAIL_FAST = RunScript(queued_for=0.0, run_for=0.0, outcome="failed")


def new_client(
    url: str, key: str | None = KEY, headers: dict[str, str] | None = None, timeout: float = 5
) -> httpx.Client:
    """A plain-HTTP client; verify=False only skips loading CA certificates, which is slow."""
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers={**auth, **(headers or {})}, verify=False, timeout=timeout)


def serve(**kwargs: Any) -> Iterator[Emulator]:
    """A running emulator with two projects' keys (for module-scoped fixtures)."""
    with Emulator(api_keys={KEY: 1, OTHER_KEY: 2}, **kwargs) as emu:
        yield emu


def put(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.put("/api/test-runs", json={"environment": "production", **body})


def run_id_of(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    run_id: int = response.json()["data"]["test_run"]["id"]
    return run_id


def get_run(client: httpx.Client, path: str) -> dict[str, Any]:
    """The run fields of GET /api/test-runs/{id} in the default (nested) shape."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()["data"]["test_run"]["testRun"]
    return run


def rows_of(client: httpx.Client, run_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/test-runs/{run_id}")
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]["test_run"]["flattenedSummaryDetails"]
    return rows


def items_of(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/test-runs", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["data"]["test_runs"]["items"]
    return items


def tally(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        status: sum(1 for r in rows if r["status"] == status)
        for status in ("passed", "failed", "flaky", "skipped")
    }


def states_until(client: httpx.Client, run_id: int, final: str, timeout: float = 3.0) -> list[str]:
    """Poll a run until `final`, returning the distinct states seen in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get_run(client, f"/api/test-runs/{run_id}")
        assert (
            run["total_count"] is None
            or run["success_count"] is None
            or (
                run["success_count"] + run["failed_count"] + run["skipped_count"] + run["flaky_count"]
                <= run["total_count"]
            )
        )
        if not seen or seen[-1] != run["state"]:
            seen.append(run["state"])
        if run["state"] == final:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached {final}; saw {seen}")
