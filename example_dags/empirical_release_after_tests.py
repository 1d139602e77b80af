"""
### Release the build once the nightly regression suite passed

Scheduled on the asset `empirical://demo/production/regression`, which
`empirical_nightly_regression` updates only when its Empirical run passed (the asset is in
the `outlets` of its `wait_for_tests` task). A failed, errored or cancelled run emits no
event, so nothing is released.

`promote` reads the triggering event's `extra`, which the provider fills with the run id,
URL, state, outcome and test counts (and the commit and build version when the run's
summary has them), and "promotes" that build: here it only logs and returns what it would
promote; a deploy or tag step would go here.

Airflow 3 passes the events as `triggering_asset_events`; Airflow 2.11 runs the same DAG on
the equivalent Dataset and passes `triggering_dataset_events`. Triggered by hand there is
no event: the task says so and promotes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import DAG, Asset, task

log = logging.getLogger(__name__)

# The same URI as in empirical_nightly_regression.py (a Dataset on Airflow 2).
NIGHTLY_REGRESSION = Asset("empirical://demo/production/regression")

with DAG(
    dag_id="empirical_release_after_tests",
    schedule=[NIGHTLY_REGRESSION],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["empirical", "example"],
) as dag:

    @task
    def promote(**context: Any) -> dict[str, Any] | None:
        """Promote the build of the run that passed, as the latest asset event describes it."""
        events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        extras = [dict(event.extra or {}) for asset_events in events.values() for event in asset_events]
        if not extras:
            log.info("No asset event triggered this run (triggered by hand?): nothing to promote.")
            return None
        passed = extras[-1]  # the newest event, when several queued up
        release = {
            "test_run_id": passed.get("test_run_id"),
            "url": passed.get("url"),
            "build_version": passed.get("build_version"),
            "commit": passed.get("commit"),
            "success_count": passed.get("success_count"),
            "flaky_count": passed.get("flaky_count"),
        }
        log.info(
            "Promoting build %s (commit %s): Empirical run %s passed (%s tests, %s flaky) - %s",
            release["build_version"] or "(version unknown)",
            release["commit"] or "unknown",
            release["test_run_id"],
            release["success_count"],
            release["flaky_count"],
            release["url"],
        )
        return release

    promote()
