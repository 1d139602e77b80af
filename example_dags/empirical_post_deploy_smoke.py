"""
### Smoke tests after a deploy

An upstream `deploy` task returns what it deployed (build URL, commit, preview URL).
`smoke_tests` passes it to Empirical through templates and an XComArg: the build
information in `build`, and `BASE_URL` in `environment_variables_overrides`, so the
`@smoke` tests run against the freshly deployed preview. The operator waits for the run
itself (`wait_for_completion=True`, deferrable) and fails the DAG run if a test fails.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "30"))

with DAG(
    dag_id="empirical_post_deploy_smoke",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["empirical", "example"],
) as dag:

    @task
    def deploy() -> dict[str, Any]:
        """Stand-in for your deploy step: return what was deployed."""
        return {
            "build_url": "https://ci.example.com/builds/1234",
            "commit": "3f2c1ab",
            "branch": "main",
            "base_url": "https://preview-1234.example.com",
        }

    deployed = deploy()

    smoke_tests = EmpiricalTriggerTestRunOperator(
        task_id="smoke_tests",
        environment="staging",
        build={
            "url": "{{ ti.xcom_pull(task_ids='deploy')['build_url'] }}",
            "commit": "{{ ti.xcom_pull(task_ids='deploy')['commit'] }}",
            "branch": "{{ ti.xcom_pull(task_ids='deploy')['branch'] }}",
        },
        environment_variables_overrides=[{"name": "BASE_URL", "value": deployed["base_url"]}],
        tags=["@smoke"],
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=30 * 60,
    )
    deployed >> smoke_tests
