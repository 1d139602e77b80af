"""DAGs of the distributed tier (tests/distributed): the provider's operator as users deploy it.

- `tier_deferred`: TIER_TASKS deferrable waits in parallel (the triggerer kill and stall scenarios).
- `tier_mark_failed`: one deferrable wait, marked failed by a user while it waits.
- `tier_polling`: one wait that polls in the worker (deferrable=False) with a retry, for the
  worker kill; on Airflow 3.3 the retry re-attaches to the run the first try stored.

Polls every 3 s; emulated runs end only when the test says so (long after the deferral, so the
Airflow 3.3 race of a trigger that fires within seconds of deferring, apache/airflow #71580, is
never in play).
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.providers.common.compat.sdk import DAG

from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator

TIER_TASKS = int(os.environ.get("EMPIRICAL_TIER_TASKS", "12"))
POLL = 3
COMMON = {"schedule": None, "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"), "catchup": False}

with DAG(dag_id="tier_deferred", tags=["empirical", "tier"], max_active_tasks=64, **COMMON):
    for number in range(TIER_TASKS):
        EmpiricalTriggerTestRunOperator(
            task_id=f"wait_{number:02d}",
            environment="production",
            wait_for_completion=True,
            deferrable=True,
            poll_interval=POLL,
            timeout=1800,
        )

with DAG(dag_id="tier_mark_failed", tags=["empirical", "tier"], **COMMON):
    EmpiricalTriggerTestRunOperator(
        task_id="wait",
        environment="production",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL,
        timeout=1800,
    )

with DAG(dag_id="tier_polling", tags=["empirical", "tier"], **COMMON):
    EmpiricalTriggerTestRunOperator(
        task_id="poll",
        environment="production",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=2,
        timeout=1800,
        retries=1,
        retry_delay=timedelta(seconds=2),
    )
