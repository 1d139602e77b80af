"""
### Wait for a test run that someone else triggered

The cross-team pattern: another team (or another DAG, or CI) starts an Empirical run and
passes its id, e.g. `{"test_run_id": 456}`. This DAG waits for that run in reschedule
mode (the worker slot is freed between checks) and hands the summary on.
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "60"))

with DAG(
    dag_id="empirical_wait_for_test_run",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    params={"test_run_id": Param(1, type="integer", minimum=1, description="Empirical test run id")},
    tags=["empirical", "example"],
) as dag:
    EmpiricalTestRunSensor(
        task_id="wait_for_test_run",
        test_run_id="{{ params.test_run_id }}",
        mode="reschedule",
        poke_interval=POLL_INTERVAL,
        timeout=6 * 60 * 60,
    )
