"""Tests of the Empirical emulator over real loopback HTTP, checked against the API contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.integration.test_emulator_support import (
    AUTH,
    DETAIL_KEYS,
    FAST,
    ISO_MS_Z,
    KEY,
    LIST_ITEM_KEYS,
    OTHER_KEY,
    PROJECT,
    PW_ID,
    ROW_KEYS,
    get_run,
    new_client,
    put,
    rows_of,
    states_until,
    tally,
)

ROOT = Path(__file__).resolve().parents[2]


# --- import and scripts -------------------------------------------------------------------------


def test_import_is_standard_library_only() -> None:
    code = (
        "import sys, types; pkg = types.ModuleType('airflow_provider_empirical');"
        f"pkg.__path__ = [{str(ROOT / 'airflow_provider_empirical')!r}];"
        "sys.modules['airflow_provider_empirical'] = pkg;"
        "import airflow_provider_empirical.emulator;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'httpx', 'http')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_script_defaults_and_round_trip() -> None:
    script = RunScript()
    assert (script.queued_for, script.run_for, script.outcome) == (0.5, 2.0, "passed")
    assert script.error_code is None
    assert script.counts() == {"total": 24, "success": 23, "failed": 0, "skipped": 1, "flaky": 0}
    assert RunScript(outcome="failed").counts()["failed"] > 0
    assert RunScript(outcome="error").error_code == "run_failed_with_error"
    derived = RunScript(total=10, failed=2).counts()
    assert derived == {"total": 10, "success": 8, "failed": 2, "skipped": 0, "flaky": 0}
    custom = RunScript(queued_for=0.1, outcome="error", error_code="merge_conflict", total=3)
    assert RunScript.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom
    with pytest.raises(ValueError, match="outcome"):
        RunScript(outcome="exploded")
    with pytest.raises(ValueError, match="unknown"):
        RunScript.from_dict({"queued": 1})


# --- auth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dGVzdA=="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": KEY},
    ],
)
def test_bad_credentials_are_401_on_every_endpoint(emu: Emulator, headers: dict[str, str]) -> None:
    with new_client(emu.url, None, headers=headers) as anon:
        for response in (
            anon.get("/api/test-runs"),
            anon.get("/api/test-runs/1"),
            anon.put("/api/test-runs", json={"environment": "production"}),
        ):
            assert response.status_code == 401
            assert response.json()["error"]["message"]
    assert emu.runs == []


def test_x_project_id_header(client: httpx.Client) -> None:
    assert client.get("/api/test-runs", headers={"x-project-id": "1"}).status_code == 200
    forbidden = client.get("/api/test-runs", headers={"x-project-id": "2"})
    assert forbidden.status_code == 403 and "x-project-id" in forbidden.json()["error"]["message"]
    bad = client.put("/api/test-runs", json={"environment": "production"}, headers={"x-project-id": "one"})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("x-project-id")


# --- trigger ---------------------------------------------------------------------------------------


def test_trigger_response_matches_the_contract(emu: Emulator, client: httpx.Client) -> None:
    first = put(client)
    assert first.status_code == 200
    body = first.json()
    created_at = body["data"]["test_run"].pop("created_at")
    assert body == {
        "data": {
            "trigger": {"success": True},
            "test_run": {"id": 1, "state": "queued", "test_run_branch": "main"},
        }
    }
    assert ISO_MS_Z.match(created_at)
    stamp = time.mktime(time.strptime(created_at[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(stamp - time.time()) < 5
    branched = put(client, branch="feature/x").json()["data"]["test_run"]
    assert (branched["id"], branched["state"], branched["test_run_branch"]) == (2, "queued", "feature/x")
    assert put(client).json()["data"]["test_run"]["id"] == 3
    built = put(client, build={"branch": "release", "url": "https://ci/1", "commit": "abc"}).json()
    assert built["data"]["test_run"]["id"] == 4 and built["data"]["test_run"]["test_run_branch"] == "release"
    assert [run["id"] for run in emu.runs] == [1, 2, 3, 4]


def test_trigger_stores_everything_and_ignores_unknown_fields(emu: Emulator, client: httpx.Client) -> None:
    body = {
        "environment": "staging",
        "build": {
            "url": "https://ci/7",
            "branch": "dev",
            "commit": "c0ffee",
            "commit_url": "https://git/c0ffee",
            "version": "1.2",
        },
        "metadata": {"dag": "nightly", "try": 2, "ratio": 0.5},
        "tags": ["@smoke"],
        "environment_variables_overrides": [{"name": "BASE_URL", "value": "https://x"}],
        "project_id": 1,
        "send_notifications": False,
        "total_shards": 3,
        "github_actor": "octo",
        "some_future_field": {"anything": True},
    }
    assert client.put("/api/test-runs", json=body).status_code == 200
    assert emu.trigger_body(1) == body
    run = get_run(client, "/api/test-runs/1")
    assert (run["environment_slug"], run["environment_name"]) == ("staging", "Staging")
    assert (run["build_url"], run["build_branch"], run["commit"]) == ("https://ci/7", "dev", "c0ffee")
    assert run["metadata"] == body["metadata"] and run["tags"] == ["@smoke"]


OVERRIDES = "environment_variables_overrides"
BAD_BODIES: list[tuple[Any, str]] = [
    ([], "body"),
    ("production", "body"),
    ({}, "environment"),
    ({"environment": ""}, "environment"),
    ({"environment": 5}, "environment"),
    ({"environment": None}, "environment"),
    ({"environment": "nowhere"}, "environment"),
    ({"build": "main"}, "build"),
    ({"build": {"sha": "abc"}}, "build.sha"),
    ({"build": {"url": 1}}, "build.url"),
    ({"metadata": ["a"]}, "metadata"),
    ({"metadata": {"ok": True}}, "metadata.ok"),
    ({"metadata": {"gone": None}}, "metadata.gone"),
    ({"metadata": {"deep": {"a": 1}}}, "metadata.deep"),
    ({OVERRIDES: {"name": "A"}}, OVERRIDES),
    ({OVERRIDES: ["A=1"]}, f"{OVERRIDES}[0]"),
    ({OVERRIDES: [{"name": "", "value": "1"}]}, f"{OVERRIDES}[0].name"),
    ({OVERRIDES: [{"name": "A", "value": 1}]}, f"{OVERRIDES}[0].value"),
    ({"tags": "@smoke"}, "tags"),
    ({"tags": ["@smoke", 1]}, "tags[1]"),
    ({"branch": 5}, "branch"),
    ({"branch": "main", "build": {"branch": "main"}}, "branch"),
    ({"project_id": 0}, "project_id"),
    ({"project_id": True}, "project_id"),
    ({"project_id": "1"}, "project_id"),
    ({"project_id": 1.5}, "project_id"),
    ({"project_id": 2}, "project_id"),
    ({"send_notifications": "yes"}, "send_notifications"),
    ({"total_shards": 0}, "total_shards"),
    ({"rerun_source_id": -1}, "rerun_source_id"),
    ({"rerun_source_id": 1, "rerun_only_failed": 1}, "rerun_only_failed"),
    ({"rerun_only_failed": True}, "rerun_only_failed"),
    ({"github_actor": 7}, "github_actor"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_trigger_validation_names_the_field(
    emu: Emulator, client: httpx.Client, body: Any, field: str
) -> None:
    if isinstance(body, dict) and body != {}:
        body = {"environment": "production", **body}
    response = client.put("/api/test-runs", json=body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith(f"{field}: ")
    assert emu.runs == []


def test_unknown_environment_lists_the_available_ones(client: httpx.Client) -> None:
    message = put(client, environment="qa").json()["error"]["message"]
    assert "production" in message and "staging" in message and "development" in message


@pytest.mark.parametrize("raw", [b"", b"{", b'{"environment": NaN}', b"\xff"])
def test_invalid_json_is_400(emu: Emulator, client: httpx.Client, raw: bytes) -> None:
    response = client.put("/api/test-runs", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("body")
    assert emu.runs == []


def test_rerun_source_must_exist_in_the_project(emu: Emulator, client: httpx.Client) -> None:
    missing = put(client, rerun_source_id=99)
    assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("rerun_source_id")
    assert put(client).status_code == 200
    assert put(client, rerun_source_id=1, rerun_only_failed=True).status_code == 200
    with new_client(emu.url, OTHER_KEY) as other:
        assert put(other, rerun_source_id=1).status_code == 404
        assert put(other, project_id=2).status_code == 200


# --- reading runs ----------------------------------------------------------------------------------


def test_get_one_run_shape_and_404s(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=60))
    put(client, metadata={"k": "v"}, tags=["@a"])
    response = client.get("/api/test-runs/1")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data"} and set(body["data"]) == {"test_run", "project"}
    assert set(body["data"]["test_run"]) == {"testRun", "flattenedSummaryDetails"}
    assert body["data"]["project"] == PROJECT
    run = body["data"]["test_run"]["testRun"]
    assert set(run) == DETAIL_KEYS
    assert run["project"] == PROJECT
    assert run["state"] == "queued" and run["total_count"] is None and run["duration"] is None
    assert run["failed_count"] is None and run["failed_count_after_snoozing"] is None
    assert (run["metadata"], run["tags"], run["error_code"]) == ({"k": "v"}, ["@a"], None)
    assert (run["environment_id"], run["test_case_ids"], run["environment_variables_overrides"]) == (
        1,
        [],
        [],
    )
    assert body["data"]["test_run"]["flattenedSummaryDetails"] == []
    for path in ("/api/test-runs/2", "/api/test-runs/abc", "/api/test-runs/-1", "/api/test-runs/1.0"):
        assert client.get(path).status_code == 404
    with new_client(emu.url, OTHER_KEY) as other:
        assert other.get("/api/test-runs/1").status_code == 404


def test_flat_shape_has_the_same_run_fields(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0, outcome="failed"))
    put(client)
    nested = client.get("/api/test-runs/1").json()
    assert emu.shape == "nested"
    emu.set_shape("flat")
    flat = client.get("/api/test-runs/1").json()
    assert set(flat["data"]) == {"test_run", "project"} and flat["data"]["project"] == PROJECT
    assert flat["data"]["test_run"] == nested["data"]["test_run"]["testRun"]
    assert "flattenedSummaryDetails" not in flat["data"]["test_run"]
    with pytest.raises(ValueError):
        emu.set_shape("deep")
    emu.reset()
    assert emu.shape == "nested"
    with Emulator(api_keys={KEY: 1}, shape="flat") as flat_emu, new_client(flat_emu.url) as flat_client:
        put(flat_client)
        assert flat_client.get("/api/test-runs/1").json()["data"]["test_run"]["id"] == 1
        flat_emu.set_shape("nested")
        flat_emu.reset()
        assert flat_emu.shape == "flat"
    with pytest.raises(ValueError):
        Emulator(shape="Nested")


def test_rows_match_the_counts_of_every_outcome(emu: Emulator, client: httpx.Client) -> None:
    outcomes = ("passed", "failed", "cancelled")
    emu.queue_runs(
        *(RunScript(queued_for=0, run_for=0, outcome=o) for o in outcomes),
        RunScript(queued_for=0, run_for=0, total=6, failed=1, flaky=2, skipped=1),
    )
    for _ in range(4):
        put(client)
    time.sleep(0.6)  # past cancelling
    for run_id in (1, 2, 3, 4):
        run, rows = get_run(client, f"/api/test-runs/{run_id}"), rows_of(client, run_id)
        assert len(rows) == run["total_count"]
        assert tally(rows) == {
            "passed": run["success_count"],
            "failed": run["failed_count"],
            "flaky": run["flaky_count"],
            "skipped": run["skipped_count"],
        }
        assert run["failed_count_after_snoozing"] == run["failed_count"]  # nothing snoozed
        for row in rows:
            assert set(row) == ROW_KEYS and row["snooze_info"] == []
            assert PW_ID.match(row["pw_test_id"]) and row["test_project"] in ("chromium", "firefox")
            assert row["nesting"][0].endswith(".spec.ts") and row["nesting"][-1] == row["name"]
            assert (row["slug"] is not None) == (row["status"] in ("failed", "flaky"))
        assert len({r["pw_test_id"] for r in rows}) == len(rows)
    failed = [(r["nesting"], r["test_project"]) for r in rows_of(client, 2) if r["status"] == "failed"]
    assert failed == [  # the default failed run: the 21st to 23rd tests of the catalogue fail
        (["search/filters.spec.ts", "filters", "clears all filters"], "chromium"),
        (["search/results.spec.ts", "search results", "shows only matching cards"], "chromium"),
        (["search/results.spec.ts", "search results", "paginates long results"], "chromium"),
    ]
    assert [r["pw_test_id"] for r in rows_of(client, 1)] == [r["pw_test_id"] for r in rows_of(client, 2)]
    assert tally(rows_of(client, 4)) == {"passed": 2, "failed": 1, "flaky": 2, "skipped": 1}


def test_scripted_test_names_and_failures(emu: Emulator, client: httpx.Client) -> None:
    names = ["login works", "cart \u203a keeps items", "search finds"]
    emu.queue_runs(
        RunScript(
            queued_for=0,
            run_for=0,
            outcome="failed",
            tests=names,
            failed_tests=["search finds", "login works"],
        ),
        RunScript(queued_for=0, run_for=0, failed_tests=["only this fails"], total=3),
    )
    put(client)
    put(client)
    assert [(r["name"], r["status"]) for r in rows_of(client, 1)] == [
        ("login works", "failed"),
        ("cart \u203a keeps items", "passed"),
        ("search finds", "failed"),
    ]
    run = get_run(client, "/api/test-runs/1")
    assert (run["total_count"], run["success_count"], run["failed_count"]) == (3, 1, 2)
    second = rows_of(client, 2)
    assert [r["status"] for r in second] == ["failed", "passed", "passed"]
    assert second[0]["name"] == "only this fails"
    for bad in (
        {"tests": ["a", "a"]},
        {"tests": ["a"], "failed_tests": ["b"]},
        {"tests": "a"},
        {"tests": ["a", "b"], "total": 3},
        {"failed_tests": ["a"], "failed": 2},
        {"tests": ["a"], "skipped": 2},
        {"tests": [""]},
        {"error_code_key": "code"},
    ):
        with pytest.raises(ValueError):
            RunScript(**bad)
    script = RunScript(tests=["a", "b"], failed_tests=["b"], error_code_key="errorCode")
    assert RunScript.from_dict(json.loads(json.dumps(script.to_dict()))) == script


def test_started_run_shows_finished_tests_only(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0.6, outcome="failed"))
    put(client)
    seen = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        body = client.get("/api/test-runs/1").json()["data"]["test_run"]
        run, rows = body["testRun"], body["flattenedSummaryDetails"]
        counts = (run["success_count"], run["failed_count"], run["skipped_count"], run["flaky_count"])
        assert tally(rows) == dict(zip(("passed", "failed", "skipped", "flaky"), counts, strict=True))
        assert run["total_count"] == 24
        seen.append(len(rows))
        if run["state"] == "ended":
            break
        time.sleep(0.05)
    assert seen == sorted(seen) and seen[0] < 24 and seen[-1] == 24


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("error_code", {"error_code": "merge_conflict"}),
        ("errorCode", {"errorCode": "merge_conflict"}),
        ("error.code", {"error": {"code": "merge_conflict"}}),
    ],
)
def test_error_code_spellings(
    emu: Emulator, client: httpx.Client, key: str, expected: dict[str, Any]
) -> None:
    emu.queue_runs(
        RunScript(queued_for=0, run_for=0, outcome="error", error_code="merge_conflict", error_code_key=key)
    )
    put(client)
    run = get_run(client, "/api/test-runs/1")
    assert {k: run[k] for k in expected} == expected
    others = {"error_code", "errorCode", "error"} - set(expected)
    assert not others & set(run)
    with new_client(emu.url, None) as control:
        script = {"outcome": "error", "error_code_key": "errorCode", "queued_for": 0, "run_for": 0}
        queued = control.post("/_emulator/runs/queue", json=script)
        assert queued.status_code == 200
    put(client)
    assert get_run(client, "/api/test-runs/2")["errorCode"] == "run_failed_with_error"


def test_cases_endpoint_lists_executed_tests(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0, outcome="failed"), RunScript(queued_for=60))
    put(client)
    put(client)
    response = client.get("/api/v2/test-runs/1/cases")
    assert response.status_code == 200
    cases = response.json()["data"]
    keys = ("pw_test_id", "name", "status", "nesting")
    assert [{k: row[k] for k in keys} for row in rows_of(client, 1)] == cases
    assert tally(cases) == {"passed": 20, "failed": 3, "flaky": 0, "skipped": 1}
    assert response.json()["pagination"] == {"page": 1, "per_page": 200, "total": 24, "total_pages": 1}
    paged = client.get("/api/v2/test-runs/1/cases", params={"per_page": 10, "page": 3}).json()
    assert paged["data"] == cases[20:] and paged["pagination"] == {
        "page": 3,
        "per_page": 10,
        "total": 24,
        "total_pages": 3,
    }
    assert client.get("/api/v2/test-runs/1/cases", params={"per_page": 201}).status_code == 400
    queued = {"data": [], "pagination": {"page": 1, "per_page": 200, "total": 0, "total_pages": 0}}
    assert client.get("/api/v2/test-runs/2/cases").json() == queued  # queued: nothing executed
    assert client.get("/api/v2/test-runs/9/cases").status_code == 404
    assert client.get("/api/v2/test-runs/x/cases").status_code == 404
    assert client.post("/api/v2/test-runs/1/cases").status_code == 405
    with new_client(emu.url, None) as anon:
        assert anon.get("/api/v2/test-runs/1/cases").status_code == 401
    with new_client(emu.url, OTHER_KEY) as other:
        assert other.get("/api/v2/test-runs/1/cases").status_code == 404


def test_control_api_shape(emu: Emulator, client: httpx.Client) -> None:
    put(client)
    with new_client(emu.url, None) as control:
        answer = control.post("/_emulator/shape", json={"shape": "flat"})
        assert answer.json() == {"ok": True, "shape": "flat"}
        assert client.get("/api/test-runs/1").json()["data"]["test_run"]["id"] == 1
        assert control.post("/_emulator/shape", json={"shape": "deep"}).status_code == 400
        assert control.post("/_emulator/shape", json={}).status_code == 400
        assert control.post("/_emulator/shape", json={"shape": "nested"}).status_code == 200
        assert get_run(client, "/api/test-runs/1")["id"] == 1


def test_unknown_paths_404_and_other_methods_405(client: httpx.Client) -> None:
    assert client.get("/api/v2/nothing").status_code == 404
    assert client.get("/api/v2/nothing").json()["error"]["message"]
    assert client.post("/api/test-runs", json={}).status_code == 405
    assert client.delete("/api/test-runs/1").status_code == 405
    assert client.put("/api/test-runs/1", json={}).status_code == 405


def test_list_filters_and_pagination(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(
        FAST,
        RunScript(queued_for=0, run_for=0, outcome="failed"),
        RunScript(queued_for=60),
        RunScript(queued_for=0, run_for=0, outcome="error"),
        FAST,
    )
    put(client)
    put(client, branch="feat")
    put(client, environment="staging")
    put(client, environment="staging", build={"branch": "feat"})
    put(client, environment="development")
    with new_client(emu.url, OTHER_KEY) as other:
        put(other)

    def ids(**params: Any) -> list[int]:
        response = client.get("/api/test-runs", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]["test_runs"]["items"]]

    body = client.get("/api/test-runs").json()
    assert body["data"]["project"]["id"] == 1
    assert body["pagination"] == {"page": 1, "per_page": 20, "total": 5, "total_pages": 1}
    assert all(set(item) == LIST_ITEM_KEYS for item in body["data"]["test_runs"]["items"])
    assert ids() == [5, 4, 3, 2, 1]
    page2 = client.get("/api/test-runs", params={"per_page": 2, "page": 2}).json()
    assert [i["id"] for i in page2["data"]["test_runs"]["items"]] == [3, 2]
    assert page2["pagination"] == {"page": 2, "per_page": 2, "total": 5, "total_pages": 3}
    assert ids(per_page=2, page=4) == []
    assert ids(branch="feat") == [4, 2]
    assert ids(environment_ids="2") == [4, 3]
    assert ids(environment_ids="1,3") == [5, 2, 1]
    assert ids(id=3) == [3]
    assert ids(state="queued") == [3]
    assert ids(state="ended") == [5, 2, 1]
    assert ids(result="passed") == [5, 1]
    assert ids(result="failed") == [4, 2]
    assert ids(interval_in_days=1) == [5, 4, 3, 2, 1]


def test_list_interval_environment_ids_and_empty_pages(emu: Emulator, client: httpx.Client) -> None:
    assert [(e["id"], e["slug"], e["is_disabled"]) for e in emu.environments] == [
        (1, "production", False),
        (2, "staging", False),
        (3, "development", False),
        (4, "legacy", True),
    ]
    emu.set_default_script(RunScript(queued_for=60))
    for environment in ("production", "staging", "development"):
        put(client, environment=environment)
    emu.age_run(1, 3 * 86400)  # created three days ago
    emu.age_run(2, 10 * 86400)

    def ids(**params: Any) -> list[int]:
        response = client.get("/api/test-runs", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]["test_runs"]["items"]]

    assert ids() == [3, 2, 1]
    assert ids(interval_in_days=1) == [3]
    assert ids(interval_in_days=7) == [3, 1]
    assert ids(interval_in_days=30) == [3, 2, 1]
    assert ids(environment_ids="2") == [2] and ids(environment_ids=" 3 , 1") == [3, 1]
    assert ids(environment_ids="9") == []
    items = client.get("/api/test-runs").json()["data"]["test_runs"]["items"]
    assert [(i["environment_slug"], i["environment_name"]) for i in items] == [
        ("development", "Development"),
        ("staging", "Staging"),
        ("production", "Production"),
    ]
    assert all("environment_id" not in item for item in items)
    empty = client.get("/api/test-runs", params={"branch": "nowhere"}).json()
    assert empty["data"]["test_runs"]["items"] == []
    assert empty["pagination"] == {"page": 1, "per_page": 20, "total": 0, "total_pages": 0}
    assert ids(state="queued", branch="main", environment_ids="1,2", per_page=1) == [2]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 101}, "per_page"),
        ({"per_page": "x"}, "per_page"),
        ({"page": 0}, "page"),
        ({"result": "green"}, "result"),
        ({"environment_ids": "1,b"}, "environment_ids"),
        ({"state": "done"}, "state"),
        ({"id": "x"}, "id"),
        ({"interval_in_days": "week"}, "interval_in_days"),
    ],
)
def test_list_rejects_bad_query(client: httpx.Client, params: dict[str, Any], field: str) -> None:
    response = client.get("/api/test-runs", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"{field}: ")


# --- lifecycle -------------------------------------------------------------------------------------


def test_passed_run_lifecycle(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0.15, run_for=0.15))
    run_id = put(client).json()["data"]["test_run"]["id"]
    assert states_until(client, run_id, "ended") == ["queued", "started", "ended"]
    run = get_run(client, f"/api/test-runs/{run_id}")
    counts = [run[f"{k}_count"] for k in ("total", "success", "failed", "skipped", "flaky")]
    assert counts == [24, 23, 0, 1, 0] and run["duration"] == 150 and run["error_code"] is None


@pytest.mark.parametrize(
    ("script", "final", "error_code"),
    [
        (RunScript(queued_for=0.02, run_for=0.05, outcome="failed"), "ended", None),
        (RunScript(queued_for=0.02, run_for=0.05, outcome="error"), "error", "run_failed_with_error"),
        (
            RunScript(queued_for=0.02, run_for=0.05, outcome="error", error_code="merge_conflict"),
            "error",
            "merge_conflict",
        ),
    ],
)
def test_failing_outcomes(
    emu: Emulator, client: httpx.Client, script: RunScript, final: str, error_code: str | None
) -> None:
    emu.queue_runs(script)
    put(client)
    states_until(client, 1, final)
    run = get_run(client, "/api/test-runs/1")
    assert run["error_code"] == error_code
    assert run["duration"] == 50
    if final == "ended":
        assert run["failed_count"] == 3 and run["total_count"] == 24


def test_cancelled_run_passes_through_cancelling(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0.05, outcome="cancelled"))
    put(client)
    assert states_until(client, 1, "cancelled")[-2:] == ["cancelling", "cancelled"]


def test_never_run_stays_started_until_finished(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0.01, outcome="never"))
    put(client)
    time.sleep(0.1)
    run = get_run(client, "/api/test-runs/1")
    assert run["state"] == "started" and run["duration"] is None
    assert run["success_count"] <= run["total_count"]
    forced = emu.finish_run(1, "error", "worker_interrupted")
    assert forced["state"] == "error" and forced["error_code"] == "worker_interrupted"
    fetched = get_run(client, "/api/test-runs/1")
    assert fetched["state"] == "error" and fetched["duration"] is not None
    assert emu.finish_run(1)["state"] == "cancelled"
    assert emu.finish_run(1, "failed")["failed_count"] == 3
    with pytest.raises(KeyError):
        emu.finish_run(42)
    with pytest.raises(ValueError):
        emu.finish_run(1, "exploded")


def test_scripts_are_fifo_then_per_environment_then_default(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0, outcome="error"), RunScript(queued_for=60))
    emu.set_environment_script("staging", RunScript(queued_for=0, run_for=0, outcome="failed"))
    emu.set_default_script(RunScript(queued_for=0, run_for=0, outcome="passed"))
    for environment in ("production", "production", "staging", "production"):
        put(client, environment=environment)
    runs = emu.runs
    assert [run["state"] for run in runs] == ["error", "queued", "ended", "ended"]
    assert (runs[2]["failed_count"], runs[3]["failed_count"]) == (3, 0)


# --- cancel ----------------------------------------------------------------------------------------


def cancel(client: httpx.Client, run_id: int | str, **body: Any) -> httpx.Response:
    return client.post(f"/api/test-runs/{run_id}/cancel", json=body if body else None)


def test_cancel_goes_cancelling_then_cancelled_and_records_the_reason(
    emu: Emulator, client: httpx.Client
) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=60))
    put(client)
    time.sleep(0.05)
    answer = cancel(client, 1, reason="Deployment rolled back")
    assert answer.status_code == 200
    assert set(answer.json()) == {"message"} and answer.json()["message"]
    assert get_run(client, "/api/test-runs/1")["state"] == "cancelling"
    again = cancel(client, 1, reason="second try")  # harmless while cancelling
    assert again.status_code == 200 and "message" in again.json()
    assert states_until(client, 1, "cancelled")[-1] == "cancelled"
    public = get_run(client, "/api/test-runs/1")
    assert "cancel_reason" not in public and public["duration"] is not None
    inspected = emu.runs[0]
    assert inspected["cancel_reason"] == "Deployment rolled back" and inspected["state"] == "cancelled"
    with new_client(emu.url, None) as control:
        assert control.get("/_emulator/runs").json()[0]["cancel_reason"] == "Deployment rolled back"
        page = control.get("/test-runs/1").text
        assert "Deployment rolled back" in page and "cancelled" in page
    recorded = [r for r in emu.requests if r.path == "/api/test-runs/1/cancel"]
    assert [(r.method, r.json) for r in recorded] == [
        ("POST", {"reason": "Deployment rolled back"}),
        ("POST", {"reason": "second try"}),
    ]
    assert emu.count("POST", "/api/test-runs/1/cancel") == 2


def test_cancel_keeps_finished_tests_and_skips_the_rest(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=1.0, outcome="failed"), RunScript(queued_for=60))
    put(client)
    put(client)
    time.sleep(0.5)
    before = get_run(client, "/api/test-runs/1")
    assert cancel(client, 1).status_code == 200
    assert cancel(client, 2).status_code == 200  # a queued run can be cancelled too
    time.sleep(0.6)
    after, rows = get_run(client, "/api/test-runs/1"), rows_of(client, 1)
    assert after["state"] == "cancelled" and after["total_count"] == 24 and len(rows) == 24
    assert after["success_count"] >= before["success_count"] and after["success_count"] < 20
    assert after["failed_count"] <= 3
    assert after["success_count"] + after["failed_count"] + after["skipped_count"] == 24
    assert tally(rows)["skipped"] == after["skipped_count"]
    queued = get_run(client, "/api/test-runs/2")
    assert (queued["state"], queued["total_count"], queued["skipped_count"]) == ("cancelled", 24, 24)
    assert emu.runs[0]["cancel_reason"] is None


@pytest.mark.parametrize(
    "script",
    [
        RunScript(queued_for=0, run_for=0),
        RunScript(queued_for=0, run_for=0, outcome="error"),
        RunScript(queued_for=0, run_for=0, outcome="cancelled"),
    ],
)
def test_cancel_of_a_terminal_run_is_412(emu: Emulator, client: httpx.Client, script: RunScript) -> None:
    emu.queue_runs(script)
    put(client)
    time.sleep(0.55)  # a scripted cancel passes through cancelling first
    state = get_run(client, "/api/test-runs/1")["state"]
    answer = cancel(client, 1, reason="too late")
    assert answer.status_code == 412 and state in answer.json()["error"]["message"]
    assert get_run(client, "/api/test-runs/1")["state"] == state
    assert emu.runs[0]["cancel_reason"] is None


def test_cancel_errors(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=60))
    put(client)
    assert cancel(client, 9).status_code == 404
    assert cancel(client, "abc").status_code == 404
    with new_client(emu.url, OTHER_KEY) as other:
        assert cancel(other, 1).status_code == 404
    with new_client(emu.url, None) as anon:
        assert cancel(anon, 1).status_code == 401
    assert cancel(client, 1, reason=5).status_code == 400
    assert client.post("/api/test-runs/1/cancel", content=b"[1]").status_code == 400
    assert client.post("/api/test-runs/1/cancel", content=b"{").status_code == 400
    assert client.get("/api/test-runs/1/cancel").status_code == 405
    assert get_run(client, "/api/test-runs/1")["state"] == "queued"
    assert client.post("/api/test-runs/1/cancel").status_code == 200  # no body at all
    emu.add_fault(method="POST", path="/api/test-runs/*/cancel", status=503)
    assert cancel(client, 1).status_code == 503


def test_finish_run_after_cancel_wins(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=60))
    put(client)
    cancel(client, 1)
    assert emu.finish_run(1, "failed")["state"] == "ended"
    assert cancel(client, 1).status_code == 412


# --- re-run ----------------------------------------------------------------------------------------


def rerun(client: httpx.Client, run_id: int | str, **body: Any) -> httpx.Response:
    return client.post(f"/api/test-runs/{run_id}/re-run", json=body)


def test_rerun_answers_like_the_trigger_and_reuses_the_source(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAST, RunScript(queued_for=60))
    source_body = {
        "environment": "staging",
        "build": {"branch": "release", "url": "https://ci/9", "commit": "c1"},
        "environment_variables_overrides": [{"name": "BASE_URL", "value": "https://x"}],
        "tags": ["@smoke"],
        "send_notifications": False,
    }
    assert client.put("/api/test-runs", json=source_body).status_code == 200
    answer = rerun(client, 1)
    assert answer.status_code == 200
    body = answer.json()
    created_at = body["data"]["test_run"].pop("created_at")
    assert ISO_MS_Z.match(created_at)
    assert body == {
        "data": {
            "trigger": {"success": True},
            "test_run": {"id": 2, "state": "queued", "test_run_branch": "release"},
        }
    }
    stored = emu.trigger_body(2)
    assert stored == {**source_body, "rerun_source_id": 1, "rerun_only_failed": False}
    run = get_run(client, "/api/test-runs/2")
    assert run["rerun_source_id"] == 1 and run["environment_slug"] == "staging" and run["total_count"] is None
    items = client.get("/api/test-runs").json()["data"]["test_runs"]["items"]
    assert [(i["id"], i["rerun_source_id"]) for i in items] == [(2, 1), (1, None)]
    assert rerun(client, 1, send_notifications=True).status_code == 200
    assert emu.trigger_body(3)["send_notifications"] is True
    with new_client(emu.url, None) as browser:
        assert "/demo/test-runs/1" in browser.get("/test-runs/2").text  # links to its source
    recorded = [(r.method, r.path, r.json) for r in emu.requests if r.path.endswith("/re-run")]
    assert recorded == [
        ("POST", "/api/test-runs/1/re-run", {}),
        ("POST", "/api/test-runs/1/re-run", {"send_notifications": True}),
    ]


@pytest.mark.parametrize(("outcome", "statuses"), [("passed", ["passed"] * 3), ("failed", ["failed"] * 3)])
def test_rerun_only_failed_runs_just_those_tests(
    emu: Emulator, client: httpx.Client, outcome: str, statuses: list[str]
) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0, outcome="failed"))
    emu.set_default_script(RunScript(queued_for=0, run_for=0, outcome=outcome))
    put(client)
    failed = [(r["name"], r["pw_test_id"]) for r in rows_of(client, 1) if r["status"] == "failed"]
    assert len(failed) == 3
    assert rerun(client, 1, only_failed=True).status_code == 200
    run, rows = get_run(client, "/api/test-runs/2"), rows_of(client, 2)
    assert [(r["name"], r["pw_test_id"]) for r in rows] == failed
    assert [r["status"] for r in rows] == statuses
    assert run["total_count"] == 3 and run["rerun_source_id"] == 1
    assert run["failed_count"] == statuses.count("failed")
    assert run["success_count"] == statuses.count("passed")
    assert emu.trigger_body(2)["rerun_only_failed"] is True
    with new_client(emu.url, None) as browser:
        page = browser.get("/test-runs/2").text
        assert (html_escaped(failed[0][0]) in page) == (outcome == "failed")


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_rerun_only_failed_of_scripted_names(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(
        RunScript(
            queued_for=0, run_for=0, outcome="failed", tests=["a", "b", "c", "d"], failed_tests=["b", "d"]
        ),
        RunScript(queued_for=0, run_for=0, outcome="failed", failed_tests=["d"]),
        RunScript(queued_for=0, run_for=0, outcome="passed"),
    )
    put(client)
    rerun(client, 1, only_failed=True)
    assert [(r["name"], r["status"]) for r in rows_of(client, 2)] == [("b", "passed"), ("d", "failed")]
    rerun(client, 1)  # a full re-run runs the source's tests again
    assert [r["name"] for r in rows_of(client, 3)] == ["a", "b", "c", "d"]
    assert get_run(client, "/api/test-runs/3")["failed_count"] == 0


def test_put_with_rerun_only_failed_matches_the_rerun_route(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=0, run_for=0, outcome="failed"), RunScript(queued_for=60))
    emu.set_default_script(FAST)
    put(client)
    put(client)
    assert put(client, rerun_source_id=1, rerun_only_failed=True).status_code == 200
    assert get_run(client, "/api/test-runs/3")["total_count"] == 3
    # the trigger PUT is lenient: a source not yet completed gets a full run
    assert put(client, rerun_source_id=2, rerun_only_failed=True).status_code == 200
    assert get_run(client, "/api/test-runs/4")["total_count"] == 24


def test_rerun_errors(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(RunScript(queued_for=60))
    put(client)
    assert rerun(client, 9).status_code == 404
    assert rerun(client, "x").status_code == 404
    with new_client(emu.url, OTHER_KEY) as other:
        assert rerun(other, 1).status_code == 404
    with new_client(emu.url, None) as anon:
        assert rerun(anon, 1).status_code == 401
    for body, field in (
        ({"only_failed": "yes"}, "only_failed"),
        ({"only_failed": None}, "only_failed"),
        ({"send_notifications": 1}, "send_notifications"),
    ):
        answer = rerun(client, 1, **body)
        assert answer.status_code == 400 and answer.json()["error"]["message"].startswith(f"{field}: ")
    assert client.post("/api/test-runs/1/re-run", content=b"[]").status_code == 400
    assert client.post("/api/test-runs/1/re-run", content=b"{").status_code == 400
    not_done = rerun(client, 1, only_failed=True)
    assert not_done.status_code == 400
    assert (
        not_done.json()["error"]["message"].startswith("only_failed: ")
        and "queued" in not_done.json()["error"]["message"]
    )
    assert len(emu.runs) == 1
    assert client.post("/api/test-runs/1/re-run").status_code == 200  # no body: a full re-run
    emu.add_fault(method="POST", path="/api/test-runs/*/re-run", status=504, after_create=True)
    assert rerun(client, 1).status_code == 504
    assert len(emu.runs) == 3


# --- faults ----------------------------------------------------------------------------------------


def test_fault_status_with_retry_after_is_consumed(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="GET", path="/api/test-runs", status=429, headers={"Retry-After": "1"})
    limited = client.get("/api/test-runs")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert limited.json() == {"error": {"message": "injected fault"}}
    assert client.get("/api/test-runs").status_code == 200
    assert emu.count("GET", "/api/test-runs") == 2


def test_fault_matching_times_and_bodies(emu: Emulator, client: httpx.Client) -> None:
    put(client)
    emu.add_fault(method="get", path="/api/test-runs/*", times=2, status=502, body="Bad Gateway")
    assert put(client).status_code == 200  # PUT does not match a GET fault
    first = client.get("/api/test-runs/1")
    assert first.status_code == 502 and first.text == "Bad Gateway"
    assert first.headers["content-type"].startswith("text/plain")
    assert client.get("/api/test-runs/1").status_code == 502
    assert client.get("/api/test-runs/1").status_code == 200
    emu.add_fault(method="*", path="*", times=-1, status=500, body={"error": "down"})
    for _ in range(3):
        assert client.get("/api/test-runs").json() == {"error": "down"}


def test_fault_before_processing_does_not_create(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="PUT", path="/api/test-runs", status=503)
    assert put(client).status_code == 503
    assert emu.runs == []


def test_fault_after_create_really_creates(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="PUT", path="/api/test-runs", status=504, after_create=True)
    assert put(client).status_code == 504
    assert [run["id"] for run in emu.runs] == [1]


def test_fault_delay_slows_a_normal_response(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="GET", path="/api/test-runs", status=None, delay=0.3)
    started = time.monotonic()
    assert client.get("/api/test-runs").status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        emu.add_fault(method="GET", path="/api/test-runs", status=None, delay=0.5)
        client.get("/api/test-runs", timeout=0.1)


def test_fault_malformed_body(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="PUT", path="/api/test-runs", malformed=True, after_create=True)
    response = put(client)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert len(emu.runs) == 1


def test_fault_drop_closes_without_response(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="GET", path="/api/test-runs", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/api/test-runs")
    assert client.get("/api/test-runs").status_code == 200


def test_fault_echo_auth_leaks_the_header(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="GET", path="/api/test-runs", echo_auth=True)
    response = client.get("/api/test-runs")
    assert response.status_code == 500 and f"Bearer {KEY}" in response.text


def test_fault_echo_auth_honours_a_given_status(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(method="GET", path="/api/test-runs", echo_auth=True, status=200)
    response = client.get("/api/test-runs")
    assert response.status_code == 200 and f"Bearer {KEY}" in response.text
    assert "data" not in response.json()  # a success with no run in it
    assert emu.add_fault(echo_auth=True).status == 500 and emu.add_fault().status == 503


def test_fault_drip_sends_a_complete_body_slowly(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAST)
    put(client)
    expected = client.get("/api/test-runs/1").content
    emu.add_fault(method="GET", path="/api/test-runs/1", status=None, drip=len(expected) / 0.4)
    started = time.monotonic()
    response = client.get("/api/test-runs/1", timeout=0.3)  # each read is quick: no read timeout
    assert 0.3 <= time.monotonic() - started < 2
    assert response.status_code == 200 and response.content == expected
    assert response.headers["content-length"] == str(len(expected))
    emu.add_fault(method="GET", path="/api/test-runs", status=503, body={"error": "slow"}, drip=60)
    started = time.monotonic()
    assert client.get("/api/test-runs").json() == {"error": "slow"}
    assert time.monotonic() - started >= 0.2
    with pytest.raises(ValueError):
        emu.add_fault(drip=0)


def test_fault_drip_at_one_byte_per_second_is_noticed_by_a_total_deadline(emu: Emulator) -> None:
    import http.client

    emu.add_fault(method="GET", path="/api/test-runs", status=None, drip=1)
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=1.5)
    try:
        connection.request("GET", "/api/test-runs", headers=AUTH)
        response = connection.getresponse()  # headers come at once
        assert response.status == 200 and int(response.headers["Content-Length"]) > 50
        started = time.monotonic()
        assert len(response.read(2)) == 2
        assert 0.8 <= time.monotonic() - started < 1.5  # one byte each second
    finally:
        connection.close()


def test_response_delay_slows_every_api_answer(emu: Emulator, client: httpx.Client) -> None:
    emu.set_response_delay(0.2)
    assert emu.response_delay == 0.2
    for call in (lambda: client.get("/api/test-runs"), lambda: put(client)):
        started = time.monotonic()
        assert call().status_code == 200
        assert time.monotonic() - started >= 0.2
    emu.add_fault(method="GET", path="/api/test-runs", status=503)
    started = time.monotonic()
    assert client.get("/api/test-runs").status_code == 503
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    assert client.get("/_emulator/health").status_code == 200
    assert time.monotonic() - started < 0.2  # control routes are not slowed
    with pytest.raises(ValueError):
        emu.set_response_delay(-1)
    emu.reset()
    assert emu.response_delay == 0.0
    with Emulator(api_keys={KEY: 1}, response_delay=0.1) as slow:
        slow.set_response_delay(0)
        slow.reset()
        assert slow.response_delay == 0.1


def test_control_api_response_delay(emu: Emulator, client: httpx.Client) -> None:
    with new_client(emu.url, None) as control:
        answer = control.post("/_emulator/response-delay", json={"seconds": 0.15})
        assert answer.json() == {"ok": True, "seconds": 0.15}
        started = time.monotonic()
        client.get("/api/test-runs")
        assert time.monotonic() - started >= 0.15
        assert control.post("/_emulator/response-delay", json={"seconds": -1}).status_code == 400
        assert control.post("/_emulator/response-delay", json={"seconds": "1"}).status_code == 400
        assert control.post("/_emulator/response-delay", json={}).status_code == 400
        assert control.post("/_emulator/response-delay", json={"seconds": 0}).status_code == 200
        assert emu.response_delay == 0


def test_fault_redirect(emu: Emulator, client: httpx.Client) -> None:
    target = f"{emu.url}/api/test-runs?page=1"
    emu.add_fault(method="GET", path="/api/test-runs", status=307, headers={"Location": target})
    response = client.get("/api/test-runs")
    assert response.status_code == 307 and response.headers["location"] == target
    emu.add_fault(method="GET", path="/api/test-runs", status=302, headers={"Location": target})
    assert client.get("/api/test-runs", follow_redirects=True).status_code == 200


def test_invalid_fault_is_rejected(emu: Emulator) -> None:
    for bad in ({"times": 0}, {"status": 42}, {"delay": -1}, {"headers": {"Retry-After": 1}}):
        with pytest.raises(ValueError):
            emu.add_fault(**bad)


# --- recording -------------------------------------------------------------------------------------


def test_requests_exclude_control_and_dashboard_calls(emu: Emulator, client: httpx.Client) -> None:
    put(client, tags=["@smoke"])
    client.get("/api/test-runs", params={"per_page": "5"}, headers={"X-Trace": "abc"})
    client.get("/test-runs/1")
    client.get("/_emulator/health")
    recorded = emu.requests
    assert [(r.method, r.path) for r in recorded] == [("PUT", "/api/test-runs"), ("GET", "/api/test-runs")]
    assert recorded[0].json == {"environment": "production", "tags": ["@smoke"]}
    assert recorded[1].query == {"per_page": "5"} and recorded[1].json is None
    assert recorded[1].headers["x-trace"] == "abc" and recorded[1].headers["authorization"] == f"Bearer {KEY}"
    assert emu.count() == 2 and emu.count("PUT") == 1 and emu.count(path_prefix="/api/test-runs/") == 0


# --- dashboard -------------------------------------------------------------------------------------


def test_dashboard_pages_need_no_auth(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAST)
    put(client, metadata={"dag_id": "nightly<e2e>"})
    with new_client(emu.url, None) as browser:
        index = browser.get("/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        assert "/test-runs/1" in index.text
        page = browser.get("/test-runs/1")
        assert page.status_code == 200
        assert "ended" in page.text and "nightly&lt;e2e&gt;" in page.text and "Production" in page.text
        assert browser.get("/test-runs/2").status_code == 404
        assert "/demo/test-runs/1" in index.text
        slugged = browser.get("/demo/test-runs/1")
        assert slugged.status_code == 200 and "nightly&lt;e2e&gt;" in slugged.text
        assert browser.get("/other/test-runs/1").status_code == 404


# --- lifecycle of the server -----------------------------------------------------------------------


def test_stop_refuses_then_start_rebinds_the_same_port() -> None:
    emu = Emulator(api_keys={KEY: 1})
    try:
        emu.start()
        port = emu.port
        with new_client(emu.url, timeout=2) as client:
            put(client)
            emu.stop()
            with pytest.raises(httpx.ConnectError):
                client.get("/api/test-runs/1")
            emu.start()
            assert emu.port == port
            assert client.get("/api/test-runs/1").status_code == 200
    finally:
        emu.stop()


def test_stop_cuts_open_keep_alive_connections() -> None:
    import http.client

    with Emulator(api_keys={KEY: 1}) as emu:
        connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=2)
        connection.request("GET", "/_emulator/health")
        connection.getresponse().read()
        emu.stop()
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected, OSError)):
            connection.request("GET", "/_emulator/health")
            connection.getresponse().read()


def test_down_for_is_an_outage_of_that_length() -> None:
    with Emulator(api_keys={KEY: 1}) as emu, new_client(emu.url, None, timeout=2) as client:
        started = time.monotonic()
        emu.down_for(0.3)
        assert time.monotonic() - started < 0.2
        with pytest.raises(httpx.ConnectError):
            client.get("/_emulator/health")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                assert client.get("/_emulator/health").json() == {"ok": True}
                break
            except httpx.ConnectError:
                time.sleep(0.02)
        assert 0.25 <= time.monotonic() - started < 3


def test_stop_cancels_a_pending_restart() -> None:
    emu = Emulator(api_keys={KEY: 1}).start()
    emu.down_for(0.1)
    emu.stop()
    time.sleep(0.3)
    assert not emu.running


# --- control API -----------------------------------------------------------------------------------


def test_control_api_drives_the_emulator(emu: Emulator, client: httpx.Client) -> None:
    with new_client(emu.url, None) as control:
        assert control.get("/_emulator/health").json() == {"ok": True}
        fast_fail = {"queued_for": 0, "run_for": 0, "outcome": "failed"}
        assert control.post("/_emulator/runs/queue", json=[fast_fail, {"queued_for": 60}]).status_code == 200
        never = {"outcome": "never", "queued_for": 0}
        assert control.post("/_emulator/runs/queue", json=never).status_code == 200
        assert (
            control.post(
                "/_emulator/default-script",
                json={"environment": "staging", "outcome": "error", "queued_for": 0, "run_for": 0},
            ).status_code
            == 200
        )
        for _ in range(4):
            put(client, environment="staging")
        states = [r["state"] for r in control.get("/_emulator/runs").json()]
        assert states == ["ended", "queued", "started", "error"]
        finished = control.post("/_emulator/runs/3/finish", json={"state": "cancelled"})
        assert finished.json()["test_run"]["state"] == "cancelled"
        assert control.post("/_emulator/runs/99/finish", json={}).status_code == 404
        fault = {"method": "GET", "path": "/api/test-runs/*", "status": 503, "headers": {"Retry-After": "2"}}
        assert control.post("/_emulator/faults", json=fault).status_code == 200
        assert client.get("/api/test-runs/1").status_code == 503
        recorded = control.get("/_emulator/requests").json()
        assert [r["method"] for r in recorded] == ["PUT"] * 4 + ["GET"]
        assert control.post("/_emulator/faults", json={"nonsense": 1}).status_code == 400
        assert control.post("/_emulator/runs/queue", json={"outcome": "boom"}).status_code == 400
        assert control.post("/_emulator/runs/queue", content=b"{").status_code == 400
        assert control.get("/_emulator/nothing").status_code == 404
        assert control.get("/_emulator/reset").status_code == 405
        assert control.post("/_emulator/reset").json() == {"ok": True}
        assert control.get("/_emulator/runs").json() == [] and emu.requests == []


DEFAULT_SWITCHES = {
    "shape": "nested",
    "list_environment_id": False,
    "row_names": "title",
    "snooze_info_details": False,
    "snooze_counts": "live",
    "snoozed_failures_pass": True,
    "unknown_environment": "reject",
    "environments_endpoint": True,
    "analytics_endpoint": True,
    "test_cases_sync_error": False,
}


def test_switches_from_python(emu: Emulator) -> None:
    assert emu.switches == DEFAULT_SWITCHES
    changed = emu.set_switches(snooze_counts="frozen", list_environment_id=True)
    assert changed == {**DEFAULT_SWITCHES, "snooze_counts": "frozen", "list_environment_id": True}
    for bad in ({"nope": True}, {"list_environment_id": 1}, {"snooze_counts": "later"}, {"shape": "deep"}):
        with pytest.raises(ValueError):
            emu.set_switches(**bad, row_names="title_path")
    assert emu.switches["row_names"] == "title"  # a rejected change changes nothing
    emu.set_shape("flat")
    assert emu.switches["shape"] == "flat" == emu.shape
    emu.reset()
    assert emu.switches == DEFAULT_SWITCHES
    with Emulator(api_keys={KEY: 1}, shape="flat", switches={"analytics_endpoint": False}) as other:
        assert other.switches == {**DEFAULT_SWITCHES, "shape": "flat", "analytics_endpoint": False}
        other.set_switches(analytics_endpoint=True, shape="nested")
        other.reset()
        assert other.switches["analytics_endpoint"] is False and other.shape == "flat"
    with pytest.raises(ValueError, match="unknown switch"):
        Emulator(switches={"colour": "blue"})


def test_switches_from_the_control_api(emu: Emulator) -> None:
    with new_client(emu.url, None) as control:
        assert control.get("/_emulator/switches").json() == DEFAULT_SWITCHES
        answer = control.post("/_emulator/switches", json={"row_names": "title_path", "shape": "flat"})
        assert answer.json() == {
            "ok": True,
            "switches": {**DEFAULT_SWITCHES, "row_names": "title_path", "shape": "flat"},
        }
        assert emu.shape == "flat"
        for bad in ({"nope": 1}, {"snooze_info_details": "true"}, [], {"row_names": None}):
            response = control.post("/_emulator/switches", json=bad)
            assert response.status_code == 400 and response.json()["error"]["message"], bad
        assert control.delete("/_emulator/switches").status_code == 405
        assert control.post("/_emulator/reset").status_code == 200
        assert control.get("/_emulator/switches").json() == DEFAULT_SWITCHES


def test_control_api_down() -> None:
    with Emulator(api_keys={KEY: 1}) as emu, new_client(emu.url, None, timeout=2) as control:
        assert control.post("/_emulator/down", json={"seconds": 0.3}).json() == {"ok": True}
        with pytest.raises(httpx.ConnectError):
            control.get("/_emulator/health")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                assert control.get("/_emulator/health").status_code == 200
                return
            except httpx.ConnectError:
                time.sleep(0.02)
        raise AssertionError("the emulator did not come back")


# --- load and CLI ----------------------------------------------------------------------------------


def test_many_keep_alive_pollers(emu: Emulator, client: httpx.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    put(client)

    def poll(_: int) -> list[int]:
        with new_client(emu.url) as poller:
            return [poller.get("/api/test-runs/1").status_code for _ in range(10)]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = [code for batch in pool.map(poll, range(50)) for code in batch]
    assert codes == [200] * 500
    assert time.monotonic() - started < 5


def test_cli_rejects_a_bad_switch() -> None:
    for argument in ("colour=blue", "list_environment_id=yes", "novalue"):
        result = subprocess.run(
            [sys.executable, "-m", "airflow_provider_empirical.emulator", "--switch", argument],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 2 and "--switch" in result.stderr, (argument, result.stderr)


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_empirical.emulator",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--port-file",
            str(port_file),
            "--response-delay",
            "0.1",
            "--shape",
            "flat",
            "--switch",
            "list_environment_id=true",
            "--switch",
            "unknown_environment=error_run",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 10
        while not port_file.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}"
        with new_client(base, "cli-key", timeout=2) as client:
            started = time.monotonic()
            assert put(client).status_code == 200
            assert time.monotonic() - started >= 0.1
            assert client.get("/api/test-runs/1").json()["data"]["test_run"]["id"] == 1  # flat
            items = client.get("/api/test-runs").json()["data"]["test_runs"]["items"]
            assert items[0]["environment_id"] == 1
            assert put(client, environment="qa").status_code == 200  # the run errors instead
            assert client.get("/_emulator/switches").json()["unknown_environment"] == "error_run"
            assert (
                client.get("/api/test-runs/1", headers={"Authorization": "Bearer emulator-key"}).status_code
                == 401
            )
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=5)
        assert process.returncode == 0, err
        assert out.splitlines()[0] == f"Empirical emulator listening on {base}"
        assert err == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serves_https_with_a_given_certificate(tmp_path: Path) -> None:
    """The real API is https-only; the emulator can be too (the triggerer benchmark uses it)."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    with Emulator(api_keys={"tls-key-123": 1}, tls=(str(cert), str(key))) as emu:
        assert emu.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=context) as client:
            response = client.get(emu.url + "/api/test-runs", headers={"Authorization": "Bearer tls-key-123"})
        assert response.status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(emu.url + "/api/test-runs")  # not trusted without the certificate
