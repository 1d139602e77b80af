"""Snoozes and the pass policy in real DAG runs against the emulator, in both run shapes.

Empirical's dashboard shows a run whose only failures are snoozed as Passed: so must our tasks
(issue 23). The emulator serves `failed_count_after_snoozing` and the rows' `snooze_info` as
Empirical's own suite shows them.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.airflow_helpers import task_states, xcoms
from tests.conftest import QUICK

pytestmark = pytest.mark.e2e

FAILING = "signs in with email"
SNOOZED = "pays with card"
ALL_SNOOZED = RunScript(outcome="failed", total=24, failed_tests=[FAILING], snoozed_tests=True, **QUICK)
PARTLY_SNOOZED = RunScript(
    outcome="failed", total=24, failed_tests=[FAILING, SNOOZED], snoozed_tests=[SNOOZED], **QUICK
)
WAITS = [
    ("e2e_operator_sync", "run_tests", "run_tests"),
    ("e2e_operator_deferrable", "run_tests", "run_tests"),
    ("e2e_sensor_deferrable", "trigger_tests", "wait_for_tests"),
]


@pytest.mark.parametrize("shape", ["nested", "flat"])
@pytest.mark.parametrize(("dag_id", "trigger_task", "wait_task"), WAITS)
def test_an_all_snoozed_run_passes_as_on_the_dashboard(
    run_dag: Any, emulator: Emulator, shape: str, dag_id: str, trigger_task: str, wait_task: str
) -> None:
    emulator.set_shape(shape)
    emulator.queue_runs(ALL_SNOOZED)
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)[wait_task] == "success" and str(dag_run.state) == "success"
    summary = xcoms(dag_run, wait_task)["return_value"]
    assert summary["outcome"] == "success" and summary["failed_count"] == 1
    assert summary["failed_count_after_snoozing"] == 0 and summary["failed_tests"] == []
    if summary["snoozed_tests"] is not None:  # flat answers carry no rows; the cases fallback may
        assert [case["name"] for case in summary["snoozed_tests"]] == [FAILING]


@pytest.mark.parametrize("shape", ["nested", "flat"])
@pytest.mark.parametrize(("dag_id", "trigger_task", "wait_task"), WAITS)
def test_a_partly_snoozed_run_fails_naming_only_the_unsnoozed_test(
    run_dag: Any,
    emulator: Emulator,
    capfd: pytest.CaptureFixture[str],
    shape: str,
    dag_id: str,
    trigger_task: str,
    wait_task: str,
) -> None:
    emulator.set_shape(shape)
    emulator.queue_runs(PARTLY_SNOOZED)
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)[wait_task] == "failed"
    out, err = capfd.readouterr()
    text = out + err
    assert "1 test(s) failed" in text and f"'{FAILING}'" in text
    if shape == "nested":  # the rows name the snoozed test, in the log only
        assert f"SNOOZED {SNOOZED}" in text and f"'{SNOOZED}'" not in text


def test_honor_snoozes_false_counts_every_failure(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(ALL_SNOOZED)
    dag_run = run_dag("e2e_operator_raw_failures")
    assert task_states(dag_run)["run_tests"] == "failed"


def test_max_failed_tests_tolerates_that_many_and_is_templated(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(outcome="failed", total=24, failed_tests=[FAILING], **QUICK))
    tolerated = run_dag("e2e_operator_tolerant")
    assert task_states(tolerated)["run_tests"] == "success"
    assert xcoms(tolerated, "run_tests")["return_value"]["outcome"] == "failed"
    emulator.queue_runs(RunScript(outcome="failed", total=24, failed_tests=[FAILING, SNOOZED], **QUICK))
    assert task_states(run_dag("e2e_operator_tolerant"))["run_tests"] == "failed"
    emulator.queue_runs(PARTLY_SNOOZED)  # 1 counts: tolerated (its snooze covers later runs too)
    assert task_states(run_dag("e2e_operator_tolerant"))["run_tests"] == "success"
    bad = run_dag("e2e_operator_tolerant", {"max_failed": "-1"})
    assert task_states(bad)["run_tests"] == "failed" and emulator.count("PUT") == 3  # refused before any PUT


def test_fail_on_flaky_fails_a_run_with_flaky_tests(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(total=24, flaky_tests=["removes an item"], **QUICK))
    assert task_states(run_dag("e2e_operator_no_flaky"))["run_tests"] == "failed"
    emulator.queue_runs(RunScript(total=24, **QUICK))
    assert task_states(run_dag("e2e_operator_no_flaky"))["run_tests"] == "success"


def _counts_only(emulator: Emulator, run_id: int, fields: dict[str, Any]) -> None:
    """The run answers with counts only (no per-test rows, no cases endpoint), as a list item would."""
    run = {"id": run_id, "state": "ended", "total_count": 3, "success_count": 2, "skipped_count": 0}
    body = {"data": {"test_run": {**run, "flaky_count": 0, **fields}}}
    emulator.add_fault(method="GET", path=f"/api/test-runs/{run_id}", times=-1, status=200, body=body)
    emulator.add_fault(method="GET", path="/api/v2/test-runs/*/cases", times=-1, status=404)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"failed_count": 1, "failed_count_after_snoozing": 0},
            "success",
        ),  # judged by the after-snoozing count
        ({"failed_count": 1, "failed_count_after_snoozing": 1}, "failed"),
        ({"failed_count": 1}, "failed"),  # neither field: every failure counts (fail closed)
    ],
)
def test_counts_only_answers_are_judged_by_the_after_snoozing_count(
    run_dag: Any, emulator: Emulator, fields: dict[str, Any], expected: str
) -> None:
    _counts_only(emulator, 1, fields)  # the run the DAG's PUT creates (ids start at 1 after a reset)
    dag_run = run_dag("e2e_operator_sync")
    assert [run["id"] for run in emulator.runs] == [1]
    assert task_states(dag_run)["run_tests"] == expected


def test_a_dag_snoozes_the_failures_and_the_next_run_passes(run_dag: Any, emulator: Emulator) -> None:
    failing = RunScript(outcome="failed", total=24, failed_tests=[FAILING, SNOOZED], **QUICK)
    emulator.queue_runs(failing, failing)  # the same two tests fail in both runs
    dag_run = run_dag("e2e_snooze_and_run_again")
    assert task_states(dag_run) == {
        "run_tests": "success",
        "snooze_failures": "success",
        "run_again": "success",
    }
    posts = [r for r in emulator.requests if r.method == "POST" and r.path == "/api/snoozes"]
    assert len(posts) == 1
    body = posts[0].json
    first, second = emulator.runs
    assert sorted(body["test_ids"]) == sorted(
        case["pw_test_id"] for case in first["tests"] if case["status"] == "failed"
    )
    assert body["snooze_until"].endswith("Z") and body["created_from_test_run_id"] == first["id"]
    assert body["scoped_to_environment_id"] == emulator.run(first["id"])["environment_id"]
    again = xcoms(dag_run, "run_again")["return_value"]
    assert (
        again["id"] == second["id"]
        and again["failed_count"] == 2
        and again["failed_count_after_snoozing"] == 0
    )
    assert xcoms(dag_run, "snooze_failures")["return_value"] == emulator.snoozes[0]["id"]
