"""The API contract as the evidence describes it (issue 11), over real HTTP to the emulator in both
run shapes: nested (`data.test_run.testRun` + per-test rows, Empirical's own tooling) and flat.

A 2xx answer the provider cannot read ends a wait quickly with a message that names what was
seen; unreadable results never pass; failed tests are named; links carry the project slug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from airflow_provider_empirical.api.test_runs import parse_test_run
from airflow_provider_empirical.api.verdict import Policy, outcome_of
from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.errors import EmpiricalContractError, EmpiricalTestRunFailed
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.http.protocol import RetryPolicy
from airflow_provider_empirical.outcome import await_test_run, finished_event, resolve, wait_for_test_run
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
from tests.conftest import API_KEY, conn_json

SHAPES = ["nested", "flat"]
FAST = RetryPolicy(attempts=2, base_delay=0.05, max_delay=0.1)
TESTS = [f"checkout > case {i}" for i in range(1, 61)]


def _start(emulator: Emulator, **script: Any) -> int:
    emulator.queue_runs(RunScript(**{"queued_for": 0.0, "run_for": 0.2, **script}))
    run_id = EmpiricalHook().trigger_test_run("production")["id"]
    time.sleep(0.3)
    return run_id


@pytest.mark.parametrize("shape", SHAPES)
def test_both_shapes_give_the_same_run_and_failed_test_names(empirical_conn: Emulator, shape: str) -> None:
    empirical_conn.set_shape(shape)
    run_id = _start(empirical_conn, outcome="failed", tests=TESTS[:5], failed_tests=[TESTS[1], TESTS[3]])
    run = EmpiricalHook().get_test_run(run_id)
    assert run["id"] == run_id and run["state"] == "ended"
    assert (run["total_count"], run["failed_count"], run["success_count"]) == (5, 2, 3)
    assert outcome_of(run) == "failed"
    if shape == "nested":  # the rows come with the run: names without another request
        assert [case["name"] for case in run["failed_tests"] or []] == [TESTS[1], TESTS[3]]
        assert all(case["status"] == "failed" and case["pw_test_id"] for case in run["failed_tests"] or [])
    else:
        assert run["failed_tests"] is None  # no rows: the log says so and falls back to counts
    assert empirical_conn.count("GET") == 1


@pytest.mark.parametrize("key", ["error_code", "errorCode", "error.code"])
@pytest.mark.parametrize("shape", SHAPES)
def test_the_error_code_is_read_under_each_spelling(empirical_conn: Emulator, shape: str, key: str) -> None:
    empirical_conn.set_shape(shape)
    run_id = _start(empirical_conn, outcome="error", error_code="merge_conflict", error_code_key=key)
    run = EmpiricalHook().get_test_run(run_id)
    assert run["error_code"] == "merge_conflict"
    assert "merge conflict when merging the test branch" in finished_event(run, None)["message"]


def test_parser_reads_each_field_from_whichever_level_holds_it() -> None:
    payload = {
        "data": {
            "test_run": {
                "testRun": {"id": 9, "state": "ended"},
                "failed_count": 0,
                "success_count": 4,
                "total_count": 4,
                "duration": 1000,
                "error": {"code": "x"},
                "flattenedSummaryDetails": [],
            },
            "project": {"slug": "acme"},
        }
    }
    run = parse_test_run(payload)
    assert (run["id"], run["failed_count"], run["success_count"], run["duration"]) == (9, 0, 4, 1000)
    assert run["error_code"] == "x" and run["project_slug"] == "acme" and run["failed_tests"] == []
    assert outcome_of(run) == "success"


def test_counts_missing_at_run_level_come_from_the_rows_and_more_failed_rows_fail_closed() -> None:
    rows = [
        {"name": "a", "status": "passed"},
        {"name": "b", "status": "timedOut"},
        {"name": "c", "status": "flaky"},
    ]
    run = parse_test_run(
        {"data": {"test_run": {"testRun": {"id": 1, "state": "ended"}, "flattenedSummaryDetails": rows}}}
    )
    assert (run["total_count"], run["failed_count"], run["flaky_count"]) == (3, 1, 1)
    assert [c["name"] for c in run["flaky_tests"] or []] == ["c"]
    claims_none = parse_test_run(
        {
            "data": {
                "test_run": {
                    "testRun": {"id": 1, "state": "ended", "failed_count": 0, "success_count": 3},
                    "flattenedSummaryDetails": rows,
                }
            }
        }
    )
    assert claims_none["failed_count"] == 1 and outcome_of(claims_none) == "failed"


UNREADABLE = ["two", "2.0", True, 1.5, [1], -1, {"n": 2}]


@pytest.mark.parametrize("value", UNREADABLE, ids=[repr(v) for v in UNREADABLE])
def test_unreadable_failed_counts_on_an_ended_run_fail_closed(value: Any) -> None:
    run = parse_test_run(
        {"id": 5, "state": "ended", "failed_count": value, "success_count": 10, "total_count": 12}
    )
    assert outcome_of(run) == "unreadable" and "failed_count" in run["unreadable"]
    event = finished_event(run, "u")
    assert event["status"] == "unreadable" and "contract mismatch" in event["message"]
    for strict in (True, False):  # fail_on_test_failure=False never lets an unreadable result pass
        with pytest.raises(EmpiricalTestRunFailed, match="cannot be read"):
            resolve(event, Policy(fail_on_test_failure=strict), log=logging.getLogger())


def test_an_ended_run_without_any_count_fails_closed() -> None:
    run = parse_test_run({"data": {"test_run": {"id": 5, "state": "ended"}}})
    assert outcome_of(run) == "unreadable"


@pytest.mark.parametrize(
    ("counts", "result"),
    [
        ({"total_count": 0}, "empty"),
        ({"success_count": 0, "failed_count": 0, "skipped_count": 12}, "empty"),
        ({"total_count": 12, "skipped_count": 12, "failed_count": 0}, "empty"),
        ({"total_count": 3, "failed_count": 0}, "success"),
    ],
)
def test_a_run_that_executed_no_test_fails_unless_allowed(counts: dict[str, int], result: str) -> None:
    run = parse_test_run({"id": 5, "state": "ended", "failed_count": 0, **counts})
    assert outcome_of(run) == result
    if result == "empty":
        event = finished_event(run, None)
        with pytest.raises(EmpiricalTestRunFailed, match="fail_on_empty_run=False"):
            resolve(event, Policy(), log=logging.getLogger())
        summary = resolve(event, Policy(fail_on_empty_run=False), log=logging.getLogger())
        assert summary["outcome"] == "empty"


def test_failed_tests_are_listed_in_the_log_and_the_first_ten_named_in_the_error(
    empirical_conn: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = _start(empirical_conn, outcome="failed", tests=TESTS, failed_tests=TESTS[:55])
    event = finished_event(EmpiricalHook().get_test_run(run_id), "u")
    with caplog.at_level(logging.INFO), pytest.raises(EmpiricalTestRunFailed) as info:
        resolve(event, Policy(), log=logging.getLogger("t"))
    lines = [r.getMessage() for r in caplog.records]
    assert sum("FAILED" in line for line in lines) == 50 and any("and 5 more" in line for line in lines)
    assert all(f"'{name}'" in str(info.value) for name in TESTS[:10])
    assert f"'{TESTS[10]}'" not in str(info.value) and "and 45 more" in str(info.value)
    summary = resolve(event, Policy(fail_on_test_failure=False), log=logging.getLogger("t"))
    assert len(summary["failed_tests"]) == 55 and set(summary["failed_tests"][0]) == {
        "name",
        "status",
        "pw_test_id",
        "file",
        "project",
        "snooze",
        "url",
    }
    first = summary["failed_tests"][0]
    assert first["url"] == f"{empirical_conn.url}/demo/test-runs/{run_id}?test_id={first['pw_test_id']}"


@pytest.mark.parametrize("cases_endpoint", ["answers", "missing"])
def test_without_rows_the_names_come_from_the_cases_endpoint_once_or_the_counts_do(
    empirical_conn: Emulator, cases_endpoint: str
) -> None:
    empirical_conn.set_shape("flat")
    run_id = _start(empirical_conn, outcome="failed", tests=TESTS[:4], failed_tests=[TESTS[2]])
    if cases_endpoint == "missing":
        empirical_conn.add_fault(method="GET", path="/api/v2/test-runs/*", times=1, status=404)
    hook = EmpiricalHook()
    run = hook.with_failed_tests(hook.get_test_run(run_id))
    assert empirical_conn.count("GET", "/api/v2/") == 1
    if cases_endpoint == "answers":
        assert [case["name"] for case in run["failed_tests"] or []] == [TESTS[2]]
    else:
        assert run["failed_tests"] is None and run["failed_count"] == 1
    passed = _start(empirical_conn, outcome="passed")
    hook.with_failed_tests(hook.get_test_run(passed))
    assert empirical_conn.count("GET", "/api/v2/") == 1  # never asked when nothing failed


def test_without_rows_the_log_says_so_in_one_line(
    empirical_conn: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    empirical_conn.set_shape("flat")
    run_id = _start(empirical_conn, outcome="failed")
    with caplog.at_level(logging.INFO), pytest.raises(EmpiricalTestRunFailed):
        resolve(
            finished_event(EmpiricalHook().get_test_run(run_id), None),
            Policy(),
            log=logging.getLogger("t"),
        )
    assert sum("no per-test rows" in r.getMessage() for r in caplog.records) == 1


# -- a 2xx the provider cannot read ends a wait quickly, naming what it saw --

NO_RUN = {"data": {"surprise": {"testRunV3": {"id": 1}}}, "meta": {"authorization": f"Bearer {API_KEY}"}}


def _serve_no_run(emulator: Emulator) -> None:
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=200, body=NO_RUN)


def _assert_contract_message(message: str) -> None:
    assert "3 answers in a row" in message and "contract" in message and "report" in message
    assert "surprise" in message and "meta" in message  # the keys it saw
    assert API_KEY not in message and "Bearer" not in message  # keys only, never values


def test_sync_wait_ends_after_three_answers_without_a_run(empirical_conn: Emulator) -> None:
    run_id = _start(empirical_conn)
    _serve_no_run(empirical_conn)
    started = time.monotonic()
    event = wait_for_test_run(
        EmpiricalHook(retry=FAST),
        run_id,
        url=None,
        poll_interval=0.2,
        end_time=time.time() + 3600,
        log=logging.getLogger(),
    )
    assert event["status"] == "error" and time.monotonic() - started < 10
    _assert_contract_message(event["message"])
    assert API_KEY not in str(event)
    assert empirical_conn.count("GET", "/api/test-runs/") == 3


def test_trigger_wait_ends_after_three_answers_without_a_run(empirical_conn: Emulator) -> None:
    run_id = _start(empirical_conn)
    _serve_no_run(empirical_conn)

    async def main() -> Any:
        hook = EmpiricalHook(retry=FAST)
        try:
            return await await_test_run(
                hook,
                run_id,
                url=None,
                poll_interval=0.2,
                end_time=time.time() + 3600,
                log=logging.getLogger(),
            )
        finally:
            await hook.aclose()

    event = asyncio.run(main())
    assert event["status"] == "error"
    _assert_contract_message(event["message"])


def test_a_run_answer_for_another_id_is_a_contract_error(empirical_conn: Emulator) -> None:
    first = _start(empirical_conn)
    second = _start(empirical_conn)
    empirical_conn.set_shape("flat")
    body = {"data": {"test_run": {"id": first, "state": "ended"}}}
    empirical_conn.add_fault(method="GET", path=f"/api/test-runs/{second}", times=1, status=200, body=body)
    with pytest.raises(EmpiricalContractError, match=f"test run {first} instead of {second}"):
        EmpiricalHook().get_test_run(second)


def test_poke_sensor_fails_on_the_third_unreadable_answer(empirical_conn: Emulator) -> None:
    run_id = _start(empirical_conn, run_for=60)
    _serve_no_run(empirical_conn)
    sensor = EmpiricalTestRunSensor(task_id="s", test_run_id=run_id, poke_interval=1, mode="poke")
    assert sensor.poke({}) is False and sensor.poke({}) is False
    with pytest.raises(EmpiricalTestRunFailed, match="3 answers in a row"):
        sensor.poke({})


def test_reschedule_sensor_fails_on_the_first_unreadable_answer(empirical_conn: Emulator) -> None:
    run_id = _start(empirical_conn, run_for=60)
    _serve_no_run(empirical_conn)
    sensor = EmpiricalTestRunSensor(task_id="s", test_run_id=run_id, poke_interval=1, mode="reschedule")
    with pytest.raises(EmpiricalTestRunFailed, match="contract"):
        sensor.poke({})


# -- dashboard links --


def test_links_carry_the_project_slug_learned_from_the_api(empirical_conn: Emulator) -> None:
    hook = EmpiricalHook()
    run_id = hook.trigger_test_run("production")["id"]
    assert hook.test_run_url(run_id) == f"{empirical_conn.url}/demo/test-runs/{run_id}"
    hook.test_run_url(run_id)
    assert empirical_conn.count("GET", "/api/test-runs") == 1  # learned once per hook


def test_the_connection_slug_wins_and_costs_no_request(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMPIRICAL_DEFAULT",
        conn_json(emulator, extra={"dashboard_url": emulator.url, "project_slug": "acme"}),
    )
    assert EmpiricalHook().test_run_url(7) == f"{emulator.url}/acme/test-runs/7"
    assert emulator.count() == 0


def test_without_a_slug_links_fall_back_to_the_short_form(empirical_conn: Emulator) -> None:
    empirical_conn.add_fault(
        method="GET", path="/api/test-runs", times=1, status=200, body={"data": {"test_runs": {"items": []}}}
    )
    assert EmpiricalHook().test_run_url(7) == f"{empirical_conn.url}/test-runs/7"


def test_the_slug_link_resolves_on_the_emulators_dashboard(empirical_conn: Emulator) -> None:
    import httpx

    hook = EmpiricalHook()
    run_id = hook.trigger_test_run("production")["id"]
    page = httpx.get(hook.test_run_url(run_id))
    assert page.status_code == 200 and f"#{run_id}" in page.text


def test_listing_stops_when_the_server_repeats_a_page_forever(empirical_conn: Emulator) -> None:
    page = {
        "data": {"project": {"slug": "demo"}, "test_runs": {"items": [{"id": 3, "state": "ended"}]}},
        "pagination": {"page": 1, "per_page": 1, "total": 10**9, "total_pages": 10**9},
    }
    empirical_conn.add_fault(method="GET", path="/api/test-runs", times=-1, status=200, body=page)
    assert [run["id"] for run in EmpiricalHook().list_test_runs(per_page=1)] == [3]
    assert empirical_conn.count("GET", "/api/test-runs") == 2  # the second page repeated the first


def test_a_list_answer_without_items_is_a_contract_error(empirical_conn: Emulator) -> None:
    empirical_conn.add_fault(
        method="GET", path="/api/test-runs", times=1, status=200, body={"data": {"runs": []}}
    )
    with pytest.raises(EmpiricalContractError, match=r"data\.test_runs\.items"):
        list(EmpiricalHook().list_test_runs())


def test_a_deferrable_sensor_refuses_a_sub_second_poke_interval() -> None:
    from airflow_provider_empirical.errors import EmpiricalValidationError

    with pytest.raises(EmpiricalValidationError, match="`poke_interval` must be at least 1"):
        EmpiricalTestRunSensor(task_id="s", test_run_id=1, poke_interval=0.1, deferrable=True)
