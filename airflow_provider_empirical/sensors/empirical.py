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

from airflow_provider_empirical.links import DEFAULT_CONN_ID, TEST_RUN_URL_KEY, EmpiricalTestRunLink
from airflow_provider_empirical.validation import poll_seconds, positive_int

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_empirical.hooks.empirical import EmpiricalHook
    from airflow_provider_empirical.models import TestRun
    from airflow_provider_empirical.outcome import Waiter


class EmpiricalTestRunSensor(BaseSensorOperator):
    """Wait until an Empirical test run ends; return its summary (id, state, counts, duration, url).

    Succeeds when the run ended with tests executed and none failed. Fails when tests failed
    (unless ``fail_on_test_failure=False``, naming the failed tests), when no test was executed
    (unless ``fail_on_empty_run=False``), when the run errored (naming the error code) or was
    cancelled, and when its result cannot be read. ``cancelling`` and unknown states keep
    waiting; so do transient API errors. Answers that do not match the API contract end the
    wait after a few in a row (at once in reschedule mode, which keeps no memory between pokes).

    :param test_run_id: the run to wait for (templated), e.g. the trigger task's ``.output``
        or ``"{{ ti.xcom_pull(task_ids='trigger_tests', key='test_run_id') }}"``.
    :param empirical_conn_id: connection of type ``empirical``.
    :param fail_on_test_failure: fail when the run ends with failed tests.
    :param fail_on_empty_run: fail when the run ended having executed no test.
    :param cancel_on_kill: cancel the run when this task is killed while deferred (Airflow 3.3+).
        Off by default: the sensor may be waiting on another team's run.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("test_run_id",)
    operator_extra_links = (EmpiricalTestRunLink(),)
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        test_run_id: int | str,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        fail_on_test_failure: bool = True,
        fail_on_empty_run: bool = True,
        cancel_on_kill: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.empirical_conn_id = empirical_conn_id
        self.fail_on_test_failure = fail_on_test_failure
        self.fail_on_empty_run = fail_on_empty_run
        self.cancel_on_kill = cancel_on_kill
        self.deferrable = deferrable
        self.test_run_summary: dict[str, Any] | None = None  # the final run, for lineage
        if deferrable:  # the triggerer polls at poke_interval: no hot loop against the API
            poll_seconds(self.poke_interval, "poke_interval")

    @cached_property
    def hook(self) -> EmpiricalHook:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook

        return EmpiricalHook(self.empirical_conn_id)

    @cached_property
    def parsed_test_run_id(self) -> int:
        """The rendered `test_run_id` as an integer, or a clear error before any request."""
        return positive_int(self.test_run_id, "test_run_id")

    @cached_property
    def _waiter(self) -> Waiter:
        """Judges each poke; in poke mode it lives across pokes and counts contract strikes."""
        from airflow_provider_empirical.outcome import MAX_STRIKES, Waiter

        waiter = Waiter(self.parsed_test_run_id, None, float(self.poke_interval), float("inf"), self.log)
        waiter.max_strikes = 1 if self.mode == "reschedule" else MAX_STRIKES
        return waiter

    def execute(self, context: Context) -> Any:
        try:
            if not self.deferrable:
                return super().execute(context)
            result = self.poke(context)  # no deferral for a run that is already done
            if result:
                return result.xcom_value  # type: ignore[union-attr]
            self._defer()
        finally:
            if "hook" in self.__dict__:  # release the pooled connection
                self.hook.close()

    def _defer(self) -> None:
        from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

        self.defer(
            trigger=EmpiricalTestRunTrigger(
                test_run_id=self.parsed_test_run_id,
                end_time=time.time() + float(self.timeout),
                empirical_conn_id=self.empirical_conn_id,
                poll_interval=float(self.poke_interval),
                test_run_url=self._waiter.url,
                cancel_on_kill=self.cancel_on_kill,
                cancel_reason=f"Airflow sensor {self.dag_id}.{self.task_id} was killed",
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        run_id = self.parsed_test_run_id  # bad input fails here, before any request
        result: TestRun | BaseException
        try:
            result = self.hook.get_test_run(run_id)
        except Exception as exc:
            result = exc
        if self._waiter.url is None and not isinstance(result, BaseException):
            self._waiter.url = self.hook.test_run_url(run_id)  # the answer may have named the slug
            if "ti" in context:  # absent only when a test calls poke() bare
                context["ti"].xcom_push(key=TEST_RUN_URL_KEY, value=self._waiter.url)
        step = self._waiter.step(result)
        if not isinstance(step, dict):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._finish(context, step))

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger; a trigger timeout is a sensor timeout (so `soft_fail` applies)."""
        try:
            if isinstance(event, Mapping) and event.get("status") == "timeout":
                raise AirflowSensorTimeout(event.get("message") or "Timed out waiting for the test run")
            return self._finish(context, event)
        finally:
            if "hook" in self.__dict__:
                self.hook.close()

    def _finish(self, context: Context, event: Any) -> dict[str, Any]:
        from airflow_provider_empirical.outcome import resolve, summary_of, validate_event

        self.test_run_summary = summary_of(validate_event(event))  # also when the task fails
        summary = resolve(
            event,
            fail_on_test_failure=self.fail_on_test_failure,
            fail_on_empty_run=self.fail_on_empty_run,
            log=self.log,
        )
        if self.outlets:
            from airflow_provider_empirical.assets import emit_outlet_events

            emit_outlet_events(context, self.outlets, summary)
        return summary

    # -- OpenLineage (only when apache-airflow-providers-openlineage is installed; it calls these) --

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_empirical.openlineage import facets_for

        return facets_for(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_empirical.openlineage import facets_for

        return facets_for(self, task_instance)
