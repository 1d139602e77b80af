"""Bench DAG for figure 5: a bare @task that sleeps BENCH_SLEEP seconds, nothing else imported."""

from __future__ import annotations

import os
import time

import pendulum
from airflow.sdk import DAG, task

SLEEP = float(os.environ.get("BENCH_SLEEP", "4"))

with DAG(
    dag_id="bench_bare_sleep",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["bench"],
) as bench_bare_sleep:

    @task
    def sleep() -> None:
        time.sleep(SLEEP)

    sleep()
