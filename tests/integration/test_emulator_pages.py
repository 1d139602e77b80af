"""Dashboard pages link tests can follow, and runs started outside Airflow (issue 25), over real HTTP."""

from __future__ import annotations

import html
from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.integration.test_emulator_support import (
    FAIL_FAST,
    OTHER_KEY,
    get_run,
    items_of,
    new_client,
    put,
    rows_of,
    run_id_of,
)


@pytest.fixture
def browser(emu: Emulator) -> Iterator[httpx.Client]:
    """No API key: dashboard pages need none in the emulator."""
    with new_client(emu.url, None) as anon:
        yield anon


# --- one test's page -----------------------------------------------------------------------------------


def test_one_tests_page(emu: Emulator, client: httpx.Client, browser: httpx.Client) -> None:
    emu.queue_runs(FAIL_FAST)
    run_id = run_id_of(put(client))
    failed = [r for r in rows_of(client, run_id) if r["status"] == "failed"]
    snoozed = emu.add_snooze([failed[0]["pw_test_id"]])
    page = browser.get(f"/demo/test-runs/{run_id}", params={"test_id": failed[0]["pw_test_id"]})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert f"<title>{failed[0]['name']}</title>" in page.text
    for text in (
        "failed",
        " \u203a ".join(failed[0]["nesting"]),
        "chromium",
        failed[0]["pw_test_id"],
        f"#{snoozed['id']}",
        f"/demo/test-runs/{run_id}",
    ):
        assert html.escape(text) in page.text, text
    passed = next(r for r in rows_of(client, run_id) if r["status"] == "passed")
    other = browser.get(f"/test-runs/{run_id}?test_id={passed['pw_test_id']}")  # without the slug too
    assert other.status_code == 200 and "passed" in other.text and "Snoozed by</th><td>-" in other.text
    missing = browser.get(
        f"/demo/test-runs/{run_id}", params={"test_id": "ffffffffffffffffffff-ffffffffffffffffffff"}
    )
    assert missing.status_code == 404
    assert (
        browser.get(f"/other/test-runs/{run_id}", params={"test_id": passed["pw_test_id"]}).status_code == 404
    )
    assert browser.get("/demo/test-runs/99", params={"test_id": passed["pw_test_id"]}).status_code == 404


def test_run_page_links_each_failed_test(emu: Emulator, client: httpx.Client, browser: httpx.Client) -> None:
    emu.queue_runs(
        RunScript(
            queued_for=0,
            run_for=0,
            total=24,
            failed_tests=["removes an item"],
            flaky_tests=["pays with card"],
        )
    )
    run_id = run_id_of(put(client))
    rows = {r["status"]: r for r in rows_of(client, run_id)}
    page = browser.get(f"/demo/test-runs/{run_id}").text
    assert html.escape(f"/demo/test-runs/{run_id}?test_id={rows['failed']['pw_test_id']}") in page
    assert rows["flaky"]["name"] not in page  # failed tests by default, like the dashboard's filter
    flaky = browser.get(f"/demo/test-runs/{run_id}", params={"status": "flaky"}).text
    assert "pays with card" in flaky and "removes an item" not in flaky
    assert f"/demo/test-runs/{run_id}/debug/html" in page


# --- the Playwright report -----------------------------------------------------------------------------


def test_debug_html_redirects_to_a_report(emu: Emulator, client: httpx.Client, browser: httpx.Client) -> None:
    emu.queue_runs(FAIL_FAST)
    run_id = run_id_of(put(client))
    redirect = browser.get(f"/demo/test-runs/{run_id}/debug/html")
    assert (
        redirect.status_code == 302 and redirect.headers["location"] == f"/reports/demo/{run_id}/index.html"
    )
    assert browser.get(f"/test-runs/{run_id}/debug/html").headers["location"] == redirect.headers["location"]
    report = browser.get(f"/demo/test-runs/{run_id}/debug/html", follow_redirects=True)
    assert report.status_code == 200 and str(report.url).endswith("/index.html")
    assert f"Playwright report: test run #{run_id}" in report.text
    assert report.text.count("<td>failed</td>") == 3 and report.text.count("<td>passed</td>") == 20
    assert html.escape("search/filters.spec.ts \u203a filters \u203a clears all filters") in report.text
    assert browser.get(f"/other/test-runs/{run_id}/debug/html").status_code == 404
    assert browser.get("/demo/test-runs/99/debug/html").status_code == 404
    assert browser.get(f"/reports/other/{run_id}/index.html").status_code == 404
    assert browser.get("/reports/demo/99/index.html").status_code == 404
    assert browser.post(f"/demo/test-runs/{run_id}/debug/html").status_code == 405


def test_snoozes_page(emu: Emulator, browser: httpx.Client) -> None:
    assert "No snoozes" in browser.get("/demo/snoozes").text
    emu.add_snooze(["83047e67835ec18eb0d0-450c922857f5f36c08fb"], description="login <flaky>")
    page = browser.get("/demo/snoozes")
    assert page.status_code == 200 and "login &lt;flaky&gt;" in page.text and "active" in page.text
    assert "login &lt;flaky&gt;" not in browser.get("/project-2/snoozes").text
    assert browser.get("/nobody/snoozes").status_code == 404


# --- runs started outside Airflow (issue 25) ------------------------------------------------------------


def test_another_team_triggers_a_run_and_it_is_finished_on_demand(
    emu: Emulator, client: httpx.Client
) -> None:
    emu.set_default_script(RunScript(queued_for=0, outcome="never"))
    with new_client(emu.url) as other_team:
        theirs = run_id_of(
            put(other_team, environment="staging", branch="release", github_actor="someone-else")
        )
    assert emu.run(theirs)["origin"] == "api" and emu.trigger_body(theirs)["github_actor"] == "someone-else"
    assert get_run(client, f"/api/test-runs/{theirs}")["state"] == "started"
    finished = emu.finish_run(theirs, "failed")
    assert (finished["state"], finished["failed_count"]) == ("ended", 3)
    assert [(i["id"], i["test_run_branch"], i["state"]) for i in items_of(client, environment_ids="2")] == [
        (theirs, "release", "ended")
    ]


def test_a_scheduled_run_starts_without_an_api_request(emu: Emulator, client: httpx.Client) -> None:
    emu.queue_runs(FAIL_FAST)  # meant for the next PUT: a scheduled run must not take it
    emu.set_environment_script("staging", RunScript(queued_for=0, outcome="never"))
    run = emu.start_run("staging", branch="main", build={"commit": "abc123", "url": "https://ci/9"})
    assert run["origin"] == "control" and run["state"] == "started"
    assert (run["test_run_branch"], run["commit"], run["build_url"], run["environment_id"]) == (
        "main",
        "abc123",
        "https://ci/9",
        2,
    )
    assert emu.requests == []
    assert emu.trigger_body(run["id"]) == {
        "environment": "staging",
        "branch": "main",
        "build": {"commit": "abc123", "url": "https://ci/9"},
    }
    ours = run_id_of(put(client))
    assert get_run(client, f"/api/test-runs/{ours}")["failed_count"] == 3  # the queued script went to the PUT
    assert emu.finish_run(run["id"], "passed")["state"] == "ended"
    item = items_of(client, environment_ids="2")[0]
    assert (item["id"], item["commit"], item["state"], item["failed_count"]) == (
        run["id"],
        "abc123",
        "ended",
        0,
    )
    scripted = emu.start_run(script=FAIL_FAST, metadata={"trigger": "schedule"}, project_id=2)
    assert (scripted["state"], scripted["failed_count"], scripted["metadata"]) == (
        "ended",
        3,
        {"trigger": "schedule"},
    )
    assert scripted["project"]["id"] == 2 and items_of(client, id=scripted["id"]) == []
    with new_client(emu.url, OTHER_KEY) as other:
        assert [i["id"] for i in items_of(other)] == [scripted["id"]]
    for bad in ({"environment": "qa"}, {"build": {"sha": "x"}}, {"metadata": {"a": [1]}}, {"project_id": 7}):
        with pytest.raises(ValueError):
            emu.start_run(**{"environment": "production", **bad})  # type: ignore[arg-type]


def test_control_api_starts_and_finishes_runs(emu: Emulator, client: httpx.Client) -> None:
    with new_client(emu.url, None) as control:
        started = control.post(
            "/_emulator/runs/start",
            json={
                "environment": "production",
                "branch": "nightly",
                "build": {"commit": "f00"},
                "script": {"queued_for": 0, "run_for": 60},
            },
        )
        assert started.status_code == 200, started.text
        run = started.json()["test_run"]
        assert (run["state"], run["origin"], run["commit"], run["test_run_branch"]) == (
            "started",
            "control",
            "f00",
            "nightly",
        )
        finished = control.post(
            f"/_emulator/runs/{run['id']}/finish", json={"state": "error", "error_code": "worker_interrupted"}
        )
        assert finished.json()["test_run"]["error_code"] == "worker_interrupted"
        for body, field in (
            ({}, "environment"),
            ({"environment": "qa"}, "environment"),
            ({"environment": "production", "script": {"outcome": "boom"}}, "outcome"),
            ({"environment": "production", "project_id": 9}, "project_id"),
            ([], "body"),
        ):
            bad = control.post("/_emulator/runs/start", json=body)
            assert bad.status_code == 400 and field in bad.json()["error"]["message"], bad.text
        assert control.get("/_emulator/runs/start").status_code == 405
    assert emu.count() == 0 and [r["id"] for r in emu.runs] == [run["id"]]
    assert get_run(client, f"/api/test-runs/{run['id']}")["state"] == "error"
