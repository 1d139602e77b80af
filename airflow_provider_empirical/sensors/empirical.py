"""EmpiricalTestRunSensor: wait for a test run in poke, reschedule or deferrable mode.

Cheap to import for DAG parsing: the hook and the trigger load only when the task runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_empirical.links import TEST_RUN_URL_KEY, EmpiricalTestRunLink
from airflow_provider_empirical.validation import positive_int

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_empirical.hooks.empirical import EmpiricalHook


class EmpiricalTestRunSensor(BaseSensorOperator):
    """Wait until an Empirical test run ends; return its summary (id, state, counts, duration, url).

    Succeeds when the run ended with no failed test. Fails when tests failed (unless
    ``fail_on_test_failure=False``), when the run errored (naming the error code) or was
    cancelled. ``cancelling`` and unknown states keep waiting; so do transient API errors.

    :param test_run_id: the run to wait for (templated), e.g. the trigger task's ``.output``
        or ``"{{ ti.xcom_pull(task_ids='trigger_tests', key='test_run_id') }}"``.
    :param empirical_conn_id: connection of type ``empirical``.
    :param fail_on_test_failure: fail when the run ends with failed tests.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("test_run_id",)
    operator_extra_links = (EmpiricalTestRunLink(),)
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        test_run_id: int | str,
        empirical_conn_id: str = "empirical_default",
        fail_on_test_failure: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.empirical_conn_id = empirical_conn_id
        self.fail_on_test_failure = fail_on_test_failure
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> EmpiricalHook:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook

        return EmpiricalHook(self.empirical_conn_id)

    @cached_property
    def parsed_test_run_id(self) -> int:
        """The rendered `test_run_id` as an integer, or a clear error before any request."""
        return positive_int(self.test_run_id, "test_run_id")

    def execute(self, context: Context) -> Any:
        try:
            return self._execute(context)
        finally:
            if "hook" in self.__dict__:  # release the pooled connection
                self.hook.close()

    def _execute(self, context: Context) -> Any:
        context["ti"].xcom_push(key=TEST_RUN_URL_KEY, value=self.hook.test_run_url(self.parsed_test_run_id))
        if not self.deferrable:
            return super().execute(context)
        result = self.poke(context)  # no deferral for a run that is already done
        if result:
            return result.xcom_value  # type: ignore[union-attr]
        from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

        self.defer(
            trigger=EmpiricalTestRunTrigger(
                test_run_id=self.parsed_test_run_id,
                end_time=time.time() + float(self.timeout),
                empirical_conn_id=self.empirical_conn_id,
                poll_interval=float(self.poke_interval),
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_empirical.errors import EmpiricalError
        from airflow_provider_empirical.models import describe, is_terminal
        from airflow_provider_empirical.outcome import finished_event, resolve

        url = self.hook.test_run_url(self.parsed_test_run_id)
        try:
            run = self.hook.get_test_run(self.parsed_test_run_id)
        except EmpiricalError as exc:
            if not exc.transient:
                raise
            self.log.warning(
                "Still waiting for Empirical test run %s: %s", self.parsed_test_run_id, exc.message
            )
            return False
        if not is_terminal(run):
            self.log.info("%s", describe(run, url))
            return False
        summary = resolve(
            finished_event(run, url), fail_on_test_failure=self.fail_on_test_failure, log=self.log
        )
        return PokeReturnValue(is_done=True, xcom_value=summary)

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger; a trigger timeout is a sensor timeout (so `soft_fail` applies)."""
        from airflow_provider_empirical.outcome import resolve

        if isinstance(event, Mapping) and event.get("status") == "timeout":
            raise AirflowSensorTimeout(event.get("message") or "Timed out waiting for the test run")
        return resolve(event, fail_on_test_failure=self.fail_on_test_failure, log=self.log)
