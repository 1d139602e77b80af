"""Operators: start an Empirical test run (and optionally wait for it), or cancel one.

DAG parsing imports this module on every cycle, so only what costs nothing is imported at
the top (Airflow's base classes, errors, validation, links). The hook and the HTTP drivers
(httpx, aiohttp), the outcome rules and the trigger load when a task runs, inside the methods
that need them: `make bench` (figure 1) measures that import cost.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_provider_empirical.errors import (
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalTriggerUncertainError,
)
from airflow_provider_empirical.links import (
    DEFAULT_CONN_ID,
    TEST_RUN_ID_KEY,
    TEST_RUN_URL_KEY,
    EmpiricalTestRunLink,
)
from airflow_provider_empirical.validation import (
    TRIGGER_FIELDS,
    boolean,
    poll_seconds,
    positive_number,
    trigger_request_body,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_empirical.hooks.empirical import EmpiricalHook
    from airflow_provider_empirical.models import TestRun

# Durable task state (Airflow 3.3+), kept across tries of one task instance. The id key is the
# one released versions wrote: renaming it would orphan runs stored by in-flight tasks.
STORED_RUN_KEY = "empirical_test_run_id"
RERUN_OF_KEY = "empirical_rerun_of"  # the run the stored one re-runs (it outlives a deferral)
TRIGGER_SENT_KEY = "empirical_trigger_sent_at"


class EmpiricalTriggerTestRunOperator(BaseOperator):
    """Trigger an Empirical test run (``PUT /api/test-runs``).

    Pushes the run id (XCom ``test_run_id``, and the return value unless it waits) and its
    dashboard URL (XCom ``test_run_url``) as soon as the run exists. With
    ``wait_for_completion=True`` it then waits, in the triggerer when ``deferrable``, else by
    polling, and returns the run's summary.

    Every API field below is templated; dicts and lists are rendered recursively.

    :param environment: environment slug to test, e.g. ``production`` (required).
    :param build: ``{"url", "branch", "commit", "commit_url", "version"}`` of the build under test.
    :param branch: test-repo branch to run; cannot be combined with ``build``.
    :param metadata: custom key/value pairs (strings or numbers).
    :param environment_variables_overrides: ``[{"name": ..., "value": ...}]`` or ``{NAME: value}``.
    :param tags: only tests with these tags run, e.g. ``["@smoke"]``.
    :param test_case_ids: only these Playwright test ids run (sent by Empirical's own tooling; not
        on the API reference page yet).
    :param project_id: legacy body field; must match the project of the key / connection.
    :param send_notifications: whether Empirical sends its run notifications (API default: true).
    :param total_shards: number of shards to split the run across.
    :param rerun_source_id: id of the run to re-run.
    :param rerun_only_failed: with ``rerun_source_id``: re-run only the tests that failed.
    :param github_actor: GitHub user to attribute the run to.
    :param extra_body: request fields this release does not know yet (templated), sent as given;
        the server decides what they mean. A known field is refused here: use its argument.
    :param empirical_conn_id: connection of type ``empirical``.
    :param include_airflow_metadata: add ``airflow_dag_id``, ``airflow_run_id``, ``airflow_task_id``
        and ``airflow_try_number`` to ``metadata`` (your own keys win).
    :param wait_for_completion: wait for the run to end (default: no; use the sensor downstream).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between two status checks while waiting (at least 1).
    :param timeout: seconds to wait (wall clock) before failing.
    :param fail_on_test_failure: fail the task when the run ends with failed tests.
    :param fail_on_empty_run: fail the task when the run ended having executed no test.
    :param durable: on Airflow 3.3+, remember the run in the task's durable state so a retry
        re-attaches to it (or re-runs it) instead of starting another. ``False`` opts out.
    :param cancel_on_kill: when the task is killed (marked failed or cleared while it waits,
        also while deferred), cancel its run.
    :param cancel_on_timeout: when ``timeout`` passes, cancel the run before failing.
    :param rerun_failed_on_retry: on a retry whose previous try's run ended with failed tests,
        re-run only those tests (``POST .../re-run``, ``only_failed``) instead of a full new run,
        and judge the task by the re-run. Needs Airflow 3.3+ (durable task state, ``durable``
        on); elsewhere the previous try's run cannot be found reliably, and the task logs that
        it started a full run instead.
    """

    template_fields: Sequence[str] = (*TRIGGER_FIELDS, "extra_body")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "build": "json",
        "metadata": "json",
        "environment_variables_overrides": "json",
        "extra_body": "json",
    }
    operator_extra_links = (EmpiricalTestRunLink(),)
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        environment: str,
        build: dict[str, str] | None = None,
        branch: str | None = None,
        metadata: dict[str, str | int | float] | None = None,
        environment_variables_overrides: list[dict[str, str]] | dict[str, str] | None = None,
        tags: list[str] | None = None,
        test_case_ids: list[str] | None = None,
        project_id: int | None = None,
        send_notifications: bool | None = None,
        total_shards: int | None = None,
        rerun_source_id: int | None = None,
        rerun_only_failed: bool | None = None,
        github_actor: str | None = None,
        extra_body: dict[str, Any] | None = None,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        include_airflow_metadata: bool = True,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        timeout: float = 24 * 60 * 60,
        fail_on_test_failure: bool = True,
        fail_on_empty_run: bool = True,
        durable: bool = True,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = False,
        rerun_failed_on_retry: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.environment = environment
        self.build = build
        self.branch = branch
        self.metadata = metadata
        self.environment_variables_overrides = environment_variables_overrides
        self.tags = tags
        self.test_case_ids = test_case_ids
        self.project_id = project_id
        self.send_notifications = send_notifications
        self.total_shards = total_shards
        self.rerun_source_id = rerun_source_id
        self.rerun_only_failed = rerun_only_failed
        self.github_actor = github_actor
        self.extra_body = extra_body
        self.empirical_conn_id = empirical_conn_id
        self.include_airflow_metadata = include_airflow_metadata
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_seconds(poll_interval, "poll_interval")
        self.timeout = positive_number(timeout, "timeout")
        self.fail_on_test_failure = fail_on_test_failure
        self.fail_on_empty_run = fail_on_empty_run
        self.durable = durable
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.rerun_failed_on_retry = rerun_failed_on_retry
        self.test_run_id: int | None = None
        self._rerun_of: int | None = None
        self._where = f"{self.dag_id}.{self.task_id}"  # names the task in a cancel reason
        self.test_run_summary: dict[str, Any] | None = None  # the final run, for lineage

    @cached_property
    def hook(self) -> EmpiricalHook:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook

        return EmpiricalHook(self.empirical_conn_id)

    def execute(self, context: Context) -> Any:
        try:
            body = self._request_body(context)  # bad input fails here, before any request
            self._where = f"{self.dag_id}.{self.task_id} (DAG run {context.get('run_id')})"
            if not self.wait_for_completion:
                return self._start(context, body)
            from airflow_provider_empirical.models import is_terminal

            stored = self._stored_run(context)
            if stored is not None:
                self._rerun_of = self._store(context).get(RERUN_OF_KEY)
            if stored is not None and not is_terminal(stored):
                self.log.info("Re-attaching to test run %s, started by an earlier try", stored["id"])
                test_run_id = stored["id"]
                self._publish(context, test_run_id)
            elif stored is not None and self._succeeded(stored):
                self.log.info("Test run %s, started by an earlier try, already ended well", stored["id"])
                self._publish(context, stored["id"])
                return self._finish(context, self._finished_event(stored))
            else:
                test_run_id = self._start(context, body, previous=stored)
            if self.deferrable:
                return self._defer(context, test_run_id)
            return self._wait(context, test_run_id)
        finally:
            if "hook" in self.__dict__:  # release the pooled connection; the hook reopens if used again
                self.hook.close()

    # -- the request --

    def _request_body(self, context: Context) -> dict[str, Any]:
        """The validated request body, with the Airflow run's coordinates in `metadata`."""
        fields = {name: getattr(self, name) for name in TRIGGER_FIELDS}
        body = trigger_request_body(fields, self.extra_body)
        for name in ("durable", "cancel_on_kill", "cancel_on_timeout", "rerun_failed_on_retry"):
            boolean(getattr(self, name), name)
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

    def _start(self, context: Context, body: dict[str, Any], previous: TestRun | None = None) -> int:
        """Start the run (or re-run the previous try's failed tests) and publish it before any wait."""

        store = self._store(context)
        if store is not None and store.get(TRIGGER_SENT_KEY) is not None:
            store.delete(TRIGGER_SENT_KEY)  # said once: the next start (a user's clear) is a fresh one
            raise EmpiricalTriggerUncertainError(
                "An earlier try of this task sent its trigger request and ended before it could record "
                "the test run it created (the worker died or was killed). A run may exist, so no second "
                "one is started: look for it in the Empirical dashboard, then clear this task to start anew"
            )
        if store is not None:
            store.set(TRIGGER_SENT_KEY, context["ti"].try_number)
        self._rerun_of = None
        try:
            if previous is not None and self._should_rerun(previous):
                run = self.hook.rerun_test_run(previous["id"], only_failed=True)
                self._rerun_of = previous["id"]
                what = f"Re-running the failed tests of test run {previous['id']}"
            else:
                run = self.hook._put_test_run(body)
                what = f"Triggered Empirical test run on {body['environment']!r}"
        except EmpiricalError as exc:
            if store is not None and not exc.may_have_created_run:
                store.delete(TRIGGER_SENT_KEY)  # surely no run: a retry may try again
            raise
        if store is not None:
            if self.wait_for_completion:
                store.set(STORED_RUN_KEY, run["id"])
                if self._rerun_of is not None:
                    store.set(RERUN_OF_KEY, self._rerun_of)
                else:
                    store.delete(RERUN_OF_KEY)
            store.delete(TRIGGER_SENT_KEY)
        self._publish(context, run["id"])
        self.log.info(
            "%s: run %s (state %s) %s", what, run["id"], run["state"], self.hook.test_run_url(run["id"])
        )
        return run["id"]

    def _should_rerun(self, previous: TestRun) -> bool:
        if not self.rerun_failed_on_retry:
            return False
        from airflow_provider_empirical.models import result_of

        if result_of(previous) == "failed":
            return True
        self.log.info(
            "rerun_failed_on_retry: the previous try's run %s ended %s, not with failed tests: "
            "starting a full run",
            previous["id"],
            result_of(previous),
        )
        return False

    def _publish(self, context: Context, test_run_id: int) -> None:
        self.test_run_id = test_run_id
        ti = context["ti"]
        ti.xcom_push(key=TEST_RUN_ID_KEY, value=test_run_id)
        ti.xcom_push(key=TEST_RUN_URL_KEY, value=self.hook.test_run_url(test_run_id))

    # -- durable state: the three paths --
    # `execute` reads the run an earlier try of this task instance stored (Airflow 3.3+ keeps
    # `task_state_store` across tries; older versions have none, and every try starts fresh):
    #   fresh:            nothing stored -> start a run, store its id, wait
    #   re-attach:        the stored run is still going -> wait for it, send nothing
    #   already finished: the stored run ended well -> return its result, send nothing
    # A stored run that ended badly is followed by a new run, or, with rerun_failed_on_retry and
    # failed tests, by a re-run of those tests. A stored id the API no longer knows (404: deleted,
    # or the connection now points at another project) is forgotten and a new run starts.
    # Clearing a task or its DAG run keeps the store, so it re-attaches too (durable=False opts out).

    def _store(self, context: Context) -> Any:
        """The durable task state (Airflow 3.3+), or None: older Airflow, or durable=False."""
        return context.get("task_state_store") if self.durable else None

    def _stored_run(self, context: Context) -> TestRun | None:
        """The run an earlier try stored (only a waiting task re-attaches), fetched now."""

        store = self._store(context)
        stored_id = store.get(STORED_RUN_KEY) if store is not None else None
        if stored_id is None:
            if self.rerun_failed_on_retry and store is None and context["ti"].try_number > 1:
                self.log.warning(
                    "rerun_failed_on_retry needs Airflow 3.3+ durable task state (and durable=True) to find "
                    "the previous try's run; starting a full run instead"
                )
            return None
        try:
            return self.hook.get_test_run(stored_id)
        except EmpiricalNotFoundError:
            self.log.warning(
                "Test run %s stored by an earlier try is gone (404): starting a new run", stored_id
            )
            store.delete(STORED_RUN_KEY)
            return None

    def _succeeded(self, run: TestRun) -> bool:
        from airflow_provider_empirical.outcome import passes, status_of

        return passes(
            status_of(run),
            fail_on_test_failure=self.fail_on_test_failure,
            fail_on_empty_run=self.fail_on_empty_run,
        )

    # -- waiting --

    def _finished_event(self, run: TestRun) -> Any:
        from airflow_provider_empirical.outcome import finished_event

        return finished_event(run, self.hook.test_run_url(run["id"]))

    def _wait(self, context: Context, test_run_id: int) -> dict[str, Any]:
        from airflow_provider_empirical.outcome import wait_for_test_run

        event = wait_for_test_run(
            self.hook,
            test_run_id,
            url=self.hook.test_run_url(test_run_id),
            poll_interval=self.poll_interval,
            end_time=time.time() + self.timeout,
            log=self.log,
        )
        return self._finish(context, event)

    def _defer(self, context: Context, test_run_id: int) -> Any:
        from airflow_provider_empirical.models import is_terminal
        from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

        end_time = time.time() + self.timeout
        try:
            run = self.hook.get_test_run(test_run_id)
        except EmpiricalError as exc:
            if not exc.transient:
                raise
            self.log.warning("Could not check test run %s before deferring: %s", test_run_id, exc.message)
        else:
            if is_terminal(run):
                return self._finish(context, self._finished_event(run))
        self.defer(
            trigger=EmpiricalTestRunTrigger(
                test_run_id=test_run_id,
                end_time=end_time,
                empirical_conn_id=self.empirical_conn_id,
                poll_interval=self.poll_interval,
                test_run_url=self.hook.test_run_url(test_run_id),
                cancel_on_kill=self.cancel_on_kill,
                cancel_reason=f"Airflow task {self._where} was killed",
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: succeed with the run summary, or fail with the trigger's message."""
        store = self._store(context)
        self._rerun_of = store.get(RERUN_OF_KEY) if store is not None else None
        self._where = f"{self.dag_id}.{self.task_id} (DAG run {context.get('run_id')})"
        try:
            return self._finish(context, event)
        finally:
            if "hook" in self.__dict__:
                self.hook.close()

    def _finish(self, context: Context, event: Any) -> dict[str, Any]:
        """Judge the final event (cancelling first on a timeout when asked) and emit asset events."""
        from airflow_provider_empirical.outcome import resolve, summary_of, validate_event

        event = dict(validate_event(event))
        if event["status"] == "failed" and event.get("test_run"):
            event["test_run"] = self.hook.with_failed_tests(event["test_run"])
        if event["status"] == "timeout" and self.cancel_on_timeout:
            event["message"] += self._cancel(event["test_run_id"], why="timed out")
        self.test_run_summary = summary_of(event)  # also when the task fails
        summary = resolve(
            event,
            fail_on_test_failure=self.fail_on_test_failure,
            fail_on_empty_run=self.fail_on_empty_run,
            log=self.log,
        )
        if self._rerun_of is not None:
            summary["rerun_of"] = self._rerun_of
        if isinstance(self.build, dict) and self.build:  # rendered: what was tested, for asset events
            summary["build"] = dict(self.build)
        if self.outlets:
            from airflow_provider_empirical.assets import emit_outlet_events

            emit_outlet_events(context, self.outlets, summary)
        return summary

    # -- stopping the run --

    def _cancel(self, test_run_id: int, *, why: str) -> str:
        """Cancel the run, best effort; returns the sentence the failure message gains."""

        reason = f"Airflow task {self._where} {why}"
        try:
            cancelled = self.hook.cancel_test_run(test_run_id, reason=reason)
        except EmpiricalError as exc:
            self.log.warning("Could not cancel Empirical test run %s: %s", test_run_id, exc.message)
            return f". Cancelling the run failed: {exc.message}"
        if cancelled:
            self.log.info("Cancelled Empirical test run %s (%s)", test_run_id, reason)
            return ". The run was cancelled (cancel_on_timeout=True)"
        return ". The run had already ended, so there was nothing to cancel"

    def on_kill(self) -> None:
        """A killed polling task cancels its run (the deferred wait's trigger does the same)."""
        if self.test_run_id is None:
            return
        if not self.cancel_on_kill:
            self.log.warning(
                "Task killed; test run %s keeps going (cancel_on_kill=False): %s",
                self.test_run_id,
                self.hook.test_run_url(self.test_run_id),
            )
            return
        self._cancel(self.test_run_id, why="was killed")

    # -- OpenLineage (only when apache-airflow-providers-openlineage is installed; it calls these) --

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow_provider_empirical.openlineage import facets_for

        return facets_for(self, task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        from airflow_provider_empirical.openlineage import facets_for

        return facets_for(self, task_instance)


class EmpiricalCancelTestRunOperator(BaseOperator):
    """Cancel an Empirical test run (``POST /api/test-runs/{id}/cancel``), e.g. in a rollback branch.

    Succeeds whether it cancelled the run or the run had already ended (it logs which).

    :param test_run_id: the run to cancel (templated), e.g. the trigger task's ``.output``.
    :param reason: why (templated); recorded by Empirical with the cancelling user.
    :param empirical_conn_id: connection of type ``empirical``.
    """

    template_fields: Sequence[str] = ("test_run_id", "reason")
    operator_extra_links = (EmpiricalTestRunLink(),)
    ui_color = "#fdeee8"

    def __init__(
        self,
        *,
        test_run_id: int | str,
        reason: str | None = None,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.reason = reason
        self.empirical_conn_id = empirical_conn_id

    def execute(self, context: Context) -> bool:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook
        from airflow_provider_empirical.validation import positive_int, text

        test_run_id = positive_int(self.test_run_id, "test_run_id")
        reason = text(self.reason, "reason") if self.reason is not None else None
        hook = EmpiricalHook(self.empirical_conn_id)
        try:
            url = hook.test_run_url(test_run_id)
            context["ti"].xcom_push(key=TEST_RUN_URL_KEY, value=url)
            cancelled = hook.cancel_test_run(test_run_id, reason=reason)
        finally:
            hook.close()
        if cancelled:
            self.log.info("Cancelled Empirical test run %s: %s", test_run_id, url)
        else:
            self.log.info("Empirical test run %s had already ended: nothing to cancel. %s", test_run_id, url)
        return cancelled
