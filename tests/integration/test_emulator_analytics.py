"""GET /api/v2/analytics/test-runs (issue 26), computed from the emulator's own runs, over real HTTP."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.integration.test_emulator_support import (
    FAIL_FAST,
    FAST,
    new_client,
    put,
    run_id_of,
)

DAY_KEYS = {
    "date",
    "run_count",
    "passed_runs",
    "failed_runs",
    "error_runs",
    "cancelled_runs",
    "rerun_count",
    "total_tests",
    "passed_tests",
    "failed_tests",
    "failed_tests_after_snooze",
    "flaky_tests",
}
ZERO = dict.fromkeys(DAY_KEYS - {"date"}, 0)


def analytics(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v2/analytics/test-runs", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"data"} and set(body["data"]) == {"daily", "summary"}
    data: dict[str, Any] = body["data"]
    return data


def make_history(emu: Emulator, client: httpx.Client) -> date:
    """Seven finished runs over three days (and one queued run); returns today's date."""
    emu.queue_runs(
        FAST,  # 1 today: passed (branch release)
        FAIL_FAST,  # 2 today: 3 failed
        RunScript(
            queued_for=0,
            run_for=0,
            outcome="failed",
            total=24,
            failed_tests=["signs in with email", "pays with card"],
            snoozed_tests=True,
        ),  # 3 today: 2 failed, all snoozed: passed
        RunScript(queued_for=0, run_for=0, outcome="error"),  # 4 yesterday: error
        RunScript(queued_for=60),  # 5 yesterday: cancelled by finish_run
        FAIL_FAST,  # 6 today: a re-run of 2's failures, failing again
        RunScript(
            queued_for=0, run_for=0, total=24, flaky_tests=["removes an item", "updates the avatar"]
        ),  # 7
        RunScript(queued_for=60),  # 8 today: still queued, not counted
    )
    put(client, branch="release")
    for _ in range(4):
        put(client)
    assert client.post("/api/test-runs/2/re-run", json={"only_failed": True}).status_code == 200
    run_id_of(put(client, environment="staging"))
    put(client)
    emu.finish_run(5, "cancelled")
    for run_id in (4, 5):
        emu.age_run(run_id, 86400)
    with new_client(emu.url, None) as control:
        aged = control.post("/_emulator/runs/7/age", json={"seconds": 2 * 86400})
        assert aged.status_code == 200 and aged.json()["test_run"]["id"] == 7
        assert control.post("/_emulator/runs/7/age", json={"seconds": -1}).status_code == 400
        assert control.post("/_emulator/runs/99/age", json={"seconds": 1}).status_code == 404
    return date.fromisoformat(emu.runs[0]["created_at"][:10])


def test_daily_and_summary_figures(emu: Emulator, client: httpx.Client) -> None:
    today = make_history(emu, client)
    data = analytics(client, start_date=str(today - timedelta(days=2)), end_date=str(today))
    assert all(set(day) == DAY_KEYS for day in data["daily"])
    assert data["daily"] == [
        {
            **ZERO,
            "date": str(today - timedelta(days=2)),
            "run_count": 1,
            "passed_runs": 1,
            "total_tests": 24,
            "passed_tests": 22,
            "flaky_tests": 2,
        },
        {
            **ZERO,
            "date": str(today - timedelta(days=1)),
            "run_count": 2,
            "error_runs": 1,
            "cancelled_runs": 1,
            "total_tests": 24,
            "passed_tests": 10,
        },
        {
            "date": str(today),
            "run_count": 4,
            "passed_runs": 2,
            "failed_runs": 2,
            "error_runs": 0,
            "cancelled_runs": 0,
            "rerun_count": 1,
            "total_tests": 75,
            "passed_tests": 65,
            "failed_tests": 8,
            "failed_tests_after_snooze": 6,
            "flaky_tests": 0,
        },
    ]
    assert data["summary"] == {
        "total_runs": 7,
        "passed_runs": 3,
        "failed_runs": 2,
        "error_runs": 1,
        "pass_rate": 43,  # 3 of 7, an integer percentage
        "avg_tests_per_run": 18,  # 123 / 7
        "rerun_count": 1,
        "rerun_rate": 14,
    }


def test_filters_and_the_snooze_switch(emu: Emulator, client: httpx.Client) -> None:
    today = make_history(emu, client)
    window = {
        "start_date": f"{today - timedelta(days=2)}T00:00:00.000Z",
        "end_date": f"{today}T23:59:59.999Z",
    }
    staging = analytics(client, environment_id=2, **window)
    assert staging["summary"]["total_runs"] == 1 and staging["summary"]["pass_rate"] == 100
    release = analytics(client, branch="release", **window)
    assert [d["run_count"] for d in release["daily"]] == [0, 0, 1]
    assert analytics(client, branch="nowhere", **window)["summary"] == {
        "total_runs": 0,
        "passed_runs": 0,
        "failed_runs": 0,
        "error_runs": 0,
        "pass_rate": 0,
        "avg_tests_per_run": 0,
        "rerun_count": 0,
        "rerun_rate": 0,
    }
    emu.set_switches(snoozed_failures_pass=False)
    summary = analytics(client, **window)["summary"]
    assert (summary["passed_runs"], summary["failed_runs"], summary["pass_rate"]) == (2, 3, 29)


def test_days_window(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAST)
    put(client)
    data = analytics(client)
    today = date.fromisoformat(emu.runs[0]["created_at"][:10])
    assert len(data["daily"]) == 30 and data["daily"][-1]["date"] == str(today)  # days defaults to 30
    assert data["daily"][0]["date"] == str(today - timedelta(days=29))
    assert [d["date"] for d in analytics(client, days=1)["daily"]] == [str(today)]
    assert analytics(client, days=1)["summary"]["total_runs"] == 1
    ranged = analytics(client, days=5, start_date="2026-01-30", end_date="2026-02-02")  # the range wins
    assert [d["date"] for d in ranged["daily"]] == ["2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"days": 0}, "days"),
        ({"days": 91}, "days"),
        ({"days": "week"}, "days"),
        ({"start_date": "2026-01-01"}, "end_date"),
        ({"end_date": "2026-01-01"}, "start_date"),
        ({"start_date": "2026-01-05", "end_date": "2026-01-01"}, "end_date"),
        ({"start_date": "Jan 1", "end_date": "2026-01-02"}, "start_date"),
        ({"environment_id": 0}, "environment_id"),
    ],
)
def test_query_errors(client: httpx.Client, params: dict[str, Any], field: str) -> None:
    response = client.get("/api/v2/analytics/test-runs", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"{field}: ")


def test_analytics_can_be_absent(emu: Emulator, client: httpx.Client) -> None:
    with new_client(emu.url, None) as anon:
        assert anon.get("/api/v2/analytics/test-runs").status_code == 401
    emu.set_switches(analytics_endpoint=False)
    assert client.get("/api/v2/analytics/test-runs").status_code == 404
    assert client.post("/api/v2/analytics/test-runs").status_code == 404  # absent for every method
    emu.reset()
    assert client.get("/api/v2/analytics/test-runs").status_code == 200
    assert client.post("/api/v2/analytics/test-runs").status_code == 405
