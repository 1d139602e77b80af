"""The UI plugin's pure parts: what a page shows of a run, the run lookup, escaping, caches, versions.

No HTTP, no database: runs are parsed from answers built here, with `api.test_runs` (the same
parser as the hook), and judged with `api.verdict`.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any

import pytest

from airflow_provider_empirical.api.test_runs import TestRun, parse_test_run
from airflow_provider_empirical.api.verdict import Policy
from airflow_provider_empirical.plugins import app, lookup, pages, views
from airflow_provider_empirical.plugins.empirical import (
    PROJECT_VIEW,
    TASK_VIEW,
    EmpiricalPlugin,
    views_supported,
)

PW = "0123456789abcdef0123-{:020x}"


def _row(name: str, status: str, index: int, snooze: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "status": status,
        "pw_test_id": PW.format(index),
        "nesting": [f"{name.split()[0]}.spec.ts", name],
        "test_project": "chromium",
        "snooze_info": snooze or [],
    }


def _run(rows: list[dict[str, Any]], state: str = "ended", **fields: Any) -> TestRun:
    failed = sum(row["status"] == "failed" for row in rows)
    snoozed = sum(row["status"] == "failed" and bool(row["snooze_info"]) for row in rows)
    flaky = sum(row["status"] == "flaky" for row in rows)
    run = {
        "id": 7,
        "state": state,
        "total_count": len(rows),
        "success_count": len(rows) - failed - flaky,
        "failed_count": failed,
        "failed_count_after_snoozing": failed - snoozed,
        "skipped_count": 0,
        "flaky_count": flaky,
        "duration": 125_000,
        "environment_slug": "production",
        "commit": "3f2c1ab",
        "build_url": "https://ci.example/1",
        **fields,
    }
    return parse_test_run({"data": {"test_run": {"testRun": run, "flattenedSummaryDetails": rows}}})


ROWS = [
    _row("login works", "failed", 1),
    _row(
        "cart keeps items",
        "failed",
        2,
        [{"snooze_id": 4, "snooze_until": "2026-12-24", "description": "flaky CDN"}],
    ),
    _row("search pages", "flaky", 3),
    _row("profile saves", "passed", 4),
]
URL = "https://dash.example/demo/test-runs/7"


def test_task_data_splits_counting_snoozed_and_flaky_tests() -> None:
    data = views.task_run_data(
        _run(ROWS), Policy(), run_url=URL, snoozes_url="https://dash.example/demo/snoozes"
    )
    assert [t["name"] for t in data["tests"]["failed"]] == ["login works"]
    assert [t["name"] for t in data["tests"]["snoozed"]] == ["cart keeps items"]
    assert data["tests"]["snoozed"][0]["snooze"] == {
        "id": 4,
        "until": "2026-12-24",
        "description": "flaky CDN",
    }
    assert [t["name"] for t in data["tests"]["flaky"]] == ["search pages"]
    assert data["counts"]["failed"] == 2 and data["counts"]["failed_counting"] == 1
    assert data["counts"]["snoozed"] == 1
    assert data["verdict"]["outcome"] == "failed" and not data["verdict"]["passes"]
    assert data["links"]["report"] == URL + "/debug/html"
    assert data["test_run"]["duration"] == "2m05s"
    assert data["listed"] == {"named": True, "complete": True, "failed_rows": 2}


def test_the_verdict_is_the_task_policy_s() -> None:
    lenient = Policy(max_failed_tests=1)
    assert views.task_run_data(_run(ROWS), lenient, run_url=URL, snoozes_url=None)["verdict"]["passes"]
    strict = Policy(honor_snoozes=False)
    data = views.task_run_data(_run(ROWS), strict, run_url=URL, snoozes_url=None)
    assert data["counts"]["failed_counting"] == 2
    assert {t["name"] for t in data["tests"]["failed"]} == {"login works", "cart keeps items"}


def test_a_running_run_has_no_verdict_and_no_names() -> None:
    data = views.task_run_data(_run(ROWS, state="started"), Policy(), run_url=URL, snoozes_url=None)
    assert data["verdict"] is None and data["test_run"]["finished"] is False
    assert data["listed"]["named"] is False and data["tests"]["failed"] == []


def test_filters_search_and_pages() -> None:
    tests = {
        "failed": [{"name": f"t{i}", "file": "a.spec.ts"} for i in range(250)],
        "snoozed": [],
        "flaky": [],
    }
    rows, matching, page, pages_ = views.select_tests(tests, "failed", "", 3)
    assert (len(rows), matching, page, pages_) == (50, 250, 3, 3)
    rows, matching, _, _ = views.select_tests(tests, "all", "T24", 1)
    assert [r["name"] for r in rows] == ["t24", *[f"t24{i}" for i in range(10)]] and matching == 11
    assert views.select_tests(tests, "failed", "", 99)[2] == 3  # past the end: the last page
    assert views.status_filter("bogus") == "failed" and views.status_filter("flaky") == "flaky"
    assert views.page_number("-3") == 1 and views.page_number("x") == 1 and views.page_number("2") == 2


def test_pass_rate_from_runs_counts_finished_runs_per_day() -> None:
    def run(day: str, failed: int, state: str = "ended") -> TestRun:
        return parse_test_run(
            {
                "id": 1,
                "state": state,
                "created_at": f"{day}T10:00:00.000Z",
                "total_count": 3,
                "success_count": 3 - failed,
                "failed_count": failed,
                "failed_count_after_snoozing": failed,
                "skipped_count": 0,
                "flaky_count": 0,
            }
        )

    runs = [run("2026-11-29", 0), run("2026-11-29", 1), run("2026-11-28", 0), run("2026-11-28", 0, "started")]
    rate = views.pass_rate_from_runs(runs, today=date(2026, 11, 29), days=3)
    assert rate["days"] == [
        {"date": "2026-11-27", "runs": 0, "passed": 0, "rate": None},
        {"date": "2026-11-28", "runs": 1, "passed": 1, "rate": 100},
        {"date": "2026-11-29", "runs": 2, "passed": 1, "rate": 50},
    ]
    assert rate["summary"] == {"runs": 3, "passed": 2, "rate": 67} and rate["source"] == "runs"


def test_pass_rate_from_analytics_or_a_value_error() -> None:
    answer = {
        "data": {
            "daily": [{"date": "2026-11-29", "run_count": 4, "passed_runs": 3}],
            "summary": {"pass_rate": 75},
        }
    }
    rate = views.pass_rate_from_analytics(answer)
    assert rate["days"] == [{"date": "2026-11-29", "runs": 4, "passed": 3, "rate": 75}]
    assert rate["summary"]["rate"] == 75 and rate["source"] == "analytics"
    for bad in (
        {},
        {"data": {"daily": "x"}},
        {"data": {"daily": [{"date": "d", "run_count": 1, "passed_runs": 2}]}},
    ):
        with pytest.raises(ValueError):
            views.pass_rate_from_analytics(bad)


def test_group_by_environment_keeps_the_newest_runs() -> None:
    runs = [
        parse_test_run({"id": i, "state": "ended", "environment_slug": "a" if i % 2 else "b"})
        for i in range(1, 30)
    ]
    groups = views.group_by_environment(runs, limit=3)
    assert [run["id"] for run in groups["a"]] == [1, 3, 5] and list(groups) == ["a", "b"]


# -- the pages ---------------------------------------------------------------------------------------


def _page_data(rows: list[dict[str, Any]]) -> dict[str, Any]:
    data = views.task_run_data(_run(rows), Policy(), run_url=URL, snoozes_url=None)
    data["task"] = {
        "task_id": "t",
        "operator": "EmpiricalTestRunSensor",
        "connection": "c",
        "test_run_found_by": "x",
    }
    data["fetched_at"] = time.time()
    return data


def test_the_page_escapes_everything_from_an_answer() -> None:
    evil = '<script>alert("x")</script>'
    rows = [_row(evil, "failed", 1), {**_row("ok", "failed", 2), "pw_test_id": None}]
    html = pages.task_page(_page_data(rows), status="failed", query=evil, page=1, map_index=-1, nonce="n0nce")
    assert evil not in html and "&lt;script&gt;" in html
    assert html.count("<script") == 1 and '<script nonce="n0nce">' in html


def test_links_are_only_http_urls() -> None:
    assert pages.out_link("javascript:alert(1)", "x") == "x"
    assert pages.out_link("https://a.example/?q=<b>", "t") == (
        '<a href="https://a.example/?q=&lt;b&gt;" target="_blank" rel="noopener noreferrer">t</a>'
    )


def test_a_running_run_reloads_itself() -> None:
    data = views.task_run_data(_run(ROWS, state="started"), Policy(), run_url=URL, snoozes_url=None)
    data["task"] = {"task_id": "t"}
    html = pages.task_page(data, status="failed", query="", page=1, map_index=3, nonce="n")
    assert f'http-equiv="refresh" content="{pages.REFRESH_SECONDS}"' in html
    assert "names no tests yet" in html


def test_2000_tests_render_one_page_quickly() -> None:
    rows = [_row(f"test {i}", "failed" if i % 3 == 0 else "passed", i) for i in range(2000)]
    data = _page_data(rows)
    started = time.perf_counter()
    html = pages.task_page(data, status="failed", query="", page=2, map_index=-1, nonce="n")
    elapsed = time.perf_counter() - started
    assert html.count("<tr>") == views.PAGE_SIZE + 1  # header + one page of rows
    assert "page 2 of 7 (667 tests)" in html
    assert elapsed < 0.5, elapsed


def test_a_map_index_survives_filters_and_pages() -> None:
    rows = [_row(f"test {i}", "failed", i) for i in range(150)]
    html = pages.task_page(_page_data(rows), status="failed", query="", page=1, map_index=4, nonce="n")
    assert 'href="?status=failed&amp;page=2&amp;map_index=4"' in html
    assert '<input type="hidden" name="map_index" value="4">' in html


def test_the_chart_has_a_bar_per_day() -> None:
    rate = views.pass_rate_from_runs([], today=date(2026, 11, 29))
    assert pages.chart(rate).count("<rect") == 30


# -- the lookup ------------------------------------------------------------------------------------


def _describe(**overrides: Any) -> lookup.TaskRun:
    values: dict[str, Any] = {
        "dag_id": "d",
        "run_id": "r",
        "task_id": "t",
        "map_index": -1,
        "operator": "EmpiricalTriggerTestRunOperator",
        "state": "success",
        "xcoms": {},
        "rendered": {},
    }
    values.update(overrides)
    return lookup.describe(**values)


def test_the_run_id_comes_from_the_task_s_own_records_in_order() -> None:
    assert _describe(xcoms={"test_run_id": 5, "return_value": {"id": 6}}).test_run_id == 5
    assert _describe(xcoms={"return_value": {"id": 6}}).test_run_id == 6
    assert _describe(xcoms={"return_value": 8}).test_run_id == 8
    task = _describe(operator="EmpiricalTestRunSensor", rendered={"test_run_id": "9"})
    assert (task.test_run_id, task.found_by) == (9, "rendered field test_run_id")
    assert _describe(xcoms={"return_value": True}).test_run_id is None
    assert _describe().test_run_id is None


def test_the_connection_is_the_task_s_or_the_default() -> None:
    assert _describe().conn_id == "empirical_default"
    assert _describe(xcoms={"empirical_conn_id": "team_b"}).conn_id == "team_b"
    assert _describe(xcoms={"empirical_conn_id": 3}).conn_id == "empirical_default"


def test_the_policy_is_the_rendered_one() -> None:
    task = _describe(rendered={"max_failed_tests": "2", "honor_snoozes": "False", "fail_on_flaky": True})
    assert task.policy == Policy(max_failed_tests=2, honor_snoozes=False, fail_on_flaky=True)
    assert task.policy_note is None
    assert _describe().policy == Policy() and "not rendered yet" in str(_describe().policy_note)
    broken = _describe(rendered={"max_failed_tests": "many"})
    assert broken.policy == Policy() and "cannot be read" in str(broken.policy_note)


def test_other_tasks_are_not_ours() -> None:
    with pytest.raises(lookup.NotFound, match="does not run Empirical tests"):
        _describe(operator="PythonOperator", xcoms={"test_run_id": 5})
    # a subclass of ours pushes the run link like ours do
    assert _describe(operator="MyTrigger", xcoms={"test_run_id": 5, "test_run_url": URL}).test_run_id == 5


def test_only_an_http_link_is_kept() -> None:
    assert _describe(xcoms={"test_run_url": "javascript:x"}).url is None
    assert _describe(xcoms={"test_run_url": URL}).url == URL


def test_map_index() -> None:
    assert lookup.map_index_of(None) == -1
    assert lookup.map_index_of("{MAP_INDEX}") == -1  # the UI leaves the placeholder for unmapped tasks
    assert lookup.map_index_of("3") == 3
    for bad in ("x", "-2", "1.5", "99999999"):
        with pytest.raises(lookup.NotFound):
            lookup.map_index_of(bad)


# -- content negotiation, the plugin object, versions ----------------------------------------------


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        ("application/json", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("*/*", False),
        (None, False),
        ("application/json;q=0.5, text/html", False),
        ("text/html;q=0.1, application/json", True),
        ("application/json;q=0", False),
    ],
)
def test_wants_json(accept: str | None, json: bool) -> None:
    assert app.wants_json(accept) is json


def test_the_views_are_relative_and_templated() -> None:
    assert not TASK_VIEW["href"].startswith("/") and not PROJECT_VIEW["href"].startswith("/")
    assert TASK_VIEW["href"] == "empirical/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"
    assert EmpiricalPlugin.name == "empirical"


@pytest.mark.parametrize(
    ("version", "supported"),
    [((2, 11), False), ((3, 0), False), ((3, 1), True), ((3, 3), True), (None, False)],
)
def test_views_need_airflow_3_1(version: tuple[int, int] | None, supported: bool) -> None:
    if version is None:
        assert views_supported((0, 0)) is False
    else:
        assert views_supported(version) is supported


def test_the_app_is_built_once_on_first_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_empirical.plugins import empirical

    built: list[int] = []
    monkeypatch.setattr(empirical, "views_supported", lambda version=None: True)
    monkeypatch.setattr(app, "create_app", lambda: built.append(1) or object())
    apps = empirical._FastApiApps()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(apps.__get__(None, None))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == [1]
    assert all(result is results[0] for result in results)
    assert results[0][0]["url_prefix"] == "/empirical"


def test_an_app_that_cannot_be_built_leaves_the_api_server_running(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_empirical.plugins import empirical

    def broken() -> Any:
        raise ImportError("no fastapi here")

    monkeypatch.setattr(empirical, "views_supported", lambda version=None: True)
    monkeypatch.setattr(app, "create_app", broken)
    assert empirical._FastApiApps().__get__(None, None) == []
