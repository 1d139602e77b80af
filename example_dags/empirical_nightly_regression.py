"""
### Nightly regression suite on Empirical

Every night at 02:00 (Europe/Berlin) this DAG triggers the full Playwright suite on
`production`, waits for it in the triggerer (deferrable sensor, no worker slot held),
then reports the result.

* `trigger_tests` sends the run with tags and build metadata rendered from templates and
  pushes the run id (return value) and its dashboard URL (XCom `test_run_url`).
* `wait_for_tests` defers to `EmpiricalTestRunTrigger`; it fails if tests failed, the run
  errored or was cancelled.
* `report` reads the summary (id, state, counts, duration, url) from XCom.

Set `EMPIRICAL_POLL_INTERVAL` (seconds, default 60) to poll faster, as the demo does.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "60"))

with DAG(
    dag_id="empirical_nightly_regression",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Berlin"),
    catchup=False,
    doc_md=__doc__,
    params={"environment": "production"},
    tags=["empirical", "example"],
) as dag:
    trigger_tests = EmpiricalTriggerTestRunOperator(
        task_id="trigger_tests",
        environment="{{ params.environment }}",
        tags=["@regression"],
        build={"version": "nightly-{{ ds_nodash }}", "branch": "main"},
        metadata={"suite": "nightly", "logical_date": "{{ ds }}"},
    )

    wait_for_tests = EmpiricalTestRunSensor(
        task_id="wait_for_tests",
        test_run_id=trigger_tests.output,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=3 * 60 * 60,
    )

    @task
    def report(summary: dict[str, Any]) -> dict[str, Any]:
        """Print the run summary; a Slack or e-mail task would go here."""
        print(
            f"Empirical test run {summary['id']}: {summary['state']}, "
            f"{summary.get('success_count')} passed, {summary.get('failed_count')} failed, "
            f"{summary.get('flaky_count')} flaky, {summary.get('skipped_count')} skipped - {summary['url']}"
        )
        return summary

    report(wait_for_tests.output)
