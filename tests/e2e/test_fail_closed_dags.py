"""Failing closed in real DAG runs (dag.test() against the emulator or a loopback server): a gate
that cannot pass failed tests, task deadlines that hold whatever the server does, at most one run
per task instance when the answer to the trigger proves nothing, and server text that can neither
leak the key nor forge a log line.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from tests.airflow_helpers import task_states, xcoms
from tests.conftest import API_KEY, QUICK
from tests.fail_closed_servers import BS_KEY, HALVES, TRICKLES, TrickleServer, nested_answer

pytestmark = pytest.mark.e2e


def _store_supported() -> bool:
    """Airflow 3.3+ gives tasks a durable task_state_store, kept across tries and reschedules."""
    from airflow.providers.common.compat.sdk import ResumableJobMixin

    return not ResumableJobMixin.__module__.startswith("airflow.providers.common.compat")


def _timed(run: Any, dag_id: str) -> tuple[Any, float]:
    started = time.monotonic()
    dag_run = run(dag_id)
    return dag_run, time.monotonic() - started


# -- a gate that passes failed tests (issue 20.1, 20.2) ---------------------------------------------


def test_a_reschedule_sensor_keeps_the_run_it_chose_when_a_newer_one_passes(
    run_dag: Any, emulator: Emulator
) -> None:
    """The sensor chooses the newest run on production/main and reads it. A newer run then starts
    and passes; after the sensor's next poke, the chosen run ends with failed tests. Across its
    reschedules (which wipe XCom) the sensor keeps its choice and fails with it (issue 20.1)."""
    emulator.queue_runs(
        RunScript(outcome="never", queued_for=0.1, run_for=600), RunScript(queued_for=0, run_for=0.3)
    )
    chosen = EmpiricalHook().trigger_test_run("production", branch="main")["id"]
    reads = f"/api/test-runs/{chosen}"
    newer: list[int] = []
    stop = threading.Event()
    ends = time.monotonic() + 60

    def until(condition: Any) -> bool:
        while not stop.is_set() and time.monotonic() < ends:
            if condition():
                return True
            time.sleep(0.05)
        return False

    def script() -> None:
        if not until(lambda: emulator.count("GET", reads) >= 1):  # the sensor chose run 1 and read it
            return
        newer.append(EmpiricalHook().trigger_test_run("production", branch="main")["id"])
        time.sleep(0.5)  # the newer run has passed
        seen = emulator.count("GET", reads)
        # the next poke, after a reschedule: run 1 read again, or (the defect) the newer run
        if until(
            lambda: emulator.count("GET", reads) > seen or emulator.count("GET", f"/api/test-runs/{newer[0]}")
        ):
            emulator.finish_run(chosen, "failed")

    watcher = threading.Thread(target=script, daemon=True)
    watcher.start()
    try:
        dag_run = run_dag("e2e_latest_reschedule")
    finally:
        stop.set()
        watcher.join()
    state = task_states(dag_run)["wait_for_tests"]
    if not _store_supported():  # no durable state: reschedule mode with filters is refused
        assert state == "failed" and newer == []
        return
    (second,) = newer
    runs = {run["id"]: run for run in emulator.runs}
    assert runs[second]["state"] == "ended" and runs[second]["failed_count"] == 0  # it passed
    assert emulator.count("GET", f"/api/test-runs/{second}") == 0  # never even looked at
    assert state == "failed" and runs[chosen]["failed_count"] == 3
    assert xcoms(dag_run, "wait_for_tests")["test_run_id"] == chosen


def _row(name: str, status: str | None) -> dict[str, Any]:
    row = {"name": name, "pw_test_id": f"id-{name}"}
    if status is not None:
        row["status"] = status
    return row


@pytest.mark.parametrize("status", ["unexpected", "fail", "FAILURE", None], ids=repr)
def test_a_row_whose_status_is_no_known_pass_fails_the_sensor(
    run_dag: Any, emulator: Emulator, capfd: Any, status: str | None
) -> None:
    """An ended run without run-level counts, whose third row says "unexpected" (Playwright's word
    for a failed test), a status nobody knows, or nothing: the sensor fails, never passes, and
    says which status it did not understand (issue 20.2)."""
    rows = [_row("login", "passed"), _row("cart", "passed"), _row("search", status)]
    body = nested_answer({"id": 1, "state": "ended"}, rows)
    emulator.add_fault(method="GET", path="/api/test-runs/1", times=-1, status=200, body=body)
    dag_run = run_dag("fail_closed_sensor_short")
    assert task_states(dag_run)["wait_for_tests"] == "failed"
    out = "".join(capfd.readouterr())
    if status == "unexpected":
        assert "FAILED search" in out
    else:
        assert f"per-test status {status or 'missing'!r}" in out


# -- deadlines that hold at DAG level (issue 20.3, 20.4) ---------------------------------------------


@pytest.mark.parametrize("trickle", sorted(TRICKLES))
def test_a_poke_sensor_ends_near_its_timeout_against_an_answer_that_trickles_forever(
    run_dag: Any, monkeypatch: pytest.MonkeyPatch, trickle: str
) -> None:
    """A sensor with timeout=6 against a server that drips its headers, or a gzip body that
    decodes to nothing: the task fails near 6 s, not when the server gives up (issue 20.3)."""
    server = TrickleServer(TRICKLES[trickle], give_up_after=40)
    conn = {
        "conn_type": "empirical",
        "host": server.url,
        "password": API_KEY,
        "extra": {"project_slug": "demo"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", json.dumps(conn))
    try:
        dag_run, elapsed = _timed(run_dag, "fail_closed_sensor_short")
    finally:
        server.close()
    assert task_states(dag_run)["wait_for_tests"] == "failed"
    assert server.requests >= 1 and elapsed < 20, elapsed


RETRY_AFTER_20 = {"times": -1, "status": 429, "headers": {"Retry-After": "20"}}


def test_a_poke_sensor_ends_near_its_timeout_against_a_longer_retry_after(
    run_dag: Any, emulator: Emulator
) -> None:
    """timeout=6 against `429 Retry-After: 20`: no poke waits out the pause (issue 20.4)."""
    emulator.add_fault(method="GET", path="/api/test-runs/1", **RETRY_AFTER_20)
    dag_run, elapsed = _timed(run_dag, "fail_closed_sensor_short")
    assert task_states(dag_run)["wait_for_tests"] == "failed"
    assert emulator.count("GET", "/api/test-runs/1") >= 2 and elapsed < 15, elapsed


def test_the_operators_check_before_deferring_keeps_the_tasks_deadline(
    run_dag: Any, emulator: Emulator
) -> None:
    """A deferrable operator with timeout=6 reads its new run once before deferring; that read
    against `429 Retry-After: 20` does not outlive the task's 6 s either (issue 20.4)."""
    emulator.queue_runs(RunScript(outcome="never", queued_for=0, run_for=60))
    emulator.add_fault(method="GET", path="/api/test-runs/1", **RETRY_AFTER_20)
    dag_run, elapsed = _timed(run_dag, "fail_closed_operator_deferrable_short")
    assert task_states(dag_run)["run_tests"] == "failed"
    assert emulator.count("PUT") == 1 and elapsed < 15, elapsed


# -- at most one run per task instance (issue 20.9, 20.10, 20.12) -------------------------------------


def _one_put_one_run_failed(dag_run: Any, emulator: Emulator, task_id: str) -> None:
    assert str(dag_run.state) == "failed" and task_states(dag_run)[task_id] == "failed"
    assert emulator.count("PUT") == 1 and len(emulator.runs) == 1


def test_a_303_to_the_trigger_fails_the_task_without_a_second_run(run_dag: Any, emulator: Emulator) -> None:
    """303 See Other after the run was created: not a rejection. The task (retries=1) fails
    without Airflow's retry; 1 PUT, 1 run (issue 20.9)."""
    emulator.add_fault(
        method="PUT",
        path="/api/test-runs",
        status=303,
        headers={"Location": "/api/test-runs/1"},
        after_create=True,
    )
    emulator.queue_runs(RunScript(**QUICK), RunScript(**QUICK))
    _one_put_one_run_failed(run_dag("e2e_retry_no_wait"), emulator, "trigger_tests")


def test_a_503_after_the_run_was_created_fails_the_task_without_a_second_run(
    run_dag: Any, emulator: Emulator
) -> None:
    """A gateway's 503 after the origin created the run: uncertain, never resent, and the task
    (retries=1) fails without Airflow's retry; 1 PUT, 1 run (issue 20.12)."""
    emulator.add_fault(method="PUT", path="/api/test-runs", status=503, after_create=True)
    emulator.queue_runs(RunScript(**QUICK), RunScript(**QUICK))
    _one_put_one_run_failed(run_dag("e2e_retry_no_wait"), emulator, "trigger_tests")


def test_an_execution_timeout_during_the_trigger_fails_the_task_without_a_second_run(
    run_dag: Any, emulator: Emulator
) -> None:
    """The PUT created its run, but the answer takes 4 s and `execution_timeout` is 2 s. Without
    durable state (durable=False) and with retries=1: the task fails as uncertain, and Airflow's
    retry does not send a second PUT (issue 20.10)."""
    emulator.add_fault(method="PUT", path="/api/test-runs", status=None, delay=4, after_create=True)
    emulator.queue_runs(RunScript(**QUICK), RunScript(**QUICK))
    _one_put_one_run_failed(run_dag("fail_closed_trigger_execution_timeout"), emulator, "trigger_tests")


# -- server text: the key and forged log lines (issue 20.16, 20.18) ----------------------------------


def test_the_key_in_a_passing_runs_text_reaches_no_xcom_or_console_line(
    run_dag: Any, capfd: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that passes, whose branch, commit, environment and flaky test carry the key (with a
    backslash): the summary in XCom and the task's console hold no form of it (issue 20.16)."""
    run = {
        "id": 1,
        "state": "ended",
        "total_count": 2,
        "success_count": 1,
        "failed_count": 0,
        "flaky_count": 1,
        "skipped_count": 0,
        "test_run_branch": BS_KEY,
        "environment_slug": BS_KEY,
        "commit": BS_KEY,
        "build_url": f"https://ci.example/{BS_KEY}",
    }
    flaky = {"name": BS_KEY, "status": "flaky", "pw_test_id": BS_KEY, "nesting": [BS_KEY]}
    with Emulator(api_keys={BS_KEY: 1}) as keyed:
        conn = {"conn_type": "empirical", "host": keyed.url, "password": BS_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", json.dumps(conn))
        keyed.add_fault(
            method="GET",
            path="/api/test-runs/1",
            times=-1,
            status=200,
            body=nested_answer(run, [_row("a", "passed"), flaky]),
        )
        dag_run = run_dag("fail_closed_sensor_short")
    assert task_states(dag_run)["wait_for_tests"] == "success"
    pushed = json.dumps(xcoms(dag_run, "wait_for_tests"), default=str)
    out = "".join(capfd.readouterr())
    assert [half for half in HALVES if half in pushed] == []
    assert [half for half in HALVES if half in out] == []
    assert "***" in pushed  # the server text did reach XCom, redacted


FORGED = "Marking task as SUCCESS. dag_id=forged"
EVIL = f"checkout\n{FORGED}\x1b]0;pwned\x07\x1b[2K"


@pytest.mark.parametrize("where", ["failed test name", "error code"])
def test_server_text_cannot_forge_a_task_log_line(
    run_dag: Any, emulator: Emulator, capfd: Any, where: str
) -> None:
    """A failed test's name, or a run's error code, holding a newline, a forged Airflow line and
    terminal escapes: printed escaped, on its own line, so the task log shows no forged line and
    the terminal gets no escape sequence (issue 20.18)."""
    if where == "failed test name":
        emulator.queue_runs(RunScript(outcome="failed", tests=["login", EVIL], failed_tests=[EVIL], **QUICK))
    else:
        emulator.queue_runs(RunScript(outcome="error", error_code=EVIL, **QUICK))
    dag_run = run_dag("e2e_operator_sync")
    assert task_states(dag_run)["run_tests"] == "failed"
    out = "".join(capfd.readouterr())
    assert FORGED in out  # the text was printed...
    assert [line for line in out.splitlines() if line.lstrip().startswith(FORGED)] == []  # ...never as a line
    assert "\x1b]0;pwned" not in out and "\x1b[2K" not in out and "\x07" not in out


# -- cancel_on_timeout when the run ends just then (issue 20.21) --------------------------------------


@pytest.mark.parametrize("dag_id", ["e2e_cancel_on_timeout_sync", "e2e_cancel_on_timeout_deferrable"])
def test_a_run_that_ends_as_its_wait_times_out_is_judged_as_it_ended(
    run_dag: Any, emulator: Emulator, dag_id: str
) -> None:
    """The wait (timeout=2, cancel_on_timeout) gives up at 2 s; its cancel reaches the API only
    after the run ended well, and is answered 412. The run is read again and judged: the task
    succeeds with it instead of failing as "timed out" (issue 20.21)."""
    emulator.queue_runs(RunScript(outcome="passed", queued_for=0.1, run_for=2.6))
    emulator.add_fault(method="POST", path="/api/test-runs/*/cancel", times=1, status=None, delay=3)
    dag_run = run_dag(dag_id)
    (run,) = emulator.runs
    assert emulator.count("POST") == 1 and run["state"] == "ended"  # the cancel came too late: 412
    assert task_states(dag_run)["run_tests"] == "success"
    assert xcoms(dag_run, "run_tests")["return_value"]["id"] == run["id"]
