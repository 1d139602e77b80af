"""Test cases, environments and what the trigger does with them (issue 24), over real HTTP.

The catalogue's ids are the ids runs report as pw_test_id and the ids test_case_ids select.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.integration.test_emulator_support import (
    FAIL_FAST,
    FAST,
    LIST_ITEM_KEYS,
    OTHER_KEY,
    PW_ID,
    get_run,
    items_of,
    new_client,
    put,
    rows_of,
    run_id_of,
)

CASE_KEYS = {
    "id",
    "name",
    "file_path",
    "suites",
    "playwright_project",
    "tags",
    "created_at",
    "updated_at",
    "first_seen_commit_sha",
    "last_seen_commit_sha",
    "dependencies",
}
SERIAL_KEYS = {
    "group_id",
    "title_path",
    "file_path",
    "playwright_project",
    "dependency_order",
    "group_size",
    "depends_on",
}
ENV_KEYS = {
    "id",
    "project_id",
    "slug",
    "name",
    "playwright_projects",
    "platform",
    "is_default",
    "is_disabled",
    "created_at",
    "updated_at",
    "latest_build",
}
BUILD_KEYS = {
    "id",
    "project_id",
    "build_url",
    "commit",
    "commit_url",
    "version",
    "branch",
    "environment_id",
    "created_at",
}


def cases(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v2/test-cases", params={"per_page": 100, **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]["test_cases"]
    return found


def names(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["name"], c["playwright_project"]) for c in found]


# --- GET /api/v2/test-cases ----------------------------------------------------------------------------


def test_test_cases_answer_shape_and_pages(client: httpx.Client) -> None:
    response = client.get("/api/v2/test-cases")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data", "pagination"} and set(body["data"]) == {"test_cases", "sync_error"}
    assert body["data"]["sync_error"] is None
    assert body["pagination"] == {"page": 1, "per_page": 20, "total": 25, "total_pages": 2, "has_more": True}
    assert len(body["data"]["test_cases"]) == 20
    last = client.get("/api/v2/test-cases", params={"page": 2}).json()
    assert len(last["data"]["test_cases"]) == 5 and last["pagination"]["has_more"] is False
    everything = cases(client)
    assert len(everything) == 25 and len({c["id"] for c in everything}) == 25
    for case in everything:
        assert set(case) == CASE_KEYS and PW_ID.match(case["id"])
        assert case["name"] and case["file_path"].endswith(".spec.ts")
        assert isinstance(case["suites"], list) and isinstance(case["tags"], list)
        assert case["created_at"] == "2026-01-15T10:30:00Z" and len(case["last_seen_commit_sha"]) == 40
    beyond = client.get("/api/v2/test-cases", params={"page": 9}).json()
    assert beyond["data"]["test_cases"] == [] and beyond["pagination"]["has_more"] is False


def test_catalogue_is_realistic(client: httpx.Client) -> None:
    everything = cases(client)
    files = sorted({c["file_path"] for c in everything})
    assert files == [
        "checkout/cart.spec.ts",
        "checkout/flow.spec.ts",
        "checkout/payment.spec.ts",
        "login.spec.ts",
        "profile/settings.spec.ts",
        "search/filters.spec.ts",
        "search/results.spec.ts",
    ]
    projects = [c["playwright_project"] for c in everything]
    assert (projects.count("chromium"), projects.count("firefox")) == (19, 6)
    latest = {c["last_seen_commit_sha"] for c in everything if c["name"] != "invites a teammate"}
    assert len(latest) == 1  # every active case was seen at the latest sync
    [inactive] = [c for c in everything if c["last_seen_commit_sha"] not in latest]
    assert (inactive["name"], inactive["file_path"]) == ("invites a teammate", "profile/settings.spec.ts")
    nested = next(c for c in everything if c["name"] == "filters by price range")
    assert nested["suites"] == ["filters", "price"]
    assert next(c for c in everything if c["name"] == "signs in with email")["suites"] == []
    # the two projects' copies of a test are different Playwright tests with a shared file part
    login = [c["id"] for c in everything if c["name"] == "signs in with email"]
    assert len(login) == 2 and login[0] != login[1] and login[0][:20] == login[1][:20]


def test_serial_group_members_depend_on_each_other(client: httpx.Client) -> None:
    everything = cases(client)
    serial = [c for c in everything if c["dependencies"]["playwright_serial"] is not None]
    assert [c["name"] for c in serial] == [
        "fills the shipping address",
        "chooses a delivery slot",
        "places the order",
    ]
    groups = [c["dependencies"]["playwright_serial"] for c in serial]
    assert all(set(g) == SERIAL_KEYS for g in groups)
    assert len({g["group_id"] for g in groups}) == 1
    assert [(g["dependency_order"], g["group_size"]) for g in groups] == [(1, 3), (2, 3), (3, 3)]
    assert [g["depends_on"] for g in groups] == [[], [serial[0]["id"]], [serial[0]["id"], serial[1]["id"]]]
    assert all(
        (g["title_path"], g["file_path"], g["playwright_project"])
        == (["checkout flow"], "checkout/flow.spec.ts", "chromium")
        for g in groups
    )
    assert all(c["dependencies"] == {"playwright_serial": None} for c in everything if c not in serial)


def test_test_case_filters(emu: Emulator, client: httpx.Client) -> None:
    everything = cases(client)
    ids = [c["id"] for c in everything]
    picked = cases(client, ids=f"{ids[3]}, {ids[0]},deadbeef,")
    assert [c["id"] for c in picked] == [ids[0], ids[3]]  # catalogue order; unknown ids ignored
    unknown = [f"{n:020x}-{n:020x}" for n in range(100)]
    capped = cases(client, ids=",".join([*unknown, ids[0]]))
    assert capped == []  # "Capped at the first 100": the 101st id is not looked at
    assert len(cases(client, file_path="checkout/")) == 11
    assert names(cases(client, file_path="search/results")) == [
        ("shows only matching cards", "chromium"),
        ("paginates long results", "chromium"),
        ("shows only matching cards", "firefox"),
    ]
    assert cases(client, file_path="results") == []  # a prefix, not a substring
    assert names(cases(client, playwright_project="firefox")) == [
        ("pays with card", "firefox"),
        ("applies a discount code", "firefox"),
        ("signs in with email", "firefox"),
        ("rejects a wrong password", "firefox"),
        ("logs out everywhere", "firefox"),
        ("shows only matching cards", "firefox"),
    ]
    assert len(cases(client, tags="@smoke")) == 8
    assert len(cases(client, tags="@payments,@checkout")) == 8  # any of them
    assert names(cases(client, search="CARD", playwright_project="chromium")) == [
        ("pays with card", "chromium"),
        ("rejects an expired card", "chromium"),
        ("shows only matching cards", "chromium"),
    ]
    assert len(cases(client, search="filters.spec")) == 2  # file paths are searched too
    assert names(cases(client, is_active="false")) == [("invites a teammate", "chromium")]
    assert len(cases(client, is_active="true")) == 24
    old = cases(client, is_active="false")[0]["last_seen_commit_sha"]
    assert len(cases(client, last_seen_commit_sha=old)) == 1
    assert len(cases(client, first_seen_commit_sha=everything[0]["first_seen_commit_sha"])) == 25
    assert len(cases(client, file_path="login.spec.ts", tags="@auth", playwright_project="chromium")) == 3
    assert [c["id"] for c in emu.test_cases] == ids
    with new_client(emu.url, None) as control:
        assert [c["id"] for c in control.get("/_emulator/test-cases").json()] == ids


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"is_active": "yes"}, "is_active"),
        ({"per_page": 101}, "per_page"),
        ({"page": 0}, "page"),
        ({"per_page": "x"}, "per_page"),
    ],
)
def test_test_case_query_errors(client: httpx.Client, params: dict[str, Any], field: str) -> None:
    response = client.get("/api/v2/test-cases", params=params)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith(f"{field}: ")


def test_sync_error_switch(emu: Emulator, client: httpx.Client) -> None:
    emu.set_switches(test_cases_sync_error=True)
    body = client.get("/api/v2/test-cases").json()
    assert set(body["data"]["sync_error"]) == {"message", "occurred_at"}
    assert "sync" in body["data"]["sync_error"]["message"] and len(body["data"]["test_cases"]) == 20
    with new_client(emu.url, None) as anon:
        assert anon.get("/api/v2/test-cases").status_code == 401
    assert client.post("/api/v2/test-cases").status_code == 405


# --- runs and the catalogue ----------------------------------------------------------------------------


def test_run_rows_are_the_catalogue(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAST)
    run_id = run_id_of(put(client))
    active = cases(client, is_active="true")
    rows = rows_of(client, run_id)
    assert [r["pw_test_id"] for r in rows] == [c["id"] for c in active]
    for row, case in zip(rows, active, strict=True):
        assert row["name"] == case["name"] and row["test_project"] == case["playwright_project"]
        assert row["nesting"] == [case["file_path"], *case["suites"], case["name"]]
    emu.set_switches(row_names="title_path")
    nested = next(r for r in rows_of(client, run_id) if r["name"].endswith("filters by price range"))
    assert nested["name"] == "filters \u203a price \u203a filters by price range"


def test_trigger_with_test_case_ids_runs_exactly_those(emu: Emulator, client: httpx.Client) -> None:
    everything = cases(client)
    by_name = {(c["name"], c["playwright_project"]): c["id"] for c in everything}
    wanted = [
        by_name[("places the order", "chromium")],
        "ffffffffffffffffffff-ffffffffffffffffffff",  # unknown: ignored
        by_name[("signs in with email", "firefox")],
        by_name[("invites a teammate", "chromium")],  # inactive: no longer in the suite
    ]
    emu.queue_runs(
        FAST,
        FAIL_FAST,
        RunScript(queued_for=0, run_for=0, outcome="failed", failed_tests=["places the order"]),
    )
    passed = run_id_of(put(client, test_case_ids=wanted))
    run = get_run(client, f"/api/test-runs/{passed}")
    assert (run["state"], run["total_count"], run["success_count"]) == ("ended", 2, 2)
    assert run["test_case_ids"] == wanted  # echoed, unknown ones included
    expected = [by_name[("places the order", "chromium")], by_name[("signs in with email", "firefox")]]
    assert [r["pw_test_id"] for r in rows_of(client, passed)] == expected  # catalogue order
    cases_route = client.get(f"/api/v2/test-runs/{passed}/cases").json()["data"]
    assert [c["pw_test_id"] for c in cases_route] == expected
    failed = run_id_of(put(client, test_case_ids=wanted))
    assert [(r["pw_test_id"], r["status"]) for r in rows_of(client, failed)] == [
        (i, "failed") for i in expected
    ]
    named = run_id_of(put(client, test_case_ids=wanted))
    assert [r["status"] for r in rows_of(client, named)] == ["failed", "passed"]
    assert get_run(client, f"/api/test-runs/{named}")["failed_count"] == 1


def test_trigger_with_only_unknown_ids_errors(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAST)
    run_id = run_id_of(put(client, test_case_ids=["ffffffffffffffffffff-ffffffffffffffffffff", "nonsense"]))
    run = get_run(client, f"/api/test-runs/{run_id}")
    assert (run["state"], run["total_count"], run["error_code"]) == ("error", 0, "run_failed_with_error")
    assert rows_of(client, run_id) == []
    emu.queue_runs(FAST)
    everything = run_id_of(put(client, test_case_ids=[]))  # an empty list selects nothing: a full run
    assert get_run(client, f"/api/test-runs/{everything}")["total_count"] == 24


# --- environments --------------------------------------------------------------------------------------


def test_environments_list(emu: Emulator, client: httpx.Client) -> None:
    response = client.get("/api/environments/list")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"data"} and set(body["data"]) == {"environments"}
    envs = body["data"]["environments"]
    assert [(e["id"], e["slug"], e["name"], e["is_default"], e["is_disabled"]) for e in envs] == [
        (1, "production", "Production", True, False),
        (2, "staging", "Staging", False, False),
        (3, "development", "Development", False, False),
        (4, "legacy", "Legacy", False, True),
    ]
    for env in envs:
        assert set(env) == ENV_KEYS and env["project_id"] == 1 and env["platform"] == "web"
        assert env["latest_build"] is None and env["playwright_projects"]
    assert envs[0]["playwright_projects"] == ["chromium", "firefox"]
    enabled = client.get("/api/environments/list", params={"is_disabled": "false"}).json()["data"][
        "environments"
    ]
    assert [e["slug"] for e in enabled] == ["production", "staging", "development"]
    disabled = client.get("/api/environments/list", params={"is_disabled": "true"}).json()["data"][
        "environments"
    ]
    assert [e["slug"] for e in disabled] == ["legacy"]
    scoped = client.get("/api/environments/list", params={"project_id": 1, "project_repo_name": "demo-tests"})
    assert scoped.status_code == 200 and len(scoped.json()["data"]["environments"]) == 4
    slugged = client.get("/api/environments/list", params={"environment_slug": "staging"})
    assert len(slugged.json()["data"]["environments"]) == 4  # environment_slug is ignored
    assert client.get("/api/environments/list", params={"project_id": 2}).status_code == 403
    assert client.get("/api/environments/list", params={"project_repo_name": "other"}).status_code == 403
    bad = client.get("/api/environments/list", params={"is_disabled": "no"})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("is_disabled: ")
    with new_client(emu.url, OTHER_KEY) as other:
        theirs = other.get("/api/environments/list").json()["data"]["environments"]
        assert {e["project_id"] for e in theirs} == {2}
    with new_client(emu.url, None) as anon:
        assert anon.get("/api/environments/list").status_code == 401
        assert [e["slug"] for e in anon.get("/_emulator/environments").json()][:1] == ["production"]


def test_latest_build_follows_runs(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default_script(FAST)
    put(
        client,
        environment="staging",
        build={"commit": "aaa111", "url": "https://ci/1", "branch": "main", "version": "1.0"},
    )
    second = run_id_of(
        put(client, environment="staging", build={"commit": "bbb222", "commit_url": "https://git/bbb222"})
    )
    put(client, environment="staging", branch="feature")  # no build: does not change latest_build
    envs = {e["slug"]: e for e in client.get("/api/environments/list").json()["data"]["environments"]}
    build = envs["staging"]["latest_build"]
    assert set(build) == BUILD_KEYS
    assert {k: build[k] for k in BUILD_KEYS - {"created_at"}} == {
        "id": second,
        "project_id": 1,
        "build_url": None,
        "commit": "bbb222",
        "commit_url": "https://git/bbb222",
        "version": None,
        "branch": None,
        "environment_id": 2,
    }
    assert build["created_at"] == get_run(client, f"/api/test-runs/{second}")["created_at"]
    assert envs["production"]["latest_build"] is None


def test_environments_endpoint_can_be_absent(emu: Emulator, client: httpx.Client) -> None:
    emu.set_switches(environments_endpoint=False)
    missing = client.get("/api/environments/list")
    assert (
        missing.status_code == 404
        and missing.json()["error"]["message"] == "not found: /api/environments/list"
    )
    with new_client(emu.url, None) as control:
        answer = control.post("/_emulator/switches", json={"environments_endpoint": True})
        assert answer.status_code == 200 and answer.json()["switches"]["environments_endpoint"] is True
    assert client.get("/api/environments/list").status_code == 200


# --- unknown environments on the trigger ---------------------------------------------------------------


def test_unknown_or_disabled_environment_is_rejected_by_default(emu: Emulator, client: httpx.Client) -> None:
    unknown = put(client, environment="qa")
    assert unknown.status_code == 400
    assert unknown.json()["error"]["message"] == (
        "environment: unknown environment 'qa' (available: production, staging, development)"
    )
    disabled = put(client, environment="legacy")
    assert disabled.status_code == 400
    assert disabled.json()["error"]["message"] == (
        "environment: disabled environment 'legacy' (available: production, staging, development)"
    )
    assert emu.runs == []


def test_unknown_environment_errors_the_run_behind_the_switch(emu: Emulator, client: httpx.Client) -> None:
    emu.set_switches(unknown_environment="error_run")
    emu.queue_runs(RunScript(queued_for=0, run_for=0.05), FAST)
    run_id = run_id_of(put(client, environment="qa"))
    assert get_run(client, f"/api/test-runs/{run_id}")["state"] == "started"
    emu.finish_run(run_id, "error")
    run = get_run(client, f"/api/test-runs/{run_id}")
    assert (run["state"], run["total_count"], run["error_code"]) == ("error", 0, "run_failed_with_error")
    assert (run["environment_slug"], run["environment_name"], run["environment_id"]) == ("qa", "qa", None)
    legacy = run_id_of(put(client, environment="legacy"))
    run = get_run(client, f"/api/test-runs/{legacy}")
    assert (run["state"], run["environment_id"], run["environment_name"]) == ("error", 4, "Legacy")
    assert items_of(client, environment_ids="4")[0]["id"] == legacy
    assert [i["id"] for i in items_of(client, result="failed")] == [legacy, run_id]


# --- the run list, for "reuse a run that already tested this commit" ------------------------------------


def test_run_list_finds_a_passed_run_of_a_commit(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAST, FAIL_FAST, FAST, FAST, RunScript(queued_for=60))
    put(client, environment="staging", build={"commit": "c1", "branch": "main"})  # 1 passed
    put(client, environment="staging", build={"commit": "c2", "branch": "main"})  # 2 failed
    put(client, environment="production", build={"commit": "c2", "branch": "main"})  # 3 passed
    put(client, environment="staging", build={"commit": "c2", "branch": "main"})  # 4 passed
    put(client, environment="staging", build={"commit": "c3", "branch": "main"})  # 5 queued
    emu.set_switches(list_environment_id=True)
    found = items_of(client, environment_ids="2", state="ended", result="passed")
    assert [(i["id"], i["commit"], i["environment_slug"], i["environment_id"]) for i in found] == [
        (4, "c2", "staging", 2),
        (1, "c1", "staging", 2),
    ]
    assert all(set(i) == LIST_ITEM_KEYS | {"environment_id"} for i in found)
    stamps = [i["created_at"] for i in items_of(client)]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    assert [i["id"] for i in items_of(client, environment_ids="2,1", result="failed")] == [2]
    assert [i["id"] for i in items_of(client, environment_ids="2", state="queued")] == [5]
