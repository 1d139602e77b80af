"""What the UI plugin asks of Empirical, over real HTTP to the emulator: how often, and what it keeps.

`fetch.Source` is one connection as the API server's views see it. Counts come from the
emulator's record of the requests it answered; time is a fake clock, so TTLs are exact.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from airflow_provider_empirical.api.verdict import Policy
from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.plugins import fetch, pages, views
from tests.conftest import API_KEY

FAILED, SNOOZED, FLAKY = "signs in with email", "pays with card", "removes an item"
FINISHED = RunScript(
    queued_for=0,
    run_for=0,
    outcome="failed",
    total=24,
    failed_tests=[FAILED, SNOOZED],
    snoozed_tests=[SNOOZED],
    flaky_tests=[FLAKY],
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(empirical_conn: Emulator, clock: Clock) -> fetch.Source:
    return fetch.Source("empirical_default", clock=clock)


def _finished(emulator: Emulator, script: RunScript = FINISHED, environment: str = "production") -> int:
    run = emulator.start_run(environment, script=script)
    return int(run["id"])


def _gets(emulator: Emulator) -> int:
    return emulator.count("GET", "/api/test-runs/")


def test_a_finished_run_costs_one_call_for_ten_minutes(
    source: fetch.Source, empirical_conn: Emulator, clock: Clock
) -> None:
    run_id = _finished(empirical_conn)
    run, fetched = source.run(run_id, None)
    assert fetched is None and run["state"] == "ended"
    for _ in range(10):
        again, fetched = source.run(run_id, None)
        assert fetched is not None and again is run
    assert _gets(empirical_conn) == 1
    clock.now += fetch.FINISHED_TTL + 1  # snoozes are evaluated live: read it again once in a while
    source.run(run_id, None)
    assert _gets(empirical_conn) == 2


def test_a_run_still_going_is_never_kept(source: fetch.Source, empirical_conn: Emulator) -> None:
    run_id = _finished(empirical_conn, RunScript(queued_for=0, run_for=60))
    for _ in range(3):
        run, fetched = source.run(run_id, None)
        assert run["state"] == "started" and fetched is None
    assert _gets(empirical_conn) == 3


def test_concurrent_first_views_share_one_call(source: fetch.Source, empirical_conn: Emulator) -> None:
    run_id = _finished(empirical_conn)
    empirical_conn.set_response_delay(0.3)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(source.run(run_id, None))) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 10 and _gets(empirical_conn) == 1
    assert sum(fetched is None for _, fetched in results) == 1


def test_the_task_s_link_must_be_this_connection_s(source: fetch.Source, empirical_conn: Emulator) -> None:
    run_id = _finished(empirical_conn)
    good = f"{empirical_conn.url}/demo/test-runs/{run_id}"
    run, _ = source.run(run_id, good)
    assert all(case["url"].startswith(good + "?test_id=") for case in run["failed_tests"] or [])
    for bad in (
        f"https://elsewhere.example/demo/test-runs/{run_id}",  # another dashboard
        f"{empirical_conn.url}/other-project/test-runs/{run_id}",  # another project
        f"{empirical_conn.url}/demo/test-runs/{run_id + 1}",  # another run
    ):
        with pytest.raises(fetch.PluginError) as caught:
            source.run(run_id, bad)
        assert caught.value.status == 409 and "another connection" in caught.value.message
    assert fetch.same_run_link(f"{empirical_conn.url}/test-runs/{run_id}", source.hook().config, run)


def test_errors_are_messages_without_the_key(source: fetch.Source, empirical_conn: Emulator) -> None:
    with pytest.raises(fetch.PluginError) as caught:
        source.run(9999, None)
    assert caught.value.status == 404
    run_id = _finished(empirical_conn)
    empirical_conn.add_fault("GET", f"/api/test-runs/{run_id}", times=-1, status=500, echo_auth=True)
    with pytest.raises(fetch.PluginError) as caught:
        source.run(run_id, None)
    assert caught.value.status == 502 and API_KEY not in caught.value.message


def test_only_an_empirical_connection_is_used(
    empirical_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOT_OURS", json.dumps({"conn_type": "http", "host": "x", "password": "p"})
    )
    with pytest.raises(fetch.PluginError) as caught:
        fetch.Source("not_ours").run(1, None)
    assert caught.value.status == 409 and "not of type 'empirical'" in caught.value.message
    assert empirical_conn.count() == 0


def test_the_project_page_asks_once_a_minute_whatever_the_viewers(
    source: fetch.Source, empirical_conn: Emulator, clock: Clock
) -> None:
    for environment in ("production", "production", "staging"):
        _finished(empirical_conn, environment=environment)
    empirical_conn.set_response_delay(0.05)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(source.project())) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(cached is False for _, cached in results) == 1
    data = results[0][0]
    first = empirical_conn.count()
    # the environments, one list call per enabled environment, the analytics
    assert first == 1 + 3 + 1, [r["path"] for r in empirical_conn.requests]
    assert empirical_conn.count("GET", "/api/test-runs") == 3
    by_slug = {env["slug"]: env for env in data["environments"]}
    assert [len(by_slug[slug]["runs"]) for slug in ("production", "staging", "development")] == [2, 1, 0]
    assert data["pass_rate"]["source"] == "analytics" and data["pass_rate"]["summary"]["runs"] == 3
    clock.now += 59
    assert source.project()[1] is True and empirical_conn.count() == first
    clock.now += 2
    assert source.project()[1] is False and empirical_conn.count() == 2 * first
    assert API_KEY not in json.dumps(data)


def test_without_analytics_the_pass_rate_is_computed_from_the_runs(
    source: fetch.Source, empirical_conn: Emulator
) -> None:
    _finished(empirical_conn, RunScript(queued_for=0, run_for=0))
    _finished(empirical_conn)
    empirical_conn.set_switches(analytics_endpoint=False)
    data, _ = source.project()
    assert data["pass_rate"]["source"] == "runs"
    assert data["pass_rate"]["summary"] == {"runs": 2, "passed": 1, "rate": 50}
    assert any("analytics" in note for note in data["notes"])


def test_without_the_environments_endpoint_one_list_is_grouped(
    source: fetch.Source, empirical_conn: Emulator
) -> None:
    _finished(empirical_conn, environment="staging")
    _finished(empirical_conn, environment="production")
    empirical_conn.set_switches(environments_endpoint=False)
    data, _ = source.project()
    assert [env["slug"] for env in data["environments"]] == ["production", "staging"]
    assert empirical_conn.count("GET", "/api/test-runs") == 1
    assert any("environments list" in note for note in data["notes"])


def test_a_project_that_cannot_be_read_is_an_error_page_for_a_minute(
    source: fetch.Source, empirical_conn: Emulator
) -> None:
    empirical_conn.add_fault("*", "/api/*", times=-1, status=401)
    data, _ = source.project()
    assert all(env["error"] for env in data["environments"])
    calls = empirical_conn.count()
    source.project()
    assert empirical_conn.count() == calls  # a failure is remembered too: no call per viewer


def test_a_run_of_2000_tests_stays_one_quick_page(source: fetch.Source, empirical_conn: Emulator) -> None:
    names = [f"suite {i // 100} case {i}" for i in range(2000)]
    script = RunScript(
        queued_for=0,
        run_for=0,
        outcome="failed",
        tests=names,
        failed_tests=names[:1200],
        flaky_tests=names[1500::5],
        snoozed_tests=names[:40:2],
    )
    run_id = _finished(empirical_conn, script)
    started = time.perf_counter()
    run, _ = source.run(run_id, None)
    fetched = time.perf_counter() - started
    data = views.task_run_data(run, Policy(), run_url="https://x.example/r", snoozes_url=None)
    data |= {"task": {"task_id": "t"}, "fetched_at": time.time()}
    started = time.perf_counter()
    html = pages.task_page(data, status="all", query="", page=3, map_index=-1, nonce="n")
    rendered = time.perf_counter() - started
    assert data["counts"]["total"] == 2000 and data["counts"]["failed"] == 1200
    assert data["counts"]["failed_counting"] == 1180 and data["counts"]["snoozed"] == 20
    # the parser lists 1,000 failed rows at most (it bounds XCom and trigger events): the page says so
    assert len(data["tests"]["failed"]) + len(data["tests"]["snoozed"]) == 1000
    assert data["listed"] == {"named": True, "complete": False, "failed_rows": 1200}
    assert "Only the first 1000 failed tests of 1200 are listed here" in html
    assert len(data["tests"]["flaky"]) == 100
    assert html.count("<tr>") == views.PAGE_SIZE + 1
    assert fetched < 2.0 and rendered < 0.2, (fetched, rendered)
