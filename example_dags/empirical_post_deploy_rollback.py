"""
### Roll back a deploy whose smoke tests failed, and cancel the tests still running

Right after a deploy, two Empirical runs start: first the full regression suite, which nobody
waits for here (`full_regression`, `wait_for_completion=False`, done in a second), then the
`@smoke` tests, which gate the deploy (`smoke_tests`, deferrable).
Both run at the same time. When the smoke tests fail, `rollback` runs
(`trigger_rule="one_failed"`) and `cancel_full_regression` cancels the regression run: it tests
a build that is no longer deployed. `EmpiricalCancelTestRunOperator` succeeds whether it
cancelled the run or the run had already ended, and the reason is recorded by Empirical.

When the smoke tests pass, `rollback` and `cancel_full_regression` are skipped and the regression
run goes on; a later DAG can wait for it with `EmpiricalTestRunSensor`.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_empirical.operators.empirical import (
    EmpiricalCancelTestRunOperator,
    EmpiricalTriggerTestRunOperator,
)

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "30"))

with DAG(
    dag_id="empirical_post_deploy_rollback",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["empirical", "example"],
) as dag:

    @task
    def deploy() -> dict[str, Any]:
        """Stand-in for your deploy step: return what was deployed."""
        return {"commit": "3f2c1ab", "base_url": "https://preview-1234.example.com"}

    deployed = deploy()
    overrides = [{"name": "BASE_URL", "value": deployed["base_url"]}]

    full_regression = EmpiricalTriggerTestRunOperator(
        task_id="full_regression",
        environment="staging",
        tags=["@regression"],
        environment_variables_overrides=overrides,
    )
    smoke_tests = EmpiricalTriggerTestRunOperator(
        task_id="smoke_tests",
        environment="staging",
        tags=["@smoke"],
        environment_variables_overrides=overrides,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=30 * 60,
    )

    @task(trigger_rule="one_failed")
    def rollback() -> None:
        """Stand-in for your rollback step."""
        print("Smoke tests failed: rolling the deploy back")

    cancel_full_regression = EmpiricalCancelTestRunOperator(
        task_id="cancel_full_regression",
        test_run_id=full_regression.output,
        reason="Smoke tests failed after deploy {{ run_id }}: rolled back",
    )
    deployed >> full_regression >> smoke_tests >> rollback() >> cancel_full_regression
