"""For the deployment tier only: a second watcher on the same connection and poll interval as
example_dags/empirical_on_production_run.py (so Airflow 3.3 runs one shared poll for both),
reporting only staging runs that did not pass."""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, task
from airflow.sdk import Asset, AssetWatcher

from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunEndedTrigger

FAILED_STAGING_RUNS = Asset(
    "empirical://demo/staging/failed-runs",
    watchers=[
        AssetWatcher(
            name="empirical_staging_run_failed",
            trigger=EmpiricalTestRunEndedTrigger(
                environment="staging",
                result="failed",
                poll_interval=float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "60")),
            ),
        )
    ],
)

with DAG(
    dag_id="empirical_on_failed_staging_run",
    schedule=[FAILED_STAGING_RUNS],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["empirical", "test"],
) as dag:

    @task
    def report(**context: Any) -> list[int]:
        events = context.get("triggering_asset_events") or {}
        return [int(e.extra["payload"]["id"]) for evs in events.values() for e in evs]

    report()
