"""EmpiricalTriggerTestRunOperator: start a test run, publish its id and link, optionally wait.

Kept cheap to import (DAG parsing imports it on every cycle): the hook, the HTTP client
and the trigger are imported only when the task runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, ResumableJobMixin, conf

from airflow_provider_empirical.links import TEST_RUN_ID_KEY, TEST_RUN_URL_KEY, EmpiricalTestRunLink
from airflow_provider_empirical.validation import positive_number, trigger_body

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_empirical.hooks.empirical import EmpiricalHook
    from airflow_provider_empirical.models import TestRun

DEFAULT_CONN_ID = "empirical_default"
TRIGGER_FIELDS = (
    "environment",
    "build",
    "branch",
    "metadata",
    "environment_variables_overrides",
    "tags",
    "project_id",
    "send_notifications",
    "total_shards",
    "rerun_source_id",
    "rerun_only_failed",
    "github_actor",
)


class EmpiricalTriggerTestRunOperator(ResumableJobMixin, BaseOperator):
    """Trigger an Empirical test run (``PUT /api/test-runs``).

    Pushes the run id (return value and XCom ``test_run_id``) and its dashboard URL (XCom
    ``test_run_url``) as soon as the run exists. With ``wait_for_completion=True`` it then
    waits: in the triggerer when ``deferrable``, else by polling; on Airflow 3.3+ a retry of
    a polling task re-attaches to its in-flight run instead of starting a second one.

    Every API field below is templated; dicts and lists are rendered recursively.

    :param environment: environment slug to test, e.g. ``production`` (required).
    :param build: ``{"url", "branch", "commit", "commit_url", "version"}`` of the build under test.
    :param branch: test-repo branch to run; cannot be combined with ``build``.
    :param metadata: custom key/value pairs (strings or numbers).
    :param environment_variables_overrides: ``[{"name": ..., "value": ...}]`` or ``{NAME: value}``.
    :param tags: only tests with these tags run, e.g. ``["@smoke"]``.
    :param project_id: legacy body field; must match the project of the key / connection.
    :param send_notifications: whether Empirical sends its run notifications (API default: true).
    :param total_shards: number of shards to split the run across.
    :param rerun_source_id: id of the run to re-run.
    :param rerun_only_failed: with ``rerun_source_id``: re-run only the tests that failed.
    :param github_actor: GitHub user to attribute the run to.
    :param empirical_conn_id: connection of type ``empirical``.
    :param include_airflow_metadata: add ``airflow_dag_id``, ``airflow_run_id``, ``airflow_task_id``
        and ``airflow_try_number`` to ``metadata`` (your own keys win).
    :param wait_for_completion: wait for the run to end (default: no; use the sensor downstream).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between two status checks while waiting.
    :param timeout: seconds to wait (wall clock) before failing; the run itself is not stopped.
    :param fail_on_test_failure: fail the task when the run ends with failed tests.
    """

    template_fields: Sequence[str] = TRIGGER_FIELDS
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "build": "json",
        "metadata": "json",
        "environment_variables_overrides": "json",
    }
    operator_extra_links = (EmpiricalTestRunLink(),)
    external_id_key = "empirical_test_run_id"
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        environment: str,
        build: dict[str, str] | None = None,
        branch: str | None = None,
        metadata: dict[str, Any] | None = None,
        environment_variables_overrides: list[dict[str, str]] | dict[str, str] | None = None,
        tags: list[str] | None = None,
        project_id: int | None = None,
        send_notifications: bool | None = None,
        total_shards: int | None = None,
        rerun_source_id: int | None = None,
        rerun_only_failed: bool | None = None,
        github_actor: str | None = None,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        include_airflow_metadata: bool = True,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: float = 24 * 60 * 60,
        fail_on_test_failure: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment = environment
        self.build = build
        self.branch = branch
        self.metadata = metadata
        self.environment_variables_overrides = environment_variables_overrides
        self.tags = tags
        self.project_id = project_id
        self.send_notifications = send_notifications
        self.total_shards = total_shards
        self.rerun_source_id = rerun_source_id
        self.rerun_only_failed = rerun_only_failed
        self.github_actor = github_actor
        self.empirical_conn_id = empirical_conn_id
        self.include_airflow_metadata = include_airflow_metadata
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = positive_number(poll_interval, "poll_interval")
        self.timeout = positive_number(timeout, "timeout")
        self.fail_on_test_failure = fail_on_test_failure
        self.test_run_id: int | None = None
        self._last_run: TestRun | None = None
        self._summary: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> EmpiricalHook:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook

        return EmpiricalHook(self.empirical_conn_id)

    def execute(self, context: Context) -> Any:
        try:
            if not self.wait_for_completion:
                return self.submit_job(context)
            if self.deferrable:
                return self._submit_and_defer(context)
            return self.execute_resumable(context)
        finally:
            if "hook" in self.__dict__:  # release the pooled connection; the hook reopens if used again
                self.hook.close()

    # -- trigger --

    def trigger_body(self, context: Context) -> dict[str, Any]:
        """The validated request body, with the Airflow run's coordinates in `metadata`."""
        body = trigger_body(**{name: getattr(self, name) for name in TRIGGER_FIELDS})
        if self.include_airflow_metadata:
            ti = context["ti"]
            body["metadata"] = {
                "airflow_dag_id": ti.dag_id,
                "airflow_run_id": ti.run_id,
                "airflow_task_id": ti.task_id,
                "airflow_try_number": ti.try_number,
                **body.get("metadata", {}),
            }
        return body

    def submit_job(self, context: Context) -> int:
        """Trigger the run and publish its id and URL before any wait."""
        body = self.trigger_body(context)
        run = self.hook.trigger_test_run(**body)
        self._publish(context, run["id"])
        self.log.info(
            "Triggered Empirical test run %s on %r (state %s): %s",
            run["id"],
            body["environment"],
            run.get("state"),
            self.hook.test_run_url(run["id"]),
        )
        return int(run["id"])

    def _publish(self, context: Context, test_run_id: int) -> None:
        if self.test_run_id == test_run_id:
            return
        self.test_run_id = test_run_id
        ti = context["ti"]
        ti.xcom_push(key=TEST_RUN_ID_KEY, value=test_run_id)
        ti.xcom_push(key=TEST_RUN_URL_KEY, value=self.hook.test_run_url(test_run_id))
        if self.wait_for_completion:  # the summary replaces it at the end; the id is there meanwhile
            ti.xcom_push(key="return_value", value=test_run_id)

    # -- wait in the worker (durable on Airflow 3.3+) --

    def get_job_status(self, external_id: Any, context: Context) -> str:
        from airflow_provider_empirical.models import is_terminal
        from airflow_provider_empirical.outcome import status_of

        run = self._last_run = self.hook.get_test_run(external_id)
        return status_of(run) if is_terminal(run) else run["state"]

    def is_job_active(self, status: str) -> bool:
        from airflow_provider_empirical.outcome import STATUSES

        return status not in STATUSES

    def is_job_succeeded(self, status: str) -> bool:
        return status == "success" or (status == "failed" and not self.fail_on_test_failure)

    # Typed None in the mixin, but its reconnect path returns what this returns: the summary.
    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:  # type: ignore[override]
        from airflow_provider_empirical.outcome import resolve

        self._publish(context, external_id)
        event = self.hook.wait_for_test_run(
            external_id, poll_interval=self.poll_interval, end_time=time.time() + self.timeout
        )
        self._summary = resolve(event, fail_on_test_failure=self.fail_on_test_failure, log=self.log)
        return self._summary

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        from airflow_provider_empirical.outcome import finished_event, resolve

        if self._summary is None:  # it had already ended well before this try
            self._publish(context, external_id)
            run = self._last_run or self.hook.get_test_run(external_id)
            event = finished_event(run, self.hook.test_run_url(external_id))
            self._summary = resolve(event, fail_on_test_failure=self.fail_on_test_failure, log=self.log)
        return self._summary

    # -- wait in the triggerer --

    def _submit_and_defer(self, context: Context) -> Any:
        from airflow_provider_empirical.errors import EmpiricalError
        from airflow_provider_empirical.models import is_terminal
        from airflow_provider_empirical.outcome import finished_event, resolve
        from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

        test_run_id = self.submit_job(context)
        end_time = time.time() + self.timeout
        try:
            run = self.hook.get_test_run(test_run_id)
        except EmpiricalError as exc:
            if not exc.transient:
                raise
            self.log.warning("Could not check test run %s before deferring: %s", test_run_id, exc.message)
        else:
            if is_terminal(run):
                event = finished_event(run, self.hook.test_run_url(test_run_id))
                return resolve(event, fail_on_test_failure=self.fail_on_test_failure, log=self.log)
        self.defer(
            trigger=EmpiricalTestRunTrigger(
                test_run_id=test_run_id,
                end_time=end_time,
                empirical_conn_id=self.empirical_conn_id,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: succeed with the run summary, or fail with the trigger's message."""
        from airflow_provider_empirical.outcome import resolve

        return resolve(event, fail_on_test_failure=self.fail_on_test_failure, log=self.log)

    def on_kill(self) -> None:
        if self.test_run_id is not None:
            self.log.warning(
                "Task killed. Empirical has no documented cancel endpoint: test run %s keeps going. "
                "Cancel it by hand if needed: %s",
                self.test_run_id,
                self.hook.test_run_url(self.test_run_id),
            )
