"""What the operator and the sensor share: how a wait ends, and the hook's lifetime.

`BaseEmpiricalWaitOperator` is the one home of the pass policy's parameters, of judging the
final event (the verdict, failed test names, asset events), of cancelling a run when the task
is killed, of OpenLineage, and of opening and closing the hook. Like Databricks' statements
mixin shared by its operator and sensor, but a `BaseOperator` subclass, so that Airflow applies
`default_args` to its parameters and lists them for `partial()`.

Cheap to import for DAG parsing: the hook, the HTTP drivers, the verdict and the outcome rules
load when a task runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_empirical.errors import EmpiricalError
from airflow_provider_empirical.links import CONN_ID_KEY, DEFAULT_CONN_ID, TEST_RUN_ID_KEY, TEST_RUN_URL_KEY
from airflow_provider_empirical.validation import boolean, non_negative_int

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_empirical.api.verdict import Policy
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

# Seconds the calls that finish a task may take once its wait is over (naming failed tests,
# cancelling on a timeout or a kill): a wait's own deadline has passed by then.
FINISH_SECONDS = 60.0


class BaseEmpiricalWaitOperator(BaseOperator):
    """Base of the tasks that wait for an Empirical test run and judge it.

    :param empirical_conn_id: connection of type ``empirical``.
    :param fail_on_test_failure: fail the task when the run ends with failures that count (see
        ``honor_snoozes`` and ``max_failed_tests``).
    :param fail_on_empty_run: fail the task when the run ended having executed no test.
    :param honor_snoozes: judge the run as Empirical's dashboard does: a failure a snooze covers
        does not count (read from ``failed_count_after_snoozing``, else the per-test rows'
        ``snooze_info``; when neither can be read every failure counts). ``False``: every failure
        counts.
    :param max_failed_tests: how many failures that count are tolerated (templated; default 0).
    :param fail_on_flaky: also fail when tests were flaky (passed on a retry).
    :param cancel_on_kill: cancel the run when the task is killed (marked failed or cleared while
        it waits, also while deferred on Airflow 3.3+).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    """

    # The pass policy: each name is a parameter here and a field of `api.verdict.Policy`.
    policy_fields: Sequence[str] = (
        "fail_on_test_failure",
        "fail_on_empty_run",
        "honor_snoozes",
        "max_failed_tests",
        "fail_on_flaky",
    )
    template_fields: Sequence[str] = policy_fields
    cancel_on_timeout = False  # the operator's parameter; a sensor never cancels on a timeout

    def __init__(
        self,
        *,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        fail_on_test_failure: bool = True,
        fail_on_empty_run: bool = True,
        honor_snoozes: bool = True,
        max_failed_tests: int | str = 0,
        fail_on_flaky: bool = False,
        cancel_on_kill: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.empirical_conn_id = empirical_conn_id
        self.fail_on_test_failure = fail_on_test_failure
        self.fail_on_empty_run = fail_on_empty_run
        self.honor_snoozes = honor_snoozes
        self.max_failed_tests = max_failed_tests
        self.fail_on_flaky = fail_on_flaky
        self.cancel_on_kill = cancel_on_kill
        self.deferrable = deferrable
        self.test_run_summary: dict[str, Any] | None = None  # the final run, for lineage
        self.waited_run_id: int | None = None  # the run this task waits for (cancelled on a kill)
        self.api_deadline: float | None = None  # epoch seconds no API call of this try may outlive

    # -- the hook, for the life of one execute() / execute_complete() --

    @cached_property
    def hook(self) -> EmpiricalHook:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook

        return EmpiricalHook(self.empirical_conn_id, deadline=self.api_deadline)

    @contextlib.contextmanager
    def hook_scope(self, deadline: float | None) -> Iterator[None]:
        """Every API call inside gets `deadline`; the pooled connection is released on the way out."""
        self.api_deadline = deadline
        if "hook" in self.__dict__:
            self.hook.deadline = deadline
        try:
            yield
        finally:
            if "hook" in self.__dict__:
                self.hook.close()

    def policy(self) -> Policy:
        """The rendered pass policy, checked: a bad value fails here, naming the parameter."""
        from airflow_provider_empirical.api.verdict import Policy

        values: dict[str, Any] = {
            name: (non_negative_int if name == "max_failed_tests" else boolean)(getattr(self, name), name)
            for name in self.policy_fields
        }
        return Policy(**values)

    # -- the end of a wait --

    def publish(self, context: Context, test_run_id: int, url: str) -> None:
        """Push the run's id and link to XCom as soon as it is known (the link reads it from there)."""
        self.waited_run_id = test_run_id
        ti = context["ti"]
        ti.xcom_push(key=TEST_RUN_ID_KEY, value=test_run_id)
        ti.xcom_push(key=TEST_RUN_URL_KEY, value=url)
        ti.xcom_push(key=CONN_ID_KEY, value=self.empirical_conn_id)

    def finish(self, context: Context, event: Any) -> dict[str, Any]:
        """Judge the final event (cancelling first on a timeout when asked); emit asset events."""
        from airflow_provider_empirical.outcome import resolve, summary_of, validate_event, verdict_of

        event = dict(validate_event(event))
        policy = self.policy()
        if event["status"] == "timeout" and self.cancel_on_timeout:
            event = self._cancel_after_timeout(event)
        run = event.get("test_run")
        if run and run.get("failed_count") and run.get("failed_tests") is None:
            run = event["test_run"] = self.hook.with_failed_tests(run)  # names (and snoozes, if the rows say)
        if run and event.get("url"):  # the task's link knows the project's slug
            from airflow_provider_empirical.api.test_runs import link_tests

            link_tests(run, event["url"])
        self.test_run_summary = summary_of(event, verdict_of(event, policy))  # also when the task fails
        summary = resolve(event, policy, log=self.log)
        summary.update(self.summary_extras())
        if self.outlets:
            from airflow_provider_empirical.assets import emit_outlet_events

            emit_outlet_events(context, self.outlets, summary)
        return summary

    def _cancel_after_timeout(self, event: dict[str, Any]) -> dict[str, Any]:
        """Cancel a run the wait gave up on; a run that ended meanwhile (412) is judged as it ended."""
        test_run_id = event["test_run_id"]
        cancelled, sentence = self.cancel(test_run_id, why="timed out")
        if cancelled is False:
            from airflow_provider_empirical.api.test_runs import is_terminal
            from airflow_provider_empirical.outcome import finished_event

            try:
                run = self.hook.get_test_run(test_run_id, deadline=time.time() + FINISH_SECONDS)
            except EmpiricalError as exc:
                self.log.warning("Could not read test run %s after its cancel: %s", test_run_id, exc.message)
            else:
                if is_terminal(run):
                    self.log.info("Test run %s ended just as the wait timed out: judging it", test_run_id)
                    return dict(finished_event(run, event.get("url")))
        return {**event, "message": event["message"] + sentence}

    def summary_extras(self) -> dict[str, Any]:
        """What a subclass adds to the summary it returns (and its asset events carry)."""
        return {}

    # -- stopping the run --

    def cancel(self, test_run_id: int, *, why: str) -> tuple[bool | None, str]:
        """Cancel the run, best effort: (True: cancelled, False: it had already ended, None: the
        cancel failed), and the sentence a failure message gains."""
        reason = f"Airflow task {self.dag_id}.{self.task_id} {why}"
        try:
            cancelled = self.hook.cancel_test_run(
                test_run_id, reason=reason, deadline=time.time() + FINISH_SECONDS
            )
        except EmpiricalError as exc:
            self.log.warning("Could not cancel Empirical test run %s: %s", test_run_id, exc.message)
            return None, f". Cancelling the run failed: {exc.message}"
        if cancelled:
            self.log.info("Cancelled Empirical test run %s (%s)", test_run_id, reason)
            return True, ". The run was cancelled (cancel_on_timeout=True)"
        return False, ". The run had already ended, so there was nothing to cancel"

    def on_kill(self) -> None:
        """A killed polling task cancels its run when `cancel_on_kill` (the trigger does it when deferred)."""
        if self.waited_run_id is None:
            return
        if not self.cancel_on_kill:
            self.log.warning(
                "Task killed; Empirical test run %s keeps going (cancel_on_kill=False)", self.waited_run_id
            )
            return
        self.cancel(self.waited_run_id, why="was killed")

    def complete(self, context: Context, event: Mapping[str, Any] | None) -> dict[str, Any]:
        """Resume after the trigger: judge its event, with a hook for this new process."""
        with self.hook_scope(time.time() + FINISH_SECONDS):
            if isinstance(event, Mapping) and isinstance(event.get("test_run_id"), int):
                self.waited_run_id = event["test_run_id"]
            return self.finish(context, event)

    # -- OpenLineage (only when apache-airflow-providers-openlineage is installed; it calls these) --

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_empirical.openlineage import facets_for

        return facets_for(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_empirical.openlineage import facets_for

        return facets_for(self, task_instance)
