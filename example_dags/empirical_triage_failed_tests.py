"""
### Triage failed tests with a person before a release

Runs the suite (`run_suite`, which does not fail on failed tests: `fail_on_test_failure=False`).
A passing run goes straight to `release`. When tests failed, `ask` (Airflow's human-in-the-loop
`HITLBranchOperator`) shows the failed tests, each linked to its page with the video and trace,
and offers three choices:

- **Re-run failed tests**: `rerun_failed_tests` re-runs only the tests that failed (Empirical's
  re-run of run `run_suite`), waits, and releases when they pass (fails otherwise).
- **Snooze them for 24 h and release**: `snooze_failed_tests` snoozes the failed tests in
  Empirical for 24 hours (later runs do not count them), then `release`.
- **Block the release**: `block_release` fails, naming the tests, and nothing is released.

With no answer within `response_timeout` (24 h), the release is blocked. Answer in the UI
(Required actions) or over the REST API (`PATCH .../taskInstances/ask/-1/hitlDetails` with
`{"chosen_options": ["Block the release"]}`). Trigger with `{"environment": "staging"}` to
test another environment.

Needs Airflow 3.1+ (human-in-the-loop operators in the standard provider). On older versions
the DAG parses and its one task skips, saying why.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import (
    DAG,
    AirflowFailException,
    AirflowSkipException,
    Param,
    task,
)

from airflow_provider_empirical.operators.empirical import (
    EmpiricalSnoozeTestsOperator,
    EmpiricalTriggerTestRunOperator,
)

log = logging.getLogger(__name__)

POLL_INTERVAL = float(os.environ.get("EMPIRICAL_POLL_INTERVAL", "30"))
RERUN = "Re-run failed tests"
SNOOZE = "Snooze them for 24 h and release"
BLOCK = "Block the release"
SUITE = "{{ ti.xcom_pull(task_ids='run_suite') }}"

try:
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.hitl import HITLBranchOperator
except Exception as exc:  # Airflow < 3.1 raises AirflowOptionalProviderFeatureException here
    HITLBranchOperator = None
    UNAVAILABLE: str | None = f"human-in-the-loop operators need Airflow 3.1+ ({type(exc).__name__}: {exc})"
else:
    UNAVAILABLE = None

QUESTION = """\
{% set run = ti.xcom_pull(task_ids='run_suite') %}\
Empirical test run [#{{ run.id }}]({{ run.url }}) on `{{ run.environment_slug }}` ended with \
{{ run.failed_count }} failed test(s){% if run.snoozed_tests %} ({{ run.snoozed_tests | length }} \
already snoozed){% endif %}:

{% for test in run.failed_tests or [] %}\
- [{{ test.name | replace('[', '(') | replace(']', ')') }}]({{ test.url }}){% if test.file %} \
in `{{ test.file }}`{% endif %}
{% else %}\
- (the API did not name them: see [the run]({{ run.url }}))
{% endfor %}
Re-run them, snooze them for 24 hours and release, or block the release?
"""

with DAG(
    dag_id="empirical_triage_failed_tests",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    params={"environment": Param("production", type="string", description="Environment slug to test")},
    tags=["empirical", "example"],
) as dag:
    if UNAVAILABLE:

        @task
        def triage_unavailable() -> None:
            raise AirflowSkipException(UNAVAILABLE)

        triage_unavailable()
    else:
        run_suite = EmpiricalTriggerTestRunOperator(
            task_id="run_suite",
            environment="{{ params.environment }}",
            metadata={"suite": "pre-release"},
            wait_for_completion=True,
            deferrable=True,
            poll_interval=POLL_INTERVAL,
            fail_on_test_failure=False,  # failed tests go to a person, not to a failed task
        )

        @task.branch
        def check(summary: dict[str, Any]) -> str:
            """Ask only when tests failed (snoozed failures do not count)."""
            if summary.get("outcome") == "success":
                log.info("Run %s passed: no question to ask", summary.get("id"))
                return "tests_passed"
            return "ask"

        tests_passed = EmptyOperator(task_id="tests_passed")

        ask = HITLBranchOperator(
            task_id="ask",
            subject="Empirical: tests failed in run {{ ti.xcom_pull(task_ids='run_suite')['id'] }}",
            body=QUESTION,
            options=[RERUN, SNOOZE, BLOCK],
            options_mapping={
                RERUN: "rerun_failed_tests",
                SNOOZE: "snooze_failed_tests",
                BLOCK: "block_release",
            },
            defaults=[BLOCK],  # taken when nobody answers within response_timeout
            response_timeout=timedelta(hours=24),
        )

        rerun_failed_tests = EmpiricalTriggerTestRunOperator(
            task_id="rerun_failed_tests",
            environment="{{ params.environment }}",
            rerun_source_id="{{ ti.xcom_pull(task_ids='run_suite')['id'] }}",
            rerun_only_failed=True,
            wait_for_completion=True,
            deferrable=True,
            poll_interval=POLL_INTERVAL,
        )

        snooze_failed_tests = EmpiricalSnoozeTestsOperator(
            task_id="snooze_failed_tests",
            test_run_id="{{ ti.xcom_pull(task_ids='run_suite')['id'] }}",
            snooze_for=timedelta(hours=24),
        )

        @task
        def block_release(**context: Any) -> None:
            suite = context["ti"].xcom_pull(task_ids="run_suite") or {}
            names = ", ".join(repr(t.get("name")) for t in suite.get("failed_tests") or []) or "(unnamed)"
            raise AirflowFailException(
                f"Release blocked after Empirical run {suite.get('id')} ({suite.get('url')}): "
                f"{suite.get('failed_count')} failed test(s): {names}"
            )

        @task(trigger_rule="none_failed_min_one_success")
        def release(**context: Any) -> dict[str, Any]:
            ti = context["ti"]
            suite = ti.xcom_pull(task_ids="run_suite") or {}
            rerun = ti.xcom_pull(task_ids="rerun_failed_tests")
            snoozed = ti.xcom_pull(task_ids="snooze_failed_tests")
            if rerun:
                because = f"re-run {rerun.get('id')} of the failed tests passed"
            elif snoozed is not None:
                because = "the failed tests are snoozed for 24 h"
            else:
                because = "every test passed"
            log.info("Releasing after Empirical run %s: %s", suite.get("id"), because)
            return {"test_run_id": suite.get("id"), "released": True, "because": because}

        decision = check(run_suite.output)
        decision >> [tests_passed, ask]
        ask >> [rerun_failed_tests, snooze_failed_tests, block_release()]
        [tests_passed, rerun_failed_tests, snooze_failed_tests] >> release()
