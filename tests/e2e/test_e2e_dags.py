"""Real DAG runs (`dag.test()`) against the emulator over loopback: every way of waiting,
every outcome, templating, XCom, the extra link and bad input.

Airflow's start-up cost is paid once for the module (first `dag.test()` ~10 s).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.airflow_helpers import load_dags, rendered_fields, task_states, xcoms
from tests.conftest import QUICK

pytestmark = pytest.mark.e2e


WAITS = [
    ("e2e_operator_sync", "run_tests", "run_tests"),
    ("e2e_operator_deferrable", "run_tests", "run_tests"),
    ("e2e_sensor_poke", "trigger_tests", "wait_for_tests"),
    ("e2e_sensor_reschedule", "trigger_tests", "wait_for_tests"),
    ("e2e_sensor_deferrable", "trigger_tests", "wait_for_tests"),
]
OUTCOMES = [("passed", "success"), ("failed", "failed"), ("error", "failed"), ("cancelled", "failed")]


@pytest.mark.parametrize("shape", ["nested", "flat"])  # the run answer's two shapes (issue 11)
@pytest.mark.parametrize(("outcome", "expected"), OUTCOMES)
@pytest.mark.parametrize(("dag_id", "trigger_task", "wait_task"), WAITS)
def test_each_way_of_waiting_reports_each_outcome(
    run_dag: Any,
    emulator: Emulator,
    dag_id: str,
    trigger_task: str,
    wait_task: str,
    outcome: str,
    expected: str,
    shape: str,
) -> None:
    emulator.set_shape(shape)
    emulator.queue_runs(RunScript(outcome=outcome, **QUICK))
    dag_run = run_dag(dag_id)
    (run,) = emulator.runs
    assert task_states(dag_run)[wait_task] == expected
    assert str(dag_run.state) == expected
    pushed = xcoms(dag_run, trigger_task)
    assert pushed["test_run_id"] == run["id"]
    assert pushed["test_run_url"] == f"{emulator.url}/demo/test-runs/{run['id']}"
    assert pushed["empirical_conn_id"] == "empirical_default"  # the UI plugin reads the run with it
    assert emulator.count("PUT") == 1
    if expected == "success":
        summary = xcoms(dag_run, wait_task)["return_value"]
        assert summary["id"] == run["id"] and summary["state"] == "ended" and summary["outcome"] == "success"
        assert summary["failed_count"] == 0 and summary["success_count"] == run["success_count"]
        assert summary["url"] == pushed["test_run_url"] and summary["duration"] == 500
    if trigger_task != wait_task:
        assert pushed["return_value"] == run["id"]


@pytest.mark.parametrize(
    ("dag_id", "task_id"), [("e2e_operator_lenient", "run_tests"), ("e2e_sensor_lenient", "wait_for_tests")]
)
def test_failed_tests_do_not_fail_the_task_when_told(
    run_dag: Any, emulator: Emulator, dag_id: str, task_id: str
) -> None:
    emulator.queue_runs(RunScript(outcome="failed", **QUICK))
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)[task_id] == "success"
    summary = xcoms(dag_run, task_id)["return_value"]
    assert summary["outcome"] == "failed" and summary["failed_count"] > 0


@pytest.mark.parametrize(
    ("dag_id", "trigger_task", "wait_task"),
    [
        ("e2e_operator_timeout", "run_tests", "run_tests"),
        ("e2e_operator_deferrable_timeout", "run_tests", "run_tests"),
        ("e2e_sensor_deferrable_timeout", "trigger_tests", "wait_for_tests"),
    ],
)
def test_timeout_fails_but_keeps_the_run_id(
    run_dag: Any, emulator: Emulator, dag_id: str, trigger_task: str, wait_task: str
) -> None:
    emulator.queue_runs(RunScript(outcome="never", queued_for=0.1, run_for=60))
    started = time.monotonic()
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)[wait_task] == "failed"
    assert xcoms(dag_run, trigger_task)["test_run_id"] == emulator.runs[0]["id"]
    assert emulator.count("PUT") == 1
    assert time.monotonic() - started < 30


def test_operator_deferrable_return_value_becomes_the_summary(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("e2e_operator_deferrable")
    pushed = xcoms(dag_run, "run_tests")
    assert pushed["return_value"]["id"] == pushed["test_run_id"]
    link = pushed.get("_link_EmpiricalTestRunLink")
    if link is not None:  # Airflow 3 stores the extra link's URL when the task ends
        assert link == pushed["test_run_url"]


def test_every_field_is_templated_including_nested_jinja_and_xcomargs(
    run_dag: Any, emulator: Emulator
) -> None:
    dag_run = run_dag("e2e_templating")
    assert task_states(dag_run)["trigger_tests"] == "success"
    (request,) = [r for r in emulator.requests if r.method == "PUT"]
    body = request.json
    ds = dag_run.logical_date.strftime("%Y-%m-%d")
    assert body["environment"] == "staging"
    assert body["build"] == {"commit": "c0ffee", "version": f"v-{ds.replace('-', '')}"}
    assert body["metadata"] == {
        "airflow_dag_id": "mine-wins",
        "airflow_run_id": dag_run.run_id,
        "airflow_task_id": "trigger_tests",
        "airflow_try_number": 1,
        "logical_date": ds,
        "commit": "c0ffee",
    }
    assert body["environment_variables_overrides"] == [
        {"name": "BASE_URL", "value": "https://preview.example"},
        {"name": "RUN", "value": dag_run.run_id},
    ]
    assert body["tags"] == ["@smoke", "@critical"]
    assert body["project_id"] == 1 and body["send_notifications"] is False
    assert body["total_shards"] == 3 and body["github_actor"] == "octocat"
    rendered = rendered_fields(dag_run, "trigger_tests")
    assert rendered["environment"] == "staging" and rendered["tags"] == ["@smoke", "@critical"]
    assert "c0ffee" in json.dumps(rendered["build"])


def test_rerun_fields_render_from_params(run_dag: Any, emulator: Emulator, dagbag: Any) -> None:
    emulator.queue_runs(RunScript(**QUICK))
    source = run_dag("e2e_operator_sync")
    assert str(source.state) == "success"
    dag_run = run_dag("e2e_templating_rerun", conf={"source": emulator.runs[0]["id"]})
    assert task_states(dag_run)["trigger_tests"] == "success"
    body = [r.json for r in emulator.requests if r.method == "PUT"][-1]
    assert body["branch"] == "feature/login" and body["rerun_only_failed"] is True
    assert body["rerun_source_id"] == emulator.runs[-1]["id"] - 1


@pytest.mark.parametrize(
    ("dag_id", "task_id"), [("e2e_bad_input", "trigger_tests"), ("e2e_sensor_bad_id", "wait_for_tests")]
)
def test_bad_input_fails_the_task_before_any_request(
    run_dag: Any, emulator: Emulator, dag_id: str, task_id: str
) -> None:
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)[task_id] == "failed"
    assert emulator.count() == 0


# -- the example DAGs users copy --

EXAMPLES = [
    "empirical_nightly_regression",
    "empirical_post_deploy_rollback",
    "empirical_post_deploy_smoke",
    "empirical_release_after_tests",
    "empirical_rerun_failed",
    "empirical_wait_for_test_run",
    "empirical_on_production_run",
    "empirical_triage_failed_tests",
]


def test_examples_parse_with_docs_and_no_api_calls(dagbag: Any, empirical_conn: Emulator) -> None:
    from tests.conftest import ROOT

    bag = load_dags(str(ROOT / "example_dags"))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == sorted(EXAMPLES)
    for dag_id in EXAMPLES:
        assert len(bag.get_dag(dag_id).doc_md or "") > 100, dag_id
    assert empirical_conn.count() == 0  # parsing sends nothing


def test_example_nightly_regression(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("empirical_nightly_regression")
    assert task_states(dag_run) == {
        "trigger_tests": "success",
        "wait_for_tests": "success",
        "report": "success",
    }
    summary = xcoms(dag_run, "report")["return_value"]
    assert summary["state"] == "ended" and summary["url"].endswith(f"/test-runs/{summary['id']}")
    body = emulator.trigger_body(summary["id"])
    assert body["tags"] == ["@regression"] and body["metadata"]["suite"] == "nightly"
    assert body["build"]["version"].startswith("nightly-")


def test_example_post_deploy_smoke(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("empirical_post_deploy_smoke")
    assert task_states(dag_run) == {"deploy": "success", "smoke_tests": "success"}
    (body,) = [r.json for r in emulator.requests if r.method == "PUT"]  # after the environment check
    assert body["environment_variables_overrides"] == [
        {"name": "BASE_URL", "value": "https://preview-1234.example.com"}
    ]
    assert body["build"] == {
        "url": "https://ci.example.com/builds/1234",
        "commit": "3f2c1ab",
        "branch": "main",
    }
    assert body["tags"] == ["@smoke"]


@pytest.mark.parametrize("smoke", ["passed", "failed"])
def test_example_post_deploy_rollback(run_dag: Any, emulator: Emulator, smoke: str) -> None:
    emulator.queue_runs(
        RunScript(outcome="never", queued_for=0.1, run_for=600), RunScript(outcome=smoke, **QUICK)
    )
    dag_run = run_dag("empirical_post_deploy_rollback")
    regression, _smoke_run = emulator.runs
    cancels = [r for r in emulator.requests if r.method == "POST" and r.path.endswith("/cancel")]
    states = task_states(dag_run)
    if smoke == "passed":
        assert states == {
            "deploy": "success",
            "full_regression": "success",
            "smoke_tests": "success",
            "rollback": "skipped",
            "cancel_full_regression": "skipped",
        }
        assert cancels == []
        return
    assert states["smoke_tests"] == "failed" and states["rollback"] == "success"
    assert states["cancel_full_regression"] == "success"
    (cancel,) = cancels
    assert cancel.path == f"/api/test-runs/{regression['id']}/cancel"
    assert cancel.json["reason"] == f"Smoke tests failed after deploy {dag_run.run_id}: rolled back"
    assert emulator.runs[0]["state"] in ("cancelling", "cancelled")


def test_example_rerun_failed_and_cross_team_wait(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(outcome="failed", **QUICK), RunScript(**QUICK))
    source = run_dag("e2e_operator_lenient")
    source_id = emulator.runs[0]["id"]
    assert str(source.state) == "success"
    rerun = run_dag("empirical_rerun_failed", conf={"rerun_source_id": source_id})
    assert task_states(rerun) == {"rerun_failed_tests": "success"}
    body = emulator.requests[-2 if emulator.requests[-1].method == "GET" else -1]
    rerun_body = [r.json for r in emulator.requests if r.method == "PUT"][-1]
    assert rerun_body["rerun_source_id"] == source_id and rerun_body["rerun_only_failed"] is True
    assert rerun_body["total_shards"] == 2 and body is not None
    waited = run_dag("empirical_wait_for_test_run", conf={"test_run_id": source_id})
    assert task_states(waited) == {"wait_for_test_run": "failed"}  # that run had failed tests


# -- retries: durable execution re-attaches instead of triggering twice --


def _durable_supported() -> bool:
    from airflow.providers.common.compat.sdk import ResumableJobMixin

    return not ResumableJobMixin.__module__.startswith("airflow.providers.common.compat")


def test_retry_reattaches_to_the_in_flight_run(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(queued_for=0.1, run_for=2.0), RunScript(**QUICK))
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=1, status=401)  # first try dies waiting
    dag_run = run_dag("e2e_operator_durable")
    assert task_states(dag_run)["run_tests"] == "success"
    if not _durable_supported():  # the documented fallback: no task_state_store, a new run per try
        assert emulator.count("PUT") == 2
        return
    assert emulator.count("PUT") == 1
    summary = xcoms(dag_run, "run_tests")["return_value"]
    assert summary["id"] == emulator.runs[0]["id"] and summary["outcome"] == "success"


def test_retry_after_a_failed_run_triggers_a_fresh_one(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(outcome="error", **QUICK), RunScript(**QUICK))
    dag_run = run_dag("e2e_operator_durable")
    assert task_states(dag_run)["run_tests"] == "success"
    assert emulator.count("PUT") == 2
    assert xcoms(dag_run, "run_tests")["return_value"]["id"] == emulator.runs[1]["id"]


def test_a_passing_run_puts_its_id_and_build_in_the_asset_event(run_dag: Any, emulator: Emulator) -> None:
    try:
        from airflow.models.asset import AssetEvent, AssetModel
    except ImportError:
        pytest.skip("Airflow 2: the Dataset equivalent is covered by tests/unit/test_assets.py")
    from airflow.utils.session import create_session

    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("e2e_operator_outlets")
    assert task_states(dag_run)["run_tests"] == "success"
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(
                AssetModel.uri == "empirical://demo/e2e/outlets", AssetEvent.source_run_id == dag_run.run_id
            )
            .all()
        )
        (event,) = events
        extra = dict(event.extra)
    run = emulator.runs[0]
    assert extra["test_run_id"] == run["id"] and extra["outcome"] == "success" and extra["state"] == "ended"
    assert extra["commit"] == "c0ffee" and extra["build_version"] == "v-42"
    assert extra["url"].endswith(f"/test-runs/{run['id']}") and extra["failed_count"] == 0
