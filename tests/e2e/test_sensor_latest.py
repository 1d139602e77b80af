"""The sensor waits for "the newest run on production / main" instead of a run id (issue 17.2)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.errors import EmpiricalValidationError
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
from tests.airflow_helpers import task_states, xcoms
from tests.conftest import QUICK

HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


def test_latest_matching_run_matches_the_slug_on_the_items(empirical_conn: Emulator) -> None:
    hook = EmpiricalHook()
    production = hook.trigger_test_run("production")["id"]
    hook.trigger_test_run("staging")
    hook.trigger_test_run("production", branch="feature/x")
    found = hook.latest_test_run(environment="production", branch="main", created_after=HOUR_AGO)
    assert found is not None and found["id"] == production
    assert hook.latest_test_run(environment="development", created_after=HOUR_AGO) is None
    later = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert hook.latest_test_run(environment="production", created_after=later) is None
    list_calls = [r for r in empirical_conn.requests if r.method == "GET" and r.path == "/api/test-runs"]
    assert all(r.query.get("branch") in (None, "main") for r in list_calls)  # the API filters the branch


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "test_run_id"),
        ({"test_run_id": 3, "environment": "production"}, "test_run_id"),
        ({"environment": "production", "created_after": "yesterday"}, "created_after"),
    ],
)
def test_exactly_one_of_a_run_id_or_filters(
    empirical_conn: Emulator, kwargs: dict[str, Any], field: str
) -> None:
    sensor = EmpiricalTestRunSensor(task_id="s", **kwargs)
    with pytest.raises(EmpiricalValidationError) as info:
        sensor.poke({})
    assert info.value.field == field and empirical_conn.count() == 0


def test_no_matching_run_yet_keeps_waiting(empirical_conn: Emulator) -> None:
    EmpiricalHook().trigger_test_run("staging")
    sensor = EmpiricalTestRunSensor(task_id="s", environment="production", created_after=HOUR_AGO.isoformat())
    assert sensor.poke({}) is False and sensor.poke({}) is False
    run_id = EmpiricalHook().trigger_test_run("production")["id"]
    assert sensor.poke({}) is False  # found, not finished yet
    assert sensor._waiter.test_run_id == run_id


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id", ["e2e_latest_poke", "e2e_latest_reschedule", "e2e_latest_deferrable"])
def test_a_dag_waits_for_the_run_ci_starts_later(
    run_dag: Any, emulator: Emulator, dag_id: str, capfd: pytest.CaptureFixture[str]
) -> None:
    if dag_id == "e2e_latest_reschedule" and not _durable_task_state():
        # XCom is wiped at every reschedule before Airflow 3.3: the sensor refuses, naming `mode`
        dag_run = run_dag(dag_id)
        assert task_states(dag_run)["wait_for_tests"] == "failed" and emulator.count() == 0
        out, err = capfd.readouterr()
        assert (
            "`mode='reschedule'` with `environment` / `branch` / `created_after` needs Airflow 3.3+"
            in out + err
        )
        return
    emulator.queue_runs(RunScript(**QUICK), RunScript(**QUICK))
    hook = EmpiricalHook()
    hook.trigger_test_run("staging")  # another environment: never chosen
    later = threading.Timer(2.5, lambda: hook.trigger_test_run("production", branch="main"))
    later.start()
    try:
        dag_run = run_dag(dag_id)
    finally:
        later.join()
        hook.close()
    assert task_states(dag_run)["wait_for_tests"] == "success"
    production = [r for r in emulator.runs if r["environment_slug"] == "production"]
    pushed = xcoms(dag_run, "wait_for_tests")
    assert (
        pushed["test_run_id"] == production[0]["id"] and pushed["return_value"]["id"] == production[0]["id"]
    )


def _durable_task_state() -> bool:
    """Airflow 3.3+ hands tasks a durable task state store (the sensor keeps its choice there)."""
    from importlib import metadata

    major, minor = (int(part) for part in metadata.version("apache-airflow").split(".")[:2])
    return (major, minor) >= (3, 3)
