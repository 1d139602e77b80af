"""The API key never leaks: not in logs or console output, XCom, rendered fields, exception
messages, reprs or trigger kwargs, even when the server echoes the Authorization header back.
It travels only as `Authorization: Bearer ...` to the configured host.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.utils.session import create_session

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger
from tests.conftest import API_KEY, QUICK

pytestmark = pytest.mark.e2e


def _all_rows(model: Any) -> str:
    with create_session() as session:
        return " ".join(repr(vars(row)) for row in session.query(model).all())


def test_key_leaks_nowhere_across_passing_failing_and_broken_runs(
    run_dag: Any, emulator: Emulator, airflow_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    emulator.queue_runs(RunScript(**QUICK), RunScript(outcome="failed", **QUICK), RunScript(**QUICK))
    runs = [run_dag("e2e_operator_deferrable"), run_dag("e2e_operator_sync")]
    # a server error whose body echoes the Authorization header, then a revoked key mid-wait
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=1, status=500, echo_auth=True)
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=401)
    runs.append(run_dag("e2e_secrets_sensor"))
    emulator.reset()
    emulator.add_fault(method="PUT", path="/api/test-runs", times=1, status=500, echo_auth=True)
    emulator.add_fault(method="PUT", path="/api/test-runs", times=1, status=401)
    runs += [run_dag("e2e_operator_sync"), run_dag("e2e_operator_sync")]
    assert [str(r.state) for r in runs] == ["success", "failed", "failed", "failed", "failed"]

    out, err = capfd.readouterr()
    # dag.test() sends task logs to the console, unmasked: a stricter check than log files
    assert "***" in out + err  # the echoed header was seen, and redacted
    assert "Task failed with exception" in out + err and API_KEY not in out + err
    for path in airflow_home.rglob("*.log"):  # and any log file Airflow did write
        assert API_KEY not in path.read_text(errors="replace"), path
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.trigger import Trigger

    from tests.airflow_helpers import _xcom_model

    stored = _all_rows(_xcom_model()) + _all_rows(RenderedTaskInstanceFields) + _all_rows(Trigger)
    assert "test_run_id" in stored and API_KEY not in stored


def test_key_not_in_reprs_errors_or_trigger_kwargs(empirical_conn: Emulator) -> None:
    hook = EmpiricalHook()
    run_id = hook.trigger_test_run("production")["id"]
    trigger = EmpiricalTestRunTrigger(test_run_id=run_id, end_time=0)
    texts = [repr(hook), repr(hook.config), repr(hook.client), repr(trigger), json.dumps(trigger.serialize())]
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=403, echo_auth=True)
    with pytest.raises(Exception) as info:
        hook.get_test_run(run_id)
    texts += [str(info.value), repr(info.value)]
    assert all(API_KEY not in text for text in texts)


def test_key_travels_only_as_bearer_header(empirical_conn: Emulator) -> None:
    hook = EmpiricalHook()
    run_id = hook.trigger_test_run("production", metadata={"a": "b"})["id"]
    hook.get_test_run(run_id)
    list(hook.list_test_runs())
    for request in empirical_conn.requests:
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        others = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert API_KEY not in json.dumps([others, request.query, request.json, request.path])
