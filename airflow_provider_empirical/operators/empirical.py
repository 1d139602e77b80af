"""Operators: start an Empirical test run (and optionally wait for it), or cancel one.

DAG parsing imports this module on every cycle, so only what costs nothing is imported at the
top (Airflow's base classes, errors, validation, links). The hook and the HTTP drivers (httpx,
aiohttp), the verdict, the durable state and the trigger load when a task runs, inside the
methods that need them: `make bench` (figure 1) measures that import cost.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_empirical.errors import (
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalTriggerUncertainError,
    EmpiricalValidationError,
)
from airflow_provider_empirical.links import (
    CONN_ID_KEY,
    DEFAULT_CONN_ID,
    TEST_RUN_URL_KEY,
    EmpiricalTestRunLink,
)
from airflow_provider_empirical.validation import (
    TRIGGER_FIELDS,
    boolean,
    poll_seconds,
    positive_number,
    test_names_of,
    text,
    trigger_request_body,
)
from airflow_provider_empirical.waiting import FINISH_SECONDS, BaseEmpiricalWaitOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_empirical.api.test_runs import TestRun
    from airflow_provider_empirical.durable import RunStore, StoredRun


class EmpiricalTriggerTestRunOperator(BaseEmpiricalWaitOperator):
    """Trigger an Empirical test run (``PUT /api/test-runs``).

    Pushes the run id (XCom ``test_run_id``, and the return value unless it waits) and its
    dashboard URL (XCom ``test_run_url``) as soon as the run exists. With
    ``wait_for_completion=True`` it then waits, in the triggerer when ``deferrable``, else by
    polling, and returns the run's summary.

    Every API field below is templated; dicts and lists are rendered recursively. The connection,
    ``deferrable`` and the pass policy (``fail_on_test_failure``, ``fail_on_empty_run``, ...) are
    the parameters of `BaseEmpiricalWaitOperator`, shared with the sensor.

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
    :param test_files: file path prefixes (templated), e.g. ``["checkout/", "login.spec.ts"]``: their
        active tests run. Resolved before the trigger through the test-cases endpoint into
        ``test_case_ids`` (merged with any given), with the Playwright serial-group members they need.
    :param test_names: exact test titles (templated): those tests run.
    :param test_project: a Playwright project (templated), e.g. ``chromium``: narrows the two above.
    :param check_environment: refuse an unknown or disabled ``environment`` before any run exists
        (the check is skipped, with a log line, when the environments cannot be listed).
    :param reuse_passed_run: with ``build.commit``: a run of this environment that already tested
        that commit is waited for while it runs, or returned at once when it passed the task's
        pass policy (``reused_run: true``); one that failed is not reused.
    :param reuse_within: seconds back that such a run counts (default one day).
    :param include_airflow_metadata: add ``airflow_dag_id``, ``airflow_run_id``, ``airflow_task_id``
        and ``airflow_try_number`` to ``metadata`` (your own keys win).
    :param wait_for_completion: wait for the run to end (default: no; use the sensor downstream).
    :param poll_interval: seconds between two status checks while waiting (at least 1).
    :param timeout: seconds to wait (wall clock) before failing.
    :param durable: on Airflow 3.3+, remember the run in the task's durable state so a retry
        re-attaches to it (or re-runs it) instead of starting another. ``False`` opts out.
    :param cancel_on_kill: when the task is killed (marked failed or cleared while it waits,
        also while deferred), cancel its run (default here: yes).
    :param cancel_on_timeout: when ``timeout`` passes, cancel the run before failing.
    :param rerun_failed_on_retry: on a retry whose previous try's run ended with failed tests,
        re-run only those tests (``POST .../re-run``, ``only_failed``) instead of a full new run,
        and judge the task by the re-run. Needs Airflow 3.3+ (durable task state, ``durable``
        on); elsewhere the previous try's run cannot be found reliably, and the task logs that
        it started a full run instead.
    """

    template_fields: Sequence[str] = (
        *TRIGGER_FIELDS,
        "extra_body",
        "test_files",
        "test_names",
        "test_project",
        *BaseEmpiricalWaitOperator.policy_fields,
    )
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
        test_files: list[str] | None = None,
        test_names: list[str] | None = None,
        test_project: str | None = None,
        check_environment: bool = True,
        reuse_passed_run: bool = False,
        reuse_within: float = 24 * 60 * 60,
        include_airflow_metadata: bool = True,
        wait_for_completion: bool = False,
        poll_interval: float = 30.0,
        timeout: float = 24 * 60 * 60,
        durable: bool = True,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = False,
        rerun_failed_on_retry: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(cancel_on_kill=cancel_on_kill, **kwargs)
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
        self.test_files = test_files
        self.test_names = test_names
        self.test_project = test_project
        self.check_environment = check_environment
        self.reuse_passed_run = reuse_passed_run
        self.reuse_within = reuse_within
        self.include_airflow_metadata = include_airflow_metadata
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_seconds(poll_interval, "poll_interval")
        self.timeout = positive_number(timeout, "timeout")
        self.durable = durable
        self.cancel_on_timeout = cancel_on_timeout
        self.rerun_failed_on_retry = rerun_failed_on_retry
        self.rerun_of: int | None = None  # the run the awaited one re-runs (rerun_failed_on_retry)
        self.reused_run = False  # reuse_passed_run found a run of this commit
        self.selected_test_count: int | None = None  # tests chosen by file or name

    def execute(self, context: Context) -> Any:
        end_time = time.time() + self.timeout
        with self.hook_scope(end_time):
            policy = self.policy()  # bad input fails here, before any request
            body = self._request_body(context)
            from airflow_provider_empirical.api.test_runs import is_terminal
            from airflow_provider_empirical.api.verdict import passes
            from airflow_provider_empirical.durable import RunStore, request_digest
            from airflow_provider_empirical.outcome import finished_event

            environment_id = self._choose_environment_and_tests(body)  # may fail: still no run
            store = RunStore.of(context, self.log, enabled=self.durable)
            previous = self._previous_run(context, store, body) if self.wait_for_completion else None
            if previous is None and self.reuse_passed_run:
                previous = self._reusable_run(body, environment_id, policy)
                if previous is not None and store is not None and self.wait_for_completion:
                    store.remember(previous["id"], digest=request_digest(body), rerun_of=None)
            if not self.wait_for_completion:
                if previous is not None:  # a reused run: its id, as a trigger would give one
                    self.publish(context, previous["id"], self.hook.test_run_url(previous["id"]))
                    return previous["id"]
                return self._start(context, body, store)["id"]
            created_at = None  # when this try created the run (a 404 right after may be lag)
            if previous is not None and not is_terminal(previous):
                self.log.info("Waiting for test run %s, which already tests this request", previous["id"])
                test_run_id = previous["id"]
                self.publish(context, test_run_id, self.hook.test_run_url(test_run_id))
            elif previous is not None and passes(previous, policy):
                self.log.info("Test run %s already ended well for this request", previous["id"])
                url = self.hook.test_run_url(previous["id"])
                self.publish(context, previous["id"], url)
                return self.finish(context, finished_event(previous, url, policy))
            else:
                test_run_id = self._start(context, body, store, previous=previous)["id"]
                created_at = time.time()
            if self.deferrable:
                return self._defer(context, test_run_id, end_time, created_at)
            return self._wait(context, test_run_id, end_time, created_at)

    # -- before a run exists: where, which tests, and whether this commit was tested --

    def _choose_environment_and_tests(self, body: dict[str, Any]) -> int | None:
        """Check the environment, resolve tests chosen by file or name into `test_case_ids` (in
        `body`); returns the environment's id when the check learned it."""
        from airflow_provider_empirical import choosing

        environment = None
        if self.check_environment:
            environment = choosing.check_environment(self.hook, body["environment"], self.log)
        if self.test_files or self.test_names:
            ids = choosing.resolve_tests(
                self.hook,
                files=self._test_files,
                names=self._test_names,
                project=self._test_project,
                given_ids=body.get("test_case_ids") or [],
                log=self.log,
            )
            body["test_case_ids"] = ids
            self.selected_test_count = len(ids)
        return environment["id"] if environment is not None else None

    def _reusable_run(self, body: dict[str, Any], environment_id: int | None, policy: Any) -> TestRun | None:
        from airflow_provider_empirical import choosing

        run = choosing.reusable_run(
            self.hook,
            environment=body["environment"],
            environment_id=environment_id,
            commit=body["build"]["commit"],
            within=self._reuse_within,
            policy=policy,
            log=self.log,
        )
        self.reused_run = run is not None
        return run

    # -- the request --

    def _request_body(self, context: Context) -> dict[str, Any]:
        """The validated request body, with the Airflow run's coordinates in `metadata`."""
        fields = {name: getattr(self, name) for name in TRIGGER_FIELDS}
        body = trigger_request_body(fields, self.extra_body)
        for name in (
            "durable",
            "cancel_on_kill",
            "cancel_on_timeout",
            "rerun_failed_on_retry",
            "check_environment",
            "reuse_passed_run",
        ):
            boolean(getattr(self, name), name)
        self._test_files = test_names_of(self.test_files, "test_files")
        self._test_names = test_names_of(self.test_names, "test_names")
        self._test_project = (
            text(self.test_project, "test_project") if self.test_project is not None else None
        )
        if self._test_project is not None and not (self._test_files or self._test_names):
            raise EmpiricalValidationError(
                "`test_project` narrows `test_files` / `test_names`: give one of them too",
                field="test_project",
            )
        self._reuse_within = positive_number(self.reuse_within, "reuse_within")
        if boolean(self.reuse_passed_run, "reuse_passed_run") and not (body.get("build") or {}).get("commit"):
            raise EmpiricalValidationError(
                "`build.commit` is required with `reuse_passed_run`: a run is reused only for the exact "
                "build it tested (matched on environment and commit, never on time alone)",
                field="build.commit",
            )
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

    def _start(
        self, context: Context, body: dict[str, Any], store: RunStore | None, previous: TestRun | None = None
    ) -> TestRun:
        """Start the run (or re-run the previous try's failed tests) and publish it before any wait.

        The "trigger sent" mark is written right before the request leaves and cleared as soon as
        its answer (or a failure that proves nothing was created, or a failure this task reports
        as "a run may exist") is known: only a try that died mid-request leaves it behind.
        """
        if store is not None and store.trigger_sent():
            store.clear_sending()  # said once, in this failure: the next start (a user's clear) is fresh
            raise EmpiricalTriggerUncertainError(
                "An earlier try of this task sent its trigger request and ended before it could record "
                "the test run it created (the worker died or was killed). A run may exist, so no second "
                "one is started: look for it in the Empirical dashboard, then clear this task to start anew"
            )
        try_number = context["ti"].try_number
        mark = (lambda: store.mark_sending(try_number)) if store is not None else None
        rerun = previous is not None and self._should_rerun(previous)
        try:
            if rerun and previous is not None:
                run = self.hook.rerun_test_run(previous["id"], only_failed=True, before_send=mark)
                what = f"Re-running the failed tests of test run {previous['id']}"
            else:
                run = self.hook.send_trigger_request(body, before_send=mark)
                what = f"Triggered Empirical test run on {body['environment']!r}"
        except EmpiricalError:
            if store is not None:
                store.clear_sending()  # nothing created, or the failure says a run may exist
            raise
        self.rerun_of = previous["id"] if rerun and previous is not None else None
        if store is not None:
            if self.wait_for_completion:
                from airflow_provider_empirical.durable import request_digest

                store.remember(run["id"], digest=request_digest(body), rerun_of=self.rerun_of)
            store.clear_sending()
        url = self.hook.test_run_url(run["id"])
        self.publish(context, run["id"], url)
        self.log.info("%s: run %s (state %s) %s", what, run["id"], run["state"], url)
        return run

    def _should_rerun(self, previous: TestRun) -> bool:
        if not self.rerun_failed_on_retry:
            return False
        from airflow_provider_empirical.api.verdict import outcome_of

        outcome = outcome_of(previous)
        if outcome == "failed":
            return True
        self.log.info(
            "rerun_failed_on_retry: the previous try's run %s ended %s, not with failed tests: "
            "starting a full run",
            previous["id"],
            outcome,
        )
        return False

    # -- durable state: what an earlier try of this task instance started --
    # `execute` reads the run an earlier try stored (Airflow 3.3+ keeps `task_state_store` across
    # tries and clears; older versions have none, and every try starts fresh):
    #   fresh:            nothing stored -> start a run, store its id, wait
    #   re-attach:        the stored run is still going -> wait for it, send nothing
    #   already finished: the stored run ended well -> return its result, send nothing
    # A stored run that ended badly is followed by a new run, or, with rerun_failed_on_retry and
    # failed tests, by a re-run of those tests. A stored run is only resumed while the task asks
    # for the same thing (the digest of its rendered request); one the API no longer knows (404
    # after a second look, or 403) is forgotten and a new run starts.

    def _previous_run(self, context: Context, store: RunStore | None, body: dict[str, Any]) -> TestRun | None:
        """The run an earlier try stored, fetched now, when this try should go on with it."""
        if store is None:
            if self.rerun_failed_on_retry and self.durable and context["ti"].try_number > 1:
                self.log.warning(
                    "rerun_failed_on_retry needs Airflow 3.3+ durable task state (and durable=True) to find "
                    "the previous try's run; starting a full run instead"
                )
            return None
        stored = store.stored_run()
        if stored is None:
            return None
        self.rerun_of = stored.rerun_of
        from airflow_provider_empirical.durable import request_digest

        if stored.digest != request_digest(body):
            self.log.info(
                "Test run %s, started by an earlier try, was asked for with another request (the rendered "
                "fields changed since): starting a new run",
                stored.id,
            )
            store.forget()
            return None
        return self._read_stored(store, stored)

    def _read_stored(self, store: RunStore, stored: StoredRun) -> TestRun | None:
        from airflow_provider_empirical.durable import NOT_FOUND_GRACE

        while True:
            try:
                return self.hook.get_test_run(stored.id)
            except EmpiricalNotFoundError:
                age = time.time() - stored.stored_at
                if age < NOT_FOUND_GRACE:  # read-after-write lag: a run just created may 404 for a moment
                    self.log.info("Test run %s is not readable yet (404): looking again in 5 s", stored.id)
                    time.sleep(min(5.0, NOT_FOUND_GRACE - age))
                    continue
                why = "is gone (404)"
            except EmpiricalError as exc:
                if exc.status != 403:
                    raise
                why = "cannot be read with this connection's key (403)"
            self.log.warning(
                "Test run %s, stored by an earlier try, %s: forgetting it and starting a new run",
                stored.id,
                why,
            )
            store.forget()
            return None

    # -- waiting --

    def _wait(
        self, context: Context, test_run_id: int, end_time: float, created_at: float | None
    ) -> dict[str, Any]:
        from airflow_provider_empirical.outcome import wait_for_test_run

        event = wait_for_test_run(
            self.hook,
            test_run_id,
            url=self.hook.test_run_url(test_run_id),
            poll_interval=self.poll_interval,
            end_time=end_time,
            log=self.log,
            created_at=created_at,
            policy=self.policy(),
        )
        return self.finish(context, event)

    def _defer(self, context: Context, test_run_id: int, end_time: float, created_at: float | None) -> Any:
        from airflow_provider_empirical.api.test_runs import is_terminal
        from airflow_provider_empirical.outcome import finished_event
        from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

        url = self.hook.test_run_url(test_run_id)
        try:
            run = self.hook.get_test_run(test_run_id)
        except EmpiricalError as exc:
            if not (exc.transient or isinstance(exc, EmpiricalNotFoundError)):
                raise
            self.log.warning("Could not check test run %s before deferring: %s", test_run_id, exc.message)
        else:
            if is_terminal(run):
                return self.finish(context, finished_event(run, url, self.policy()))
        self.defer(
            trigger=EmpiricalTestRunTrigger(
                test_run_id=test_run_id,
                end_time=end_time,
                empirical_conn_id=self.empirical_conn_id,
                poll_interval=self.poll_interval,
                test_run_url=url,
                created_at=created_at,
                policy=self.policy().to_dict(),
                cancel_on_kill=self.cancel_on_kill,
                cancel_reason=f"Airflow task {self.dag_id}.{self.task_id} (DAG run {context.get('run_id')}) "
                "was killed",
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: succeed with the run summary, or fail with the trigger's message."""
        from airflow_provider_empirical.durable import RunStore

        store = RunStore.of(context, self.log, enabled=self.durable)
        stored = store.stored_run() if store is not None else None
        self.rerun_of = stored.rerun_of if stored is not None else None
        return self.complete(context, event)

    def summary_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        if self.reused_run:
            extras["reused_run"] = True
        if self.selected_test_count is not None:
            extras["selected_test_count"] = self.selected_test_count
        if self.rerun_of is not None:
            extras["rerun_of"] = self.rerun_of
        if isinstance(self.build, dict) and self.build:  # rendered: what was tested, for asset events
            extras["build"] = dict(self.build)
        return extras


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
        hook = EmpiricalHook(self.empirical_conn_id, deadline=time.time() + FINISH_SECONDS)
        try:
            url = hook.test_run_url(test_run_id)
            context["ti"].xcom_push(key=TEST_RUN_URL_KEY, value=url)
            context["ti"].xcom_push(key=CONN_ID_KEY, value=self.empirical_conn_id)
            cancelled = hook.cancel_test_run(test_run_id, reason=reason)
        finally:
            hook.close()
        if cancelled:
            self.log.info("Cancelled Empirical test run %s: %s", test_run_id, url)
        else:
            self.log.info("Empirical test run %s had already ended: nothing to cancel. %s", test_run_id, url)
        return cancelled


class EmpiricalSnoozeTestsOperator(BaseOperator):
    """Snooze failing tests (``POST /api/snoozes``), e.g. after a person decided they are known issues.

    Give either ``test_ids`` or ``test_run_id`` (that run's failures that still count, i.e. that no
    snooze covers yet), and either ``snooze_for`` or ``snooze_until``. A run with nothing left to
    snooze succeeds doing nothing and says so. Returns the snooze id (None when nothing was
    snoozed). Bad input fails before any request, naming the parameter. Like a trigger, the POST is
    never sent twice on a doubt; on Airflow 3.3 a retry returns the snooze an earlier try created.

    :param test_ids: Playwright test ids to snooze (templated).
    :param test_run_id: instead of ``test_ids``: snooze the failures of this ended run (templated),
        e.g. the trigger task's ``test_run_id`` XCom.
    :param snooze_for: how long: seconds or a ``timedelta`` (templated).
    :param snooze_until: instead of ``snooze_for``: until when, an ISO 8601 time or a datetime
        (templated).
    :param description: why (templated); default: the DAG, run and task that snoozed them.
    :param scope_to_environment: with ``test_run_id``: only in that run's environment, like the
        dashboard's "Only snooze for <env>" (default). ``False``: in every environment.
    :param empirical_conn_id: connection of type ``empirical``.
    """

    template_fields: Sequence[str] = ("test_ids", "test_run_id", "snooze_for", "snooze_until", "description")
    operator_extra_links = (EmpiricalTestRunLink(),)
    ui_color = "#fdf6e8"

    def __init__(
        self,
        *,
        test_ids: list[str] | None = None,
        test_run_id: int | str | None = None,
        snooze_for: float | timedelta | str | None = None,
        snooze_until: str | datetime | None = None,
        description: str | None = None,
        scope_to_environment: bool = True,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_ids = test_ids
        self.test_run_id = test_run_id
        self.snooze_for = snooze_for
        self.snooze_until = snooze_until
        self.description = description
        self.scope_to_environment = scope_to_environment
        self.empirical_conn_id = empirical_conn_id

    def execute(self, context: Context) -> int | None:
        from datetime import datetime, timezone

        from airflow_provider_empirical.api.snoozes import snooze_until_of, test_ids_of
        from airflow_provider_empirical.durable import SnoozeStore, body_digest
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook
        from airflow_provider_empirical.validation import positive_int, text

        # every check before any request
        given = [name for name in ("test_ids", "test_run_id") if getattr(self, name) not in (None, "", [])]
        if len(given) != 1:
            raise EmpiricalValidationError(
                "give exactly one of `test_ids` (Playwright test ids) and `test_run_id` (snooze that run's "
                f"failures); got {', '.join(f'`{n}`' for n in given) or 'neither'}",
                field="test_ids",
            )
        test_ids = test_ids_of(self.test_ids) if self.test_ids not in (None, "", []) else None
        run_id = positive_int(self.test_run_id, "test_run_id") if test_ids is None else None
        until = snooze_until_of(
            self.snooze_for,
            self.snooze_until,
            datetime.now(timezone.utc),
            fields=("snooze_for", "snooze_until"),
        )
        scoped = boolean(self.scope_to_environment, "scope_to_environment")
        ti = context["ti"]
        description = (
            text(self.description, "description")
            if self.description is not None
            else f"Snoozed by Airflow task {ti.dag_id}.{ti.task_id} (DAG run {ti.run_id})"
        )
        asked = (test_ids, run_id, str(self.snooze_for), str(self.snooze_until), description, scoped)
        digest = body_digest({"asked": asked})  # what the task asks for, not the end it computes now
        store = SnoozeStore.of(context)
        if store is not None:
            earlier = store.created(digest)
            if earlier is not None:
                self.log.info(
                    "Snooze %s was created by an earlier try of this task: not creating another", earlier
                )
                return earlier
            if store.sending.set():
                store.sending.clear()  # said once: the next try (a user's clear) starts anew
                raise EmpiricalTriggerUncertainError(
                    "An earlier try of this task sent its snooze request and ended before it could record "
                    "the snooze (the worker died or was killed). A snooze may exist, so no second one is "
                    "created: look for it in the Empirical dashboard, then clear this task to start anew"
                )
        hook = EmpiricalHook(self.empirical_conn_id, deadline=time.time() + FINISH_SECONDS)
        try:
            environment_id = None
            if run_id is not None:
                context["ti"].xcom_push(key=TEST_RUN_URL_KEY, value=hook.test_run_url(run_id))
                context["ti"].xcom_push(key=CONN_ID_KEY, value=self.empirical_conn_id)
                test_ids, environment_id = self._failures_of(hook, run_id, scoped)
                if not test_ids:
                    return None
            assert test_ids is not None
            mark = (lambda: store.sending.mark(ti.try_number)) if store is not None else None
            try:
                snooze = hook.create_snooze(
                    test_ids,
                    until,
                    description=description,
                    scoped_to_environment_id=environment_id,
                    created_from_test_run_id=run_id,
                    before_send=mark,
                )
            except EmpiricalError:
                if store is not None:
                    store.sending.clear()  # nothing created, or the failure says one may exist
                raise
            if store is not None:
                store.remember(snooze["id"], digest)
                store.sending.clear()
        finally:
            hook.close()
        where = f" in environment {environment_id}" if environment_id is not None else " in every environment"
        self.log.info("Snoozed %d test(s) until %s%s: snooze %s", len(test_ids), until, where, snooze["id"])
        return snooze["id"]

    def _failures_of(self, hook: Any, run_id: int, scoped: bool) -> tuple[list[str], int | None]:
        """The Playwright ids of the run's failures that no snooze covers yet, and its environment."""
        from airflow_provider_empirical.api.test_runs import is_terminal
        from airflow_provider_empirical.api.verdict import failures_of

        run = hook.get_test_run(run_id)
        if not is_terminal(run):
            raise EmpiricalError(
                f"Empirical test run {run_id} is still {run['state']}: snooze its failures once it has ended"
            )
        if run.get("failed_count") and run.get("failed_tests") is None:
            run = hook.with_failed_tests(run)
        failures = failures_of(run, honor_snoozes=True)
        if failures.raw and failures.counted is None:
            raise EmpiricalError(
                f"Empirical test run {run_id} has {failures.raw} failed test(s) but the API named none of "
                "them: give `test_ids` instead"
            )
        ids = [str(case["pw_test_id"]) for case in failures.counted or [] if case.get("pw_test_id")]
        if not ids:
            self.log.info("Empirical test run %s has no failure left to snooze: nothing to do", run_id)
            return [], None
        environment_id = run.get("environment_id") if scoped else None
        if scoped and environment_id is None:
            raise EmpiricalValidationError(
                f"Empirical test run {run_id}'s answer names no environment_id, so the snooze cannot be "
                "scoped to its environment: set scope_to_environment=False to snooze in every environment",
                field="scope_to_environment",
            )
        self.log.info("Snoozing %d failure(s) of test run %s: %s", len(ids), run_id, ", ".join(ids[:20]))
        return ids, environment_id
