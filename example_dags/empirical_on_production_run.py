"""
### Report every production test run that ends, wherever it was started

Empirical runs start outside Airflow too: on the environment's own schedule, from Empirical's
GitHub Action after a deploy, from its dashboard. This DAG is scheduled on the asset
`empirical://demo/production/runs`, whose watcher (`EmpiricalTestRunEndedTrigger`, in the
triggerer) reads the list of test runs every poll interval and turns each production run
that ends into an asset event: one DAG run per run that ended (several runs ending within a
few seconds of each other may share one DAG run; the task reports each of them).

`report` reads the events (`triggering_asset_events`: each event's `extra["payload"]` is the
summary the operator returns), logs each run with its outcome, counts and failed tests (with
the link to each test's page), and returns the reports (XCom `return_value`). Publish the
results, open tickets or gate a promotion from here. A run that ended before the DAG was first
unpaused is not reported. An event marked `redelivered` may repeat one reported just before a
triggerer died (docs/event-driven.md): skip it if your side effects are not idempotent.

Needs Airflow 3.0+ (event-driven scheduling) and, for reporting exactly once across triggerer
restarts, 3.3 (the asset state store). On Airflow 2.11 the DAG parses, is not scheduled, and
its task skips saying why.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, AirflowSkipException, task

from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunEndedTrigger

log = logging.getLogger(__name__)

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "60"))
ASSET_URI = "empirical://demo/production/runs"

try:
    from airflow.sdk import Asset, AssetWatcher
except ImportError:  # Airflow 2.11: no asset watchers
    PRODUCTION_RUNS = None
    UNAVAILABLE: str | None = "event-driven scheduling (AssetWatcher) needs Airflow 3.0+"
else:
    PRODUCTION_RUNS = Asset(
        ASSET_URI,
        watchers=[
            AssetWatcher(
                name="empirical_production_run_ended",
                trigger=EmpiricalTestRunEndedTrigger(
                    environment="production",
                    empirical_conn_id="empirical_default",
                    poll_interval=POLL_INTERVAL,
                ),
            )
        ],
    )
    UNAVAILABLE = None


with DAG(
    dag_id="empirical_on_production_run",
    schedule=[PRODUCTION_RUNS] if PRODUCTION_RUNS is not None else None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=16,
    doc_md=__doc__,
    tags=["empirical", "example"],
) as dag:

    @task
    def report(**context: Any) -> list[dict[str, Any]]:
        """One report per production run that ended, from the watcher's events."""
        if UNAVAILABLE:
            raise AirflowSkipException(UNAVAILABLE)
        events = context.get("triggering_asset_events") or {}
        payloads = [
            dict((event.extra or {}).get("payload") or {})
            for asset_events in events.values()
            for event in asset_events
        ]
        if not payloads:
            log.info("No asset event triggered this run (triggered by hand?): nothing to report.")
            return []
        reports = []
        for run in payloads:
            failed = run.get("failed_tests") or []
            log.info(
                "Empirical run %s on %s ended: %s (%s passed, %s failed, %s flaky) %s",
                run.get("id"),
                run.get("environment_slug"),
                run.get("outcome"),
                run.get("success_count"),
                run.get("failed_count"),
                run.get("flaky_count"),
                run.get("url"),
            )
            for test in failed:
                log.warning("  FAILED %s %s", test.get("name"), test.get("url") or "")
            if run.get("failed_count") and run.get("failed_tests") is None:
                log.warning("  (the API did not name the failed tests: see the run's page)")
            if run.get("redelivered"):
                log.warning(
                    "  Run %s may have been reported already (redelivered after a restart)", run.get("id")
                )
            reports.append(
                {
                    "test_run_id": run.get("id"),
                    "url": run.get("url"),
                    "state": run.get("state"),
                    "outcome": run.get("outcome"),
                    "failed_count": run.get("failed_count"),
                    "failed_tests": [{"name": t.get("name"), "url": t.get("url")} for t in failed],
                    "commit": run.get("commit"),
                    "redelivered": bool(run.get("redelivered")),
                }
            )
        return reports

    report()
