"""For the deployment tier only: an operator that waits by polling in the worker, to be killed."""

from __future__ import annotations

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator

with DAG(
    dag_id="empirical_polling_kill",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["empirical", "test"],
) as dag:
    EmpiricalTriggerTestRunOperator(
        task_id="run_tests",
        environment="production",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=1,
        timeout=600,
    )
