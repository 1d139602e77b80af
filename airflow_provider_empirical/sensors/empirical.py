"""EmpiricalTestRunSensor: wait for a test run in poke, reschedule or deferrable mode.

Cheap to import for DAG parsing: the hook and the trigger load only when the task runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout, BaseSensorOperator, PokeReturnValue

from airflow_provider_empirical.errors import EmpiricalError, EmpiricalValidationError
from airflow_provider_empirical.links import (
    CONN_ID_KEY,
    TEST_RUN_ID_KEY,
    TEST_RUN_URL_KEY,
    EmpiricalTestRunLink,
)
from airflow_provider_empirical.validation import poll_seconds, positive_int, positive_number, text
from airflow_provider_empirical.waiting import BaseEmpiricalWaitOperator

FILTERS = ("environment", "branch", "created_after")
SEARCH_DEADLINE_KEY = "empirical_search_deadline"  # when a deferrable search for a matching run gives up
MIN_POKE_SECONDS = 60.0  # a poke's calls may take one poke interval, and at least this long

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_empirical.api.test_runs import TestRun
    from airflow_provider_empirical.outcome import Waiter


class EmpiricalTestRunSensor(BaseEmpiricalWaitOperator, BaseSensorOperator):
    """Wait until an Empirical test run ends; return its summary (id, state, counts, duration, url).

    Succeeds when the run passes the pass policy (by default: it ended with tests executed and
    none failed). Fails when tests failed (naming them), when no test was executed, when the run
    errored (naming the error code) or was cancelled, and when its result cannot be read.
    ``cancelling`` and unknown states keep waiting; so do transient API errors, also while
    searching for a run that matches the filters. Answers that do not match the API contract
    end the wait after a few in a row (at once in reschedule mode, which keeps no memory of them
    between pokes). The connection, ``deferrable``, ``cancel_on_kill`` (off by default here: the
    sensor may be waiting on another team's run) and the pass policy are the parameters of
    `BaseEmpiricalWaitOperator`.

    :param test_run_id: the run to wait for (templated), e.g. the trigger task's ``.output``
        or ``"{{ ti.xcom_pull(task_ids='trigger_tests', key='test_run_id') }}"``.
    :param environment: instead of ``test_run_id``: wait for the newest run on this environment
        slug (templated), found through the list endpoint; "no matching run yet" keeps waiting.
    :param branch: instead of ``test_run_id``: ... on this test-repo branch (templated).
    :param created_after: with the filters: only runs created after this time (templated; an ISO
        8601 string or a datetime). Default: the DAG run's ``run_after`` minus ``grace_period``.
    :param grace_period: seconds before the DAG run was asked for that a run may have started
        and still count (default one hour).
    """

    template_fields: Sequence[str] = (
        "test_run_id",
        "environment",
        "branch",
        "created_after",
        *BaseEmpiricalWaitOperator.policy_fields,
    )
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.environment = environment
        self.branch = branch
        self.created_after = created_after
        self.grace_period = positive_number(grace_period, "grace_period")
        if self.deferrable:  # the triggerer polls at poke_interval: no hot loop against the API
            poll_seconds(self.poke_interval, "poke_interval")

    def execute(self, context: Context) -> Any:
        with self.hook_scope(self._poke_deadline(context)):
            filters = self._filters()  # bad input fails here, before any request
            self.policy()
            if filters and self.mode == "reschedule" and context.get("task_state_store") is None:
                raise EmpiricalValidationError(
                    "`mode='reschedule'` with `environment` / `branch` / `created_after` needs Airflow 3.3+: "
                    "older versions wipe a task's XCom at every reschedule, so the sensor would forget the "
                    "run it chose and could switch to another one. Use mode='poke' or deferrable=True",
                    field="mode",
                )
            if not self.deferrable:
                return super().execute(context)
            result = self.poke(context)  # no deferral for a run that is already done
            if result:
                return result.xcom_value  # type: ignore[union-attr]
            if self.waited_run_id is None:
                return self._defer_search(context)
            self._defer()

    def _poke_deadline(self, context: Context) -> float:
        """No call of a poke outlives the sensor's timeout, nor one poke interval (at least a minute)."""
        now = time.time()
        ti = context.get("ti")
        started = getattr(ti, "start_date", None)
        ends = (
            started.timestamp() + float(self.timeout)
            if isinstance(started, datetime)
            else now + float(self.timeout)
        )
        return min(max(ends, now + 1.0), now + max(float(self.poke_interval), MIN_POKE_SECONDS))

    # -- which run --

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
        if not given:
            self.parsed_test_run_id  # noqa: B018  # checked before any request
        return given

    def _chosen_run_id(self, context: Context) -> int | None:
        """The run to wait for: `test_run_id`, or the newest run matching the filters (None: not yet).

        The choice is kept for this try: in this process, in XCom (it survives a deferral) and,
        on Airflow 3.3+, in the durable task state (it survives a reschedule, which wipes XCom).
        """
        if self.waited_run_id is not None:
            return self.waited_run_id
        if not self._filters():
            self.waited_run_id = self.parsed_test_run_id
            return self.waited_run_id
        from airflow_provider_empirical.durable import ChoiceStore

        ti = context.get("ti")  # absent only when a test calls poke() bare
        try_number = int(getattr(ti, "try_number", 1))
        store = ChoiceStore.of(context)
        if store is not None:
            remembered = store.chosen(try_number)
        else:
            remembered = ti.xcom_pull(task_ids=self.task_id, key=TEST_RUN_ID_KEY) if ti is not None else None
        if remembered is not None:  # chosen by an earlier poke, reschedule or deferral of this try
            self.waited_run_id = positive_int(remembered, "test_run_id")
            if store is not None and ti is not None:  # a reschedule wiped XCom: publish the choice again
                ti.xcom_push(key=TEST_RUN_ID_KEY, value=self.waited_run_id)
            return self.waited_run_id
        run = self._search(context)
        if run is None:
            return None
        if store is not None:
            store.choose(run["id"], try_number)
        if ti is not None:
            ti.xcom_push(key=TEST_RUN_ID_KEY, value=run["id"])
        self.waited_run_id = run["id"]
        return run["id"]

    def _search(self, context: Context) -> TestRun | None:
        """The newest matching run; a transient API error is "not found yet", never the end of the wait."""
        environment = text(self.environment, "environment") if self.environment else None
        branch = text(self.branch, "branch") if self.branch else None
        after = self._created_after(context)
        wanted = f"environment={environment!r}, branch={branch!r}, created after {after.isoformat()}"
        try:
            run = self.hook.latest_test_run(environment=environment, branch=branch, created_after=after)
        except EmpiricalError as exc:
            if not exc.transient or exc.permanent:
                raise
            self.log.warning("Could not search for a run matching %s yet: %s", wanted, exc.message)
            return None
        if run is None:
            self.log.info("No Empirical test run matches %s yet: waiting", wanted)
            return None
        self.log.info("Waiting for Empirical test run %s, the newest matching %s", run["id"], wanted)
        return run

    def _created_after(self, context: Context) -> datetime:
        if self.created_after not in (None, ""):
            from airflow_provider_empirical.api.test_runs import parse_time

            value: Any = self.created_after
            if isinstance(value, str):
                value = parse_time(value.strip())
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

    # -- poking --

    @cached_property
    def _waiter(self) -> Waiter:
        """Judges each poke of the chosen run; in poke mode it lives across pokes and counts
        contract strikes (Airflow itself keeps the time)."""
        from airflow_provider_empirical.outcome import MAX_STRIKES, Waiter

        strikes = 1 if self.mode == "reschedule" else MAX_STRIKES
        assert self.waited_run_id is not None
        return Waiter(
            self.waited_run_id,
            None,
            float(self.poke_interval),
            float("inf"),
            self.log,
            max_strikes=strikes,
            policy=self.policy(),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        run_id = self._chosen_run_id(context)  # bad input fails here, before any request
        if run_id is None:
            return False
        result: TestRun | BaseException
        try:
            result = self.hook.get_test_run(run_id)
        except Exception as exc:
            result = exc
        if self._waiter.url is None and not isinstance(result, BaseException):
            self._waiter.url = self.hook.test_run_url(run_id)  # the answer may have named the slug
            if "ti" in context:  # absent only when a test calls poke() bare
                context["ti"].xcom_push(key=TEST_RUN_URL_KEY, value=self._waiter.url)
                context["ti"].xcom_push(key=CONN_ID_KEY, value=self.empirical_conn_id)
        step = self._waiter.step(result)
        if not isinstance(step, dict):
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.finish(context, step))

    # -- deferring --

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

        assert self.waited_run_id is not None
        self.defer(
            trigger=EmpiricalTestRunTrigger(
                test_run_id=self.waited_run_id,
                end_time=time.time() + float(self.timeout),
                empirical_conn_id=self.empirical_conn_id,
                poll_interval=float(self.poke_interval),
                test_run_url=self._waiter.url,
                policy=self.policy().to_dict(),
                cancel_on_kill=self.cancel_on_kill,
                cancel_reason=f"Airflow sensor {self.dag_id}.{self.task_id} was killed",
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger; a trigger timeout is a sensor timeout (so `soft_fail` applies)."""
        if isinstance(event, Mapping) and event.get("status") == "timeout":
            raise AirflowSensorTimeout(event.get("message") or "Timed out waiting for the test run")
        return self.complete(context, event)
