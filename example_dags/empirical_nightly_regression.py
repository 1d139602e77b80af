"""
### Nightly regression suite on Empirical

Every night at 02:00 (Europe/Berlin) this DAG triggers the full Playwright suite on
`production`, waits for it in the triggerer (deferrable sensor, no worker slot held),
then reports the result.

* `trigger_tests` sends the run with tags and build metadata rendered from templates and
  pushes the run id (return value) and its dashboard URL (XCom `test_run_url`).
* `wait_for_tests` defers to `EmpiricalTestRunTrigger`; it fails if tests failed, the run
  errored or was cancelled. When the run passed it updates the asset
  `empirical://demo/production/regression` (its `outlets`): the event's `extra` holds the
  run id, URL, state and counts, and `empirical_release_after_tests` is scheduled on it.
* `report` reads the summary (id, state, counts, duration, url) from XCom.

Works when scheduled and when triggered by hand: a manual run on Airflow 3 has no logical
date (`{{ ds }}` is undefined there), so the build version comes from `dag_run.run_after`,
when the run was asked for, with `dag_run.execution_date` as the Airflow 2 fallback.

Set `EMPIRICAL_POLL_INTERVAL` (seconds, default 60) to poll faster, as the demo does.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "60"))
# Updated when the nightly suite passes; a Dataset on Airflow 2.
NIGHTLY_REGRESSION = Asset("empirical://demo/production/regression")
# When the run was asked for, scheduled or manual: `run_after` on Airflow 3, where a manual run
# has no logical date; Airflow 2 has no `run_after` (undefined -> default) but always a date.
RUN_AFTER = "(dag_run.run_after | default(dag_run.execution_date))"

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
        build={"version": "nightly-{{ " + RUN_AFTER + ".strftime('%Y%m%d') }}", "branch": "main"},
        metadata={"suite": "nightly", "run_after": "{{ " + RUN_AFTER + ".isoformat() }}"},
    )

    wait_for_tests = EmpiricalTestRunSensor(
        task_id="wait_for_tests",
        test_run_id=trigger_tests.output,
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=3 * 60 * 60,
        outlets=[NIGHTLY_REGRESSION],
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
