"""DAGs for tests/e2e/test_fail_closed_dags.py: short deadlines, a fixed run id, a trigger that an
`execution_timeout` interrupts. What the API answers is scripted by each test, not here.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SHORT = 6  # seconds: the sensor's and the operator's whole wait


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False, tags=["e2e"])


# a poke sensor on run 1 that must be over within SHORT seconds, whatever the server does
with _dag("fail_closed_sensor_short") as fail_closed_sensor_short:
    EmpiricalTestRunSensor(
        task_id="wait_for_tests", test_run_id=1, mode="poke", poke_interval=1, timeout=SHORT
    )

# a deferrable operator whose whole wait (its first check before deferring included) is SHORT
with _dag("fail_closed_operator_deferrable_short") as fail_closed_operator_deferrable_short:
    EmpiricalTriggerTestRunOperator(
        task_id="run_tests",
        environment="production",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
        timeout=SHORT,
    )

# without durable state, and with an Airflow retry: the PUT is interrupted by execution_timeout
with _dag("fail_closed_trigger_execution_timeout") as fail_closed_trigger_execution_timeout:
    EmpiricalTriggerTestRunOperator(
        task_id="trigger_tests",
        environment="production",
        durable=False,
        retries=1,
        retry_delay=timedelta(seconds=0),
        execution_timeout=timedelta(seconds=2),
    )
