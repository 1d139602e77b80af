"""Bench DAGs: one per way of waiting for an Empirical run (figures 3 and 5).

Poll interval from BENCH_POLL_INTERVAL (seconds, read at parse time); the run's own
duration is scripted in the emulator by the bench, not here.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

POLL = float(os.environ.get("BENCH_POLL_INTERVAL", "1"))
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False, tags=["bench"])


with _dag("bench_operator_sync") as bench_operator_sync:
    EmpiricalTriggerTestRunOperator(
        task_id="run_tests",
        environment="production",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=POLL,
    )

with _dag("bench_operator_deferrable") as bench_operator_deferrable:
    EmpiricalTriggerTestRunOperator(
        task_id="run_tests",
        environment="production",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL,
    )

with _dag("bench_trigger_then_sensor") as bench_trigger_then_sensor:
    trigger = EmpiricalTriggerTestRunOperator(task_id="trigger_tests", environment="production")
    EmpiricalTestRunSensor(
        task_id="wait_for_tests",
        test_run_id=trigger.output,  # type: ignore[arg-type]  # an XComArg; the hint says int | str
        deferrable=True,
        poke_interval=POLL,
        timeout=120,
    )
