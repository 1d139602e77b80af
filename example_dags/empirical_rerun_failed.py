"""
### Re-run only the failed tests of a run

Trigger by hand with the id of a finished run, e.g. `{"rerun_source_id": 456}`.
Empirical re-executes only the tests that failed in that run, across `total_shards`
shards, and the operator waits for the result (polling in the worker; on Airflow 3.3+ a
retried task re-attaches to its in-flight run instead of starting another).
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "30"))

with DAG(
    dag_id="empirical_rerun_failed",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    params={
        "rerun_source_id": Param(
            1, type="integer", minimum=1, description="Run whose failed tests to re-run"
        ),
        "environment": Param("production", type="string"),
        "total_shards": Param(2, type="integer", minimum=1),
    },
    tags=["empirical", "example"],
) as dag:
    EmpiricalTriggerTestRunOperator(
        task_id="rerun_failed_tests",
        environment="{{ params.environment }}",
        rerun_source_id="{{ params.rerun_source_id }}",
        rerun_only_failed=True,
        total_shards="{{ params.total_shards }}",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=POLL_INTERVAL,
        retries=2,
    )
