"""Snoozes in the emulator (issue 23): the Snoozes endpoints, snooze_info on per-test rows,
failed_count_after_snoozing, scripted snoozed / flaky runs, and the switches around them.

Real HTTP to a real emulator on loopback; every count and shape is asserted exactly.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.integration.test_emulator_support import (
    FAIL_FAST,
    ISO_MS_Z,
    LIST_ITEM_KEYS,
    OTHER_KEY,
    get_run,
    items_of,
    new_client,
    put,
    rows_of,
    run_id_of,
)

SNOOZE_KEYS = {
    "id",
    "test_ids",
    "snooze_until",
    "description",
    "created_from_test_run_id",
    "created_by",
    "created_at",
    "updated_at",
    "scoped_to_environment_id",
}


def case_id(emu: Emulator, title: str, project: str = "chromium") -> str:
    """The Playwright id of a catalogue test case."""
    found = [c["id"] for c in emu.test_cases if c["name"] == title and c["playwright_project"] == project]
    assert len(found) == 1, (title, project)
    return found[0]


def later(seconds: float = 3600) -> str:
    stamp = datetime.fromtimestamp(time.time() + seconds, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def snooze(client: httpx.Client, test_ids: list[str], **body: Any) -> dict[str, Any]:
    response = client.post("/api/snoozes", json={"test_ids": test_ids, "snooze_until": later(), **body})
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()["data"]["snooze"]
    return created


def failed_rows(client: httpx.Client, run_id: int) -> list[dict[str, Any]]:
    return [r for r in rows_of(client, run_id) if r["status"] == "failed"]


# the tests the default "failed" script fails (the catalogue's 21st to 23rd)
FAILING = ("clears all filters", "shows only matching cards", "paginates long results")


# --- scripted scenarios --------------------------------------------------------------------------------


def test_all_failures_snoozed_run_passes(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(
        RunScript(
            queued_for=0,
            run_for=0,
            outcome="failed",
            total=24,  # the whole catalogue runs; these two fail
            failed_tests=["signs in with email", "pays with card"],
            snoozed_tests=True,
        )
    )
    run_id = run_id_of(put(client))
    run = get_run(client, f"/api/test-runs/{run_id}")
    assert (run["state"], run["total_count"], run["failed_count"], run["failed_count_after_snoozing"]) == (
        "ended",
        24,
        2,
        0,
    )
    ids = [case_id(emu, "signs in with email"), case_id(emu, "pays with card")]
    [created] = emu.snoozes
    assert created["test_ids"] == ids and created["origin"] == "script" and created["active"] is True
    assert created["scoped_to_environment_id"] is None and created["body"] is None
    rows = failed_rows(client, run_id)
    assert [(r["pw_test_id"], r["snooze_info"]) for r in rows] == [
        (i, [{"snooze_id": created["id"]}]) for i in ids
    ]
    assert all(r["snooze_info"] == [] for r in rows_of(client, run_id) if r["status"] != "failed")
    assert [i["id"] for i in items_of(client, result="passed")] == [run_id]
    emu.set_switches(snoozed_failures_pass=False)
    assert [i["id"] for i in items_of(client, result="failed")] == [run_id]
    assert items_of(client, result="passed") == []


def test_partly_snoozed_run_still_fails(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(
        RunScript(
            queued_for=0,
            run_for=0,
            outcome="failed",
            failed_tests=["signs in with email", "pays with card", "removes an item"],
            snoozed_tests=["pays with card"],
        )
    )
    run_id = run_id_of(put(client))
    run = get_run(client, f"/api/test-runs/{run_id}")
    assert (run["failed_count"], run["failed_count_after_snoozing"]) == (3, 2)
    snoozed = {r["name"]: [s["snooze_id"] for s in r["snooze_info"]] for r in failed_rows(client, run_id)}
    assert snoozed == {"signs in with email": [], "pays with card": [1], "removes an item": []}
    assert [i["id"] for i in items_of(client, result="failed")] == [run_id]
    item = items_of(client)[0]
    assert (item["failed_count"], item["failed_count_after_snoozing"]) == (3, 2)


def test_flaky_run_passes_with_flaky_rows(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(
        RunScript(
            queued_for=0, run_for=0, total=24, flaky_tests=["keeps items after reload", "updates the avatar"]
        )
    )
    run_id = run_id_of(put(client))
    run = get_run(client, f"/api/test-runs/{run_id}")
    counts = [run[f"{k}_count"] for k in ("total", "success", "failed", "flaky", "skipped")]
    assert counts == [24, 22, 0, 2, 0] and run["failed_count_after_snoozing"] == 0
    flaky = [
        (r["name"], r["slug"] is not None, r["snooze_info"])
        for r in rows_of(client, run_id)
        if r["status"] == "flaky"
    ]
    assert flaky == [("keeps items after reload", True, []), ("updates the avatar", True, [])]
    assert [i["id"] for i in items_of(client, result="passed")] == [run_id]


def test_scripted_snoozes_are_validated() -> None:
    for bad in (
        {"snoozed_tests": ["a"]},  # names failures, but there are no failed_tests
        {"failed_tests": ["a"], "snoozed_tests": ["b"]},
        {"failed_tests": ["a"], "flaky_tests": ["a"]},
        {"failed_tests": ["a"], "snoozed_tests": "a"},
        {"tests": ["a"], "flaky_tests": ["b"]},
        {"flaky_tests": ["a"], "flaky": 2},
        {"failed_tests": ["signs in with email", "83047e67835ec18eb0d0-450c922857f5f36c08fb"]},  # same test
    ):
        with pytest.raises(ValueError):
            RunScript(**bad)
    script = RunScript(failed_tests=["a", "b"], flaky_tests=["c"], snoozed_tests=["b"])
    assert RunScript.from_dict(script.to_dict()) == script
    assert script.counts() == {"total": 3, "success": 0, "failed": 2, "skipped": 0, "flaky": 1}


def test_snoozed_script_through_the_control_api(emu: Emulator, client: httpx.Client) -> None:
    with new_client(emu.url, None) as control:
        script = {
            "queued_for": 0,
            "run_for": 0,
            "outcome": "failed",
            "failed_tests": ["a"],
            "snoozed_tests": True,
        }
        assert control.post("/_emulator/runs/queue", json=script).status_code == 200
        bad = control.post("/_emulator/runs/queue", json={"snoozed_tests": ["a"]})
        assert bad.status_code == 400 and "snoozed_tests" in bad.json()["error"]["message"]
    run_id = run_id_of(put(client))
    assert get_run(client, f"/api/test-runs/{run_id}")["failed_count_after_snoozing"] == 0


# --- coverage of later runs ----------------------------------------------------------------------------


def test_a_snooze_covers_later_failures_of_its_tests(emu: Emulator, client: httpx.Client) -> None:
    target = case_id(emu, FAILING[1])
    created = snooze(client, [target], description="known flaky search")
    emu.set_default_script(FAIL_FAST)
    run_id = run_id_of(put(client))
    run = get_run(client, f"/api/test-runs/{run_id}")
    assert (run["failed_count"], run["failed_count_after_snoozing"]) == (3, 2)
    info = {r["pw_test_id"]: r["snooze_info"] for r in failed_rows(client, run_id)}
    assert info == {
        case_id(emu, FAILING[0]): [],
        target: [{"snooze_id": created["id"]}],
        case_id(emu, FAILING[2]): [],
    }
    # the firefox twin of the same test title is another Playwright test: not covered
    assert case_id(emu, FAILING[1], "firefox") not in info


def test_environment_scope(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default_script(FAIL_FAST)
    ids = [case_id(emu, title) for title in FAILING]
    snooze(client, ids, scoped_to_environment_id=2)  # staging only
    production = run_id_of(put(client))
    staging = run_id_of(put(client, environment="staging"))
    assert get_run(client, f"/api/test-runs/{production}")["failed_count_after_snoozing"] == 3
    assert all(r["snooze_info"] == [] for r in failed_rows(client, production))
    assert get_run(client, f"/api/test-runs/{staging}")["failed_count_after_snoozing"] == 0
    assert all(r["snooze_info"] == [{"snooze_id": 1}] for r in failed_rows(client, staging))
    assert [i["id"] for i in items_of(client, result="passed")] == [staging]


def test_expiry_live_by_default(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default_script(FAIL_FAST)
    run_id = run_id_of(put(client))
    assert get_run(client, f"/api/test-runs/{run_id}")["failed_count_after_snoozing"] == 3
    created = snooze(client, [case_id(emu, title) for title in FAILING])  # after the run ended
    run = get_run(client, f"/api/test-runs/{run_id}")
    assert (run["failed_count"], run["failed_count_after_snoozing"]) == (3, 0)
    assert [r["snooze_info"] for r in failed_rows(client, run_id)] == [[{"snooze_id": created["id"]}]] * 3
    expired = client.patch(f"/api/snoozes/{created['id']}", json={"expire_now": True})
    assert expired.status_code == 200
    assert get_run(client, f"/api/test-runs/{run_id}")["failed_count_after_snoozing"] == 3
    assert [r["snooze_info"] for r in failed_rows(client, run_id)] == [[]] * 3


def test_frozen_counts_keep_what_held_when_the_run_ended(emu: Emulator, client: httpx.Client) -> None:
    emu.set_switches(snooze_counts="frozen")
    emu.set_default_script(FAIL_FAST)
    ids = [case_id(emu, title) for title in FAILING]
    before = snooze(client, ids[:1])  # exists when the next run ends
    run_id = run_id_of(put(client))
    time.sleep(0.01)
    after = snooze(client, ids[1:])  # created once the run has ended
    run = get_run(client, f"/api/test-runs/{run_id}")
    assert (run["failed_count"], run["failed_count_after_snoozing"]) == (3, 2)
    # snooze_info stays live: it shows both snoozes
    assert [r["snooze_info"] for r in failed_rows(client, run_id)] == [
        [{"snooze_id": before["id"]}],
        [{"snooze_id": after["id"]}],
        [{"snooze_id": after["id"]}],
    ]
    emu.expire_snooze(before["id"])
    assert get_run(client, f"/api/test-runs/{run_id}")["failed_count_after_snoozing"] == 2  # still frozen
    assert failed_rows(client, run_id)[0]["snooze_info"] == []
    emu.set_switches(snooze_counts="live")
    assert get_run(client, f"/api/test-runs/{run_id}")["failed_count_after_snoozing"] == 1


def test_snooze_info_details_switch(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default_script(FAIL_FAST)
    until = later(7200)
    created = snooze(client, [case_id(emu, FAILING[0])], snooze_until=until, description="ticket QA-12")
    run_id = run_id_of(put(client))
    assert failed_rows(client, run_id)[0]["snooze_info"] == [{"snooze_id": created["id"]}]
    emu.set_switches(snooze_info_details=True)
    assert failed_rows(client, run_id)[0]["snooze_info"] == [
        {"snooze_id": created["id"], "snooze_until": until, "description": "ticket QA-12"}
    ]


def test_list_items_carry_environment_id_only_behind_the_switch(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default_script(FAIL_FAST)
    put(client, environment="staging")
    assert set(items_of(client)[0]) == LIST_ITEM_KEYS
    emu.set_switches(list_environment_id=True)
    item = items_of(client)[0]
    assert set(item) == LIST_ITEM_KEYS | {"environment_id"} and item["environment_id"] == 2
    emu.reset()
    put(client)
    assert "environment_id" not in items_of(client)[0]  # reset restores the default
    with (
        Emulator(api_keys={"k": 1}, switches={"list_environment_id": True}) as other,
        new_client(other.url, "k") as c,
    ):
        put(c)
        assert items_of(c)[0]["environment_id"] == 1


# --- the Snoozes endpoints -----------------------------------------------------------------------------


def test_create_answers_the_snooze(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAIL_FAST)
    run_id = run_id_of(put(client))
    ids = [case_id(emu, "pays with card"), case_id(emu, "pays with card", "firefox")]
    until = later()
    body = {
        "test_ids": ids,
        "snooze_until": until,
        "description": "payment provider outage",
        "created_by": "octo@example.com",
        "scoped_to_environment_id": 1,
        "created_from_test_run_id": run_id,
        "some_future_field": True,  # unknown fields are ignored
    }
    started = time.time()
    response = client.post("/api/snoozes", json=body)
    assert response.status_code == 200, response.text
    created = response.json()["data"]["snooze"]
    assert set(response.json()) == {"data"} and set(created) == SNOOZE_KEYS
    stamps = (created.pop("created_at"), created.pop("updated_at"))
    assert created == {
        "id": 1,
        "test_ids": ids,
        "snooze_until": until,
        "description": "payment provider outage",
        "created_from_test_run_id": run_id,
        "created_by": "octo@example.com",
        "scoped_to_environment_id": 1,
    }
    assert stamps[0] == stamps[1] and ISO_MS_Z.match(stamps[0]) and abs(epoch(stamps[0]) - started) < 5
    assert emu.snooze_body(1) == body
    [inspected] = emu.snoozes
    assert (inspected["project_id"], inspected["active"], inspected["origin"]) == (1, True, "api")
    minimal = snooze(client, [ids[0]])
    assert (minimal["id"], minimal["description"], minimal["created_by"]) == (2, None, None)
    assert (minimal["scoped_to_environment_id"], minimal["created_from_test_run_id"]) == (None, None)
    assert client.get("/api/snoozes/1").json() == {
        "data": {"snooze": {**created, "created_at": stamps[0], "updated_at": stamps[1]}}
    }


PW = "83047e67835ec18eb0d0-450c922857f5f36c08fb"
GONE = object()  # marks a required field left out
BAD_SNOOZES: list[tuple[Any, str]] = [
    ([], "body"),
    ({"test_ids": GONE}, "test_ids"),
    ({"snooze_until": GONE}, "snooze_until"),
    ({"test_ids": PW}, "test_ids"),
    ({"test_ids": []}, "test_ids"),
    ({"test_ids": ["login works"]}, "test_ids[0]"),
    ({"test_ids": [PW, PW.upper()]}, "test_ids[1]"),
    ({"test_ids": [PW, PW]}, "test_ids[1]"),
    ({"snooze_until": "tomorrow"}, "snooze_until"),
    ({"snooze_until": "2099-01-01T00:00:00"}, "snooze_until"),  # no timezone
    ({"snooze_until": "2099-02-30T00:00:00Z"}, "snooze_until"),  # no such day
    ({"snooze_until": "2020-01-01T00:00:00.000Z"}, "snooze_until"),  # past
    ({"snooze_until": 4102444800}, "snooze_until"),
    ({"description": 5}, "description"),
    ({"created_by": ["me"]}, "created_by"),
    ({"scoped_to_environment_id": "1"}, "scoped_to_environment_id"),
    ({"scoped_to_environment_id": 0}, "scoped_to_environment_id"),
    ({"scoped_to_environment_id": 9}, "scoped_to_environment_id"),  # no such environment
    ({"created_from_test_run_id": 99}, "created_from_test_run_id"),  # no such run
    ({"created_from_test_run_id": True}, "created_from_test_run_id"),
    ({"project_id": 2}, "project_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_SNOOZES)
def test_create_validation_names_the_field(
    emu: Emulator, client: httpx.Client, body: Any, field: str
) -> None:
    if isinstance(body, dict):
        merged = {"test_ids": [PW], "snooze_until": later(), **body}
        body = {key: value for key, value in merged.items() if value is not GONE}
    response = client.post("/api/snoozes", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(f"{field}: ")
    assert emu.snoozes == []


def test_create_refuses_another_projects_run_and_bad_json(emu: Emulator, client: httpx.Client) -> None:
    with new_client(emu.url, OTHER_KEY) as other:
        theirs = run_id_of(put(other))
        assert client.post("/api/snoozes", content=b"{").status_code == 400
        mine = client.post(
            "/api/snoozes",
            json={"test_ids": [PW], "snooze_until": later(), "created_from_test_run_id": theirs},
        )
        assert mine.status_code == 400
        assert mine.json()["error"]["message"].startswith("created_from_test_run_id: ")
        their_snooze = other.post(
            "/api/snoozes", json={"test_ids": [PW], "snooze_until": later(), "project_id": 2}
        )
        assert their_snooze.status_code == 200
        assert client.get(f"/api/snoozes/{their_snooze.json()['data']['snooze']['id']}").status_code == 404
        assert client.get("/api/snoozes").json()["data"]["snoozes"] == []
        assert len(other.get("/api/snoozes").json()["data"]["snoozes"]) == 1
    with new_client(emu.url, None) as anon:
        assert anon.get("/api/snoozes").status_code == 401
        assert anon.post("/api/snoozes", json={}).status_code == 401
        assert anon.patch("/api/snoozes/1", json={}).status_code == 401
    assert client.delete("/api/snoozes/1").status_code == 405
    assert client.put("/api/snoozes", json={}).status_code == 405


def test_list_filters_status_environment_and_pages(emu: Emulator, client: httpx.Client) -> None:
    first = snooze(client, [PW])
    second = snooze(client, [PW], scoped_to_environment_id=2)
    third = snooze(client, [PW], scoped_to_environment_id=2)
    emu.expire_snooze(third["id"])

    def ids(**params: Any) -> list[int]:
        response = client.get("/api/snoozes", params=params)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["data"]["snoozes"]]

    assert ids() == [second["id"], first["id"]]  # active by default, newest first
    assert ids(status="active") == [2, 1] and ids(status="expired") == [3] and ids(status="all") == [3, 2, 1]
    assert ids(environment_id=2) == [2] and ids(environment_id=2, status="all") == [3, 2]
    assert ids(environment_id=1) == []  # unscoped snoozes are not "scoped to" environment 1
    body = client.get("/api/snoozes", params={"status": "all", "per_page": 2, "page": 2}).json()
    assert [s["id"] for s in body["data"]["snoozes"]] == [1]
    assert body["pagination"] == {"page": 2, "per_page": 2, "total": 3, "total_pages": 2}
    assert set(body["data"]["snoozes"][0]) == SNOOZE_KEYS
    for params, field in (
        ({"status": "gone"}, "status"),
        ({"per_page": 101}, "per_page"),
        ({"page": 0}, "page"),
        ({"environment_id": "x"}, "environment_id"),
    ):
        bad = client.get("/api/snoozes", params=params)
        assert bad.status_code == 400 and bad.json()["error"]["message"].startswith(f"{field}: ")
    for path in ("/api/snoozes/9", "/api/snoozes/x", "/api/snoozes/-1"):
        assert client.get(path).status_code == 404


def test_patch_edits_and_expires(emu: Emulator, client: httpx.Client) -> None:
    created = snooze(client, [PW], description="first")
    time.sleep(0.01)
    other = "970126abd710d2de09ab-521073f56ce55f937876"
    until = later(86400)
    response = client.patch(
        "/api/snoozes/1",
        json={
            "snooze_until": until,
            "description": "second",
            "scoped_to_environment_id": 3,
            "test_ids": [other],
        },
    )
    assert response.status_code == 200, response.text
    edited = response.json()["data"]["snooze"]
    assert (edited["snooze_until"], edited["description"], edited["scoped_to_environment_id"]) == (
        until,
        "second",
        3,
    )
    assert edited["test_ids"] == [other] and edited["created_at"] == created["created_at"]
    assert epoch(edited["updated_at"]) > epoch(created["updated_at"])
    older_name = client.patch("/api/snoozes/1", json={"environment_id": None})  # the older variant's name
    assert older_name.json()["data"]["snooze"]["scoped_to_environment_id"] is None
    started = time.time()
    expired = client.patch("/api/snoozes/1", json={"expire_now": True}).json()["data"]["snooze"]
    assert abs(epoch(expired["snooze_until"]) - started) < 2
    assert client.get("/api/snoozes").json()["data"]["snoozes"] == []
    assert [
        s["id"] for s in client.get("/api/snoozes", params={"status": "expired"}).json()["data"]["snoozes"]
    ] == [1]
    revived = client.patch("/api/snoozes/1", json={"snooze_until": later()})
    assert revived.status_code == 200 and emu.snoozes[0]["active"] is True


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({}, "body", 400),
        ({"unknown": 1}, "body", 400),
        ({"expire_now": False}, "body", 400),
        ({"expire_now": "yes"}, "expire_now", 400),
        ({"expire_now": True, "snooze_until": "2099-01-01T00:00:00.000Z"}, "expire_now", 400),
        ({"snooze_until": "2020-01-01T00:00:00.000Z"}, "snooze_until", 400),
        ({"scoped_to_environment_id": 1, "environment_id": 1}, "environment_id", 400),
        ({"scoped_to_environment_id": 8}, "scoped_to_environment_id", 400),
        ({"test_ids": []}, "test_ids", 400),
        ({"description": 1}, "description", 400),
        ({"project_id": 2, "description": "x"}, "project_id", 400),
    ],
)
def test_patch_validation(
    emu: Emulator, client: httpx.Client, body: dict[str, Any], field: str, status: int
) -> None:
    created = snooze(client, [PW], description="kept")
    response = client.patch(f"/api/snoozes/{created['id']}", json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"].startswith(f"{field}: ")
    assert client.get(f"/api/snoozes/{created['id']}").json()["data"]["snooze"] == created


def test_patch_of_unknown_snooze_is_404(emu: Emulator, client: httpx.Client) -> None:
    assert client.patch("/api/snoozes/5", json={"expire_now": True}).status_code == 404
    assert client.patch("/api/snoozes/abc", json={"expire_now": True}).status_code == 404
    assert client.patch("/api/snoozes/5", content=b"{").status_code == 400


# --- control API and Python helpers --------------------------------------------------------------------


def test_control_api_creates_and_lists_snoozes(emu: Emulator, client: httpx.Client) -> None:
    with new_client(emu.url, None) as control:
        started = time.time()
        answer = control.post("/_emulator/snoozes", json={"test_ids": [PW], "description": "by hand"})
        assert answer.status_code == 200, answer.text
        created = answer.json()["snooze"]
        assert answer.json()["ok"] is True and set(created) == SNOOZE_KEYS
        assert 7 * 86400 - 5 < epoch(created["snooze_until"]) - started < 7 * 86400 + 5  # default: a week
        other = control.post("/_emulator/snoozes", json={"test_ids": [PW], "project_id": 2})
        assert other.status_code == 200
        listed = control.get("/_emulator/snoozes").json()
        assert [(s["id"], s["project_id"], s["origin"], s["active"]) for s in listed] == [
            (1, 1, "control", True),
            (2, 2, "control", True),
        ]
        assert listed[0]["body"] == {
            "test_ids": [PW],
            "description": "by hand",
            "snooze_until": created["snooze_until"],
        }
        for bad, field in (
            ({"test_ids": ["x"]}, "test_ids[0]"),
            ({"test_ids": [PW], "project_id": 7}, "project_id"),
        ):
            response = control.post("/_emulator/snoozes", json=bad)
            assert response.status_code == 400 and response.json()["error"]["message"].startswith(
                f"{field}: "
            )
    assert emu.count() == 0  # control calls are not API requests
    assert [s["id"] for s in client.get("/api/snoozes").json()["data"]["snoozes"]] == [1]


def test_python_helpers(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default_script(FAIL_FAST)
    run_id = run_id_of(put(client))
    target = case_id(emu, FAILING[0])
    created = emu.add_snooze([target], time.time() + 600, description="py", created_from_test_run_id=run_id)
    assert created["created_from_test_run_id"] == run_id and created["description"] == "py"
    assert get_run(client, f"/api/test-runs/{run_id}")["failed_count_after_snoozing"] == 2
    edited = emu.update_snooze(created["id"], description="edited", scoped_to_environment_id=2)
    assert edited["description"] == "edited" and edited["scoped_to_environment_id"] == 2
    assert get_run(client, f"/api/test-runs/{run_id}")["failed_count_after_snoozing"] == 3  # production run
    assert emu.expire_snooze(created["id"])["id"] == created["id"] and emu.snoozes[0]["active"] is False
    with pytest.raises(ValueError, match=r"^test_ids"):
        emu.add_snooze(["nope"])
    with pytest.raises(ValueError, match=r"^snooze_until"):
        emu.add_snooze([target], datetime(2020, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(KeyError):
        emu.expire_snooze(42)
    with pytest.raises(KeyError):
        emu.snooze_body(42)
    assert emu.count("POST", "/api/snoozes") == 0
    emu.reset()
    assert emu.snoozes == []
