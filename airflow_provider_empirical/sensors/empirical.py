"""EmpiricalTestRunSensor: wait for a test run in poke, reschedule or deferrable mode.

Cheap to import for DAG parsing: the hook and the trigger load only when the task runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_empirical.errors import EmpiricalError, EmpiricalValidationError
from airflow_provider_empirical.links import (
    DEFAULT_CONN_ID,
    TEST_RUN_ID_KEY,
    TEST_RUN_URL_KEY,
    EmpiricalTestRunLink,
)
from airflow_provider_empirical.models import parse_created_at
from airflow_provider_empirical.validation import poll_seconds, positive_int, positive_number, text

FILTERS = ("environment", "branch", "created_after")
SEARCH_DEADLINE_KEY = "empirical_search_deadline"  # when a deferrable search for a matching run gives up

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
    :param environment: instead of ``test_run_id``: wait for the newest run on this environment
        slug (templated), found through the list endpoint; "no matching run yet" keeps waiting.
    :param branch: instead of ``test_run_id``: ... on this test-repo branch (templated).
    :param created_after: with the filters: only runs created after this time (templated; an ISO
        8601 string or a datetime). Default: the DAG run's ``run_after`` minus ``grace_period``.
    :param grace_period: seconds before the DAG run was asked for that a run may have started
        and still count (default one hour).
    :param empirical_conn_id: connection of type ``empirical``.
    :param fail_on_test_failure: fail when the run ends with failed tests.
    :param fail_on_empty_run: fail when the run ended having executed no test.
    :param cancel_on_kill: cancel the run when this task is killed: while poking, or while
        deferred (Airflow 3.3+). Off by default: the sensor may be waiting on another team's run.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("test_run_id", "environment", "branch", "created_after")
    operator_extra_links = (EmpiricalTestRunLink(),)
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        test_run_id: int | str | None = None,
        environment: str | None = None,
        branch: str | None = None,
        created_after: str | datetime | None = None,
        grace_period: float = 3600.0,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        fail_on_test_failure: bool = True,
        fail_on_empty_run: bool = True,
        cancel_on_kill: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.environment = environment
        self.branch = branch
        self.created_after = created_after
        self.grace_period = positive_number(grace_period, "grace_period")
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

    def _filters(self) -> dict[str, Any]:
        """The rendered filters that were given; exactly one of them or `test_run_id` must be."""
        given = {name: getattr(self, name) for name in FILTERS if getattr(self, name) not in (None, "")}
        if given and self.test_run_id not in (None, ""):
            raise EmpiricalValidationError(
                f"`test_run_id` cannot be combined with {', '.join(f'`{n}`' for n in given)}: "
                "give the run id, or filters to find the newest matching run",
                field="test_run_id",
            )
        if not given and self.test_run_id in (None, ""):
            raise EmpiricalValidationError(
                "`test_run_id` is required (or `environment` / `branch` / `created_after` to wait for the "
                "newest matching run); it rendered empty",
                field="test_run_id",
            )
        return given

    def _chosen_run_id(self, context: Context) -> int | None:
        """The run to wait for: `test_run_id`, or the newest run matching the filters (None: not yet)."""
        if "_chosen" in self.__dict__:
            return self.__dict__["_chosen"]  # type: ignore[no-any-return]
        filters = self._filters()
        if not filters:
            self.__dict__["_chosen"] = self.parsed_test_run_id
            return self.parsed_test_run_id
        ti = context.get("ti")
        remembered = ti.xcom_pull(task_ids=self.task_id, key=TEST_RUN_ID_KEY) if ti is not None else None
        if remembered is not None:  # chosen by an earlier poke or before a deferral of this try
            self.__dict__["_chosen"] = positive_int(remembered, "test_run_id")
            return self.__dict__["_chosen"]  # type: ignore[no-any-return]
        environment = text(self.environment, "environment") if self.environment else None
        branch = text(self.branch, "branch") if self.branch else None
        after = self._created_after(context)
        run = self.hook.latest_test_run(environment=environment, branch=branch, created_after=after)
        wanted = f"environment={environment!r}, branch={branch!r}, created after {after.isoformat()}"
        if run is None:
            self.log.info("No Empirical test run matches %s yet: waiting", wanted)
            return None
        self.log.info("Waiting for Empirical test run %s, the newest matching %s", run["id"], wanted)
        if ti is not None:
            ti.xcom_push(key=TEST_RUN_ID_KEY, value=run["id"])
        self.__dict__["_chosen"] = run["id"]
        return run["id"]

    def _created_after(self, context: Context) -> datetime:
        if self.created_after not in (None, ""):
            value: Any = self.created_after
            if isinstance(value, str):
                value = parse_created_at(value.strip())
            if not isinstance(value, datetime):
                raise EmpiricalValidationError(
                    "`created_after` must be an ISO 8601 time such as 2026-11-29T08:00:00Z, or a datetime",
                    field="created_after",
                )
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        dag_run = context.get("dag_run")
        asked = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None)
        asked = asked if isinstance(asked, datetime) else datetime.now(timezone.utc)
        return asked - timedelta(seconds=self.grace_period)

    @cached_property
    def _waiter(self) -> Waiter:
        """Judges each poke; in poke mode it lives across pokes and counts contract strikes."""
        from airflow_provider_empirical.outcome import MAX_STRIKES, Waiter

        waiter = Waiter(0, None, float(self.poke_interval), float("inf"), self.log)
        waiter.max_strikes = 1 if self.mode == "reschedule" else MAX_STRIKES
        return waiter

    def execute(self, context: Context) -> Any:
        try:
            self._filters()  # bad input fails here, before any request
            if not self.deferrable:
                return super().execute(context)
            result = self.poke(context)  # no deferral for a run that is already done
            if result:
                return result.xcom_value  # type: ignore[union-attr]
            if self._chosen_run_id(context) is None:
                return self._defer_search(context)
            self._defer()
        finally:
            if "hook" in self.__dict__:  # release the pooled connection
                self.hook.close()

    def _defer_search(self, context: Context) -> None:
        """No matching run yet: look again after `poke_interval` (waiting in the triggerer) until timeout."""
        try:
            from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
        except ImportError:  # Airflow 2.11 without the standard provider
            from airflow.triggers.temporal import TimeDeltaTrigger  # type: ignore[no-redef]

        ti = context["ti"]
        deadline = ti.xcom_pull(task_ids=self.task_id, key=SEARCH_DEADLINE_KEY)
        if deadline is None:
            deadline = time.time() + float(self.timeout)
            ti.xcom_push(key=SEARCH_DEADLINE_KEY, value=deadline)
        if time.time() >= float(deadline):
            raise AirflowSensorTimeout(f"No Empirical test run matched the filters {self._filters()} in time")
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=float(self.poke_interval))),
            method_name="search_again",
        )

    def search_again(self, context: Context, event: Any = None) -> Any:
        """Resume after a pause in the triggerer: look for the matching run again."""
        return self.execute(context)

    def _defer(self) -> None:
        from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

        self.defer(
            trigger=EmpiricalTestRunTrigger(
                test_run_id=self.__dict__["_chosen"],
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
        run_id = self._chosen_run_id(context)  # bad input fails here, before any request
        if run_id is None:
            return False
        self._waiter.test_run_id = run_id
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

    def on_kill(self) -> None:
        """A killed poking sensor cancels the run only when told (it may be another team's run)."""
        run_id = self.__dict__.get("_chosen")
        if not self.cancel_on_kill or run_id is None:
            return
        try:
            cancelled = self.hook.cancel_test_run(
                run_id, reason=f"Airflow sensor {self.dag_id}.{self.task_id} was killed"
            )
        except EmpiricalError as exc:
            self.log.warning("Could not cancel Empirical test run %s: %s", run_id, exc.message)
            return
        self.log.info("Test run %s %s", run_id, "cancelled" if cancelled else "had already ended")

    def _finish(self, context: Context, event: Any) -> dict[str, Any]:
        from airflow_provider_empirical.outcome import resolve, summary_of, validate_event

        event = dict(validate_event(event))
        if event["status"] == "failed" and event.get("test_run"):
            event["test_run"] = self.hook.with_failed_tests(event["test_run"])
        self.test_run_summary = summary_of(event)  # also when the task fails
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
