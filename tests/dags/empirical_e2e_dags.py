"""DAGs for the end-to-end tests: one per way of waiting, plus templating and bad input.

The outcome of each run is scripted in the emulator by the test, not here.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_empirical.operators.empirical import (
    EmpiricalCancelTestRunOperator,
    EmpiricalSnoozeTestsOperator,
    EmpiricalTriggerTestRunOperator,
)
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

POLL = 1.0
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False, tags=["e2e"])


def operator_waits(dag_id: str, environment: str = "production", **kwargs: Any) -> DAG:
    with _dag(dag_id) as dag:
        EmpiricalTriggerTestRunOperator(
            task_id="run_tests",
            environment=environment,
            wait_for_completion=True,
            poll_interval=POLL,
            **kwargs,
        )
    return dag


def sensor_waits(dag_id: str, **kwargs: Any) -> DAG:
    with _dag(dag_id) as dag:
        trigger = EmpiricalTriggerTestRunOperator(task_id="trigger_tests", environment="production")
        EmpiricalTestRunSensor(
            task_id="wait_for_tests", test_run_id=trigger.output, poke_interval=POLL, **kwargs
        )
    return dag


e2e_operator_sync = operator_waits("e2e_operator_sync", deferrable=False)
e2e_operator_deferrable = operator_waits("e2e_operator_deferrable", deferrable=True)
e2e_operator_lenient = operator_waits("e2e_operator_lenient", deferrable=False, fail_on_test_failure=False)
e2e_operator_timeout = operator_waits("e2e_operator_timeout", deferrable=False, timeout=1)
e2e_operator_deferrable_timeout = operator_waits(
    "e2e_operator_deferrable_timeout", deferrable=True, timeout=1
)
e2e_sensor_poke = sensor_waits("e2e_sensor_poke", mode="poke", timeout=60)
e2e_sensor_reschedule = sensor_waits("e2e_sensor_reschedule", mode="reschedule", timeout=60)
e2e_sensor_deferrable = sensor_waits("e2e_sensor_deferrable", deferrable=True, timeout=60)
e2e_sensor_lenient = sensor_waits(
    "e2e_sensor_lenient", deferrable=True, timeout=60, fail_on_test_failure=False
)
e2e_sensor_deferrable_timeout = sensor_waits("e2e_sensor_deferrable_timeout", deferrable=True, timeout=1)

with _dag("e2e_templating") as e2e_templating:

    @task
    def upstream() -> dict[str, Any]:
        return {"commit": "c0ffee", "base_url": "https://preview.example", "shards": 3}

    up = upstream()
    EmpiricalTriggerTestRunOperator(
        task_id="trigger_tests",
        environment="{{ params.env }}",
        build={"commit": "{{ ti.xcom_pull(task_ids='upstream')['commit'] }}", "version": "v-{{ ds_nodash }}"},
        metadata={"logical_date": "{{ ds }}", "commit": up["commit"], "airflow_dag_id": "mine-wins"},
        environment_variables_overrides=[
            {"name": "BASE_URL", "value": up["base_url"]},
            {"name": "RUN", "value": "{{ run_id }}"},
        ],
        tags=["@{{ params.tag }}", "@critical"],
        project_id="{{ params.project_id }}",
        send_notifications="{{ params.notify }}",
        total_shards="{{ ti.xcom_pull(task_ids='upstream')['shards'] }}",
        github_actor="{{ params.actor }}",
        params={"env": "staging", "tag": "smoke", "project_id": 1, "notify": False, "actor": "octocat"},
    )

with _dag("e2e_templating_rerun") as e2e_templating_rerun:
    EmpiricalTriggerTestRunOperator(
        task_id="trigger_tests",
        environment="production",
        branch="{{ params.branch }}",
        rerun_source_id="{{ params.source }}",
        rerun_only_failed="{{ params.only_failed }}",
        params={"branch": "feature/login", "source": 1, "only_failed": True},
    )

with _dag("e2e_bad_input") as e2e_bad_input:
    EmpiricalTriggerTestRunOperator(
        task_id="trigger_tests",
        environment="production",
        total_shards="{{ params.shards }}",
        params={"shards": 0},
    )

with _dag("e2e_sensor_bad_id") as e2e_sensor_bad_id:
    EmpiricalTestRunSensor(
        task_id="wait_for_tests", test_run_id="{{ params.get('missing') }}", poke_interval=POLL
    )

e2e_operator_durable = operator_waits(
    "e2e_operator_durable", deferrable=False, retries=1, retry_delay=pendulum.duration(seconds=0)
)

e2e_secrets_sensor = sensor_waits("e2e_secrets_sensor", mode="poke", timeout=60)

# -- retries, re-runs and cancelling (one PUT per task instance unless a retry asks for more) --
_RETRY = {"retries": 1, "retry_delay": pendulum.duration(seconds=0)}
e2e_rerun_failed_sync = operator_waits(
    "e2e_rerun_failed_sync", deferrable=False, rerun_failed_on_retry=True, **_RETRY
)
e2e_rerun_failed_deferrable = operator_waits(
    "e2e_rerun_failed_deferrable", deferrable=True, rerun_failed_on_retry=True, **_RETRY
)
e2e_cancel_on_timeout_sync = operator_waits(
    "e2e_cancel_on_timeout_sync", deferrable=False, timeout=2, cancel_on_timeout=True
)
e2e_cancel_on_timeout_deferrable = operator_waits(
    "e2e_cancel_on_timeout_deferrable", deferrable=True, timeout=2, cancel_on_timeout=True
)
e2e_retry_deferrable = operator_waits("e2e_retry_deferrable", deferrable=True, **_RETRY)

with _dag("e2e_retry_no_wait") as e2e_retry_no_wait:
    EmpiricalTriggerTestRunOperator(task_id="trigger_tests", environment="production", **_RETRY)

with _dag("e2e_cancel_operator") as e2e_cancel_operator:
    started = EmpiricalTriggerTestRunOperator(task_id="trigger_tests", environment="production")
    EmpiricalCancelTestRunOperator(
        task_id="cancel_tests", test_run_id=started.output, reason="rolled back {{ run_id }}"
    )


# -- the sensor waits for the newest run matching filters, instead of a run id --
def latest_waits(dag_id: str, **kwargs: Any) -> DAG:
    with _dag(dag_id) as dag:
        EmpiricalTestRunSensor(
            task_id="wait_for_tests",
            environment="production",
            branch="main",
            poke_interval=POLL,
            timeout=30,
            **kwargs,
        )
    return dag


e2e_latest_poke = latest_waits("e2e_latest_poke", mode="poke")
e2e_latest_reschedule = latest_waits("e2e_latest_reschedule", mode="reschedule")
e2e_latest_deferrable = latest_waits("e2e_latest_deferrable", deferrable=True)

# -- asset events: which run passed, for a downstream DAG scheduled on the asset --
try:
    from airflow.providers.common.compat.sdk import Asset
except ImportError:  # pragma: no cover
    Asset = None  # type: ignore[assignment,misc]
if Asset is not None:
    e2e_operator_outlets = operator_waits(
        "e2e_operator_outlets",
        deferrable=False,
        outlets=[Asset("empirical://demo/e2e/outlets")],
        build={"commit": "c0ffee", "version": "v-42"},
    )

# -- the pass policy and snoozes (issue 23) --
e2e_operator_raw_failures = operator_waits("e2e_operator_raw_failures", deferrable=False, honor_snoozes=False)
e2e_operator_tolerant = operator_waits(
    "e2e_operator_tolerant",
    deferrable=True,
    max_failed_tests="{{ params.max_failed }}",
    params={"max_failed": 1},
)
e2e_operator_no_flaky = operator_waits("e2e_operator_no_flaky", deferrable=False, fail_on_flaky=True)

with _dag("e2e_snooze_and_run_again") as e2e_snooze_and_run_again:
    first = EmpiricalTriggerTestRunOperator(
        task_id="run_tests",
        environment="production",
        wait_for_completion=True,
        poll_interval=POLL,
        fail_on_test_failure=False,  # a person (or this DAG) decides what to do with the failures
    )
    snooze = EmpiricalSnoozeTestsOperator(
        task_id="snooze_failures",
        test_run_id="{{ ti.xcom_pull(task_ids='run_tests', key='test_run_id') }}",
        snooze_for=3600,
        description="known issue, ticket QA-1",
    )
    again = EmpiricalTriggerTestRunOperator(
        task_id="run_again", environment="production", wait_for_completion=True, poll_interval=POLL
    )
    first >> snooze >> again

# -- choosing what runs and where, before a run exists (issue 24) --
e2e_choose_by_file = operator_waits(
    "e2e_choose_by_file", deferrable=False, test_files=["{{ params.folder }}"], params={"folder": "checkout/"}
)
e2e_choose_by_name = operator_waits(
    "e2e_choose_by_name",
    deferrable=True,
    test_names=["{{ params.title }}"],
    test_project="chromium",
    params={"title": "places the order"},
)
e2e_choose_environment = operator_waits(
    "e2e_choose_environment", deferrable=False, environment="{{ params.env }}", params={"env": "production"}
)
e2e_reuse_commit = operator_waits(
    "e2e_reuse_commit",
    deferrable=False,
    build={"commit": "{{ params.commit }}"},
    reuse_passed_run=True,
    params={"commit": "c0ffee1"},
)
e2e_reuse_commit_deferrable = operator_waits(
    "e2e_reuse_commit_deferrable",
    deferrable=True,
    build={"commit": "{{ params.commit }}"},
    reuse_passed_run=True,
    params={"commit": "c0ffee1"},
)
