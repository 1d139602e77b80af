"""EmpiricalHook: the Airflow connection turned into a client of the Empirical API.

An API client and nothing more: it fetches, lists, triggers, re-runs and cancels. Each method
drives one operation of `http.operations` (what to send, how to read the answer) with the sync
client (httpx, workers) or, for its `a`-prefixed twin, the async one (aiohttp, triggerer):
the twins sit side by side and share every rule. Waiting lives in `outcome.py`.

`deadline` (epoch seconds) bounds every call a hook makes, retries and their pauses included:
a task sets it to its own deadline, so no call outlives the task or wait it serves.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_empirical.api.environments import Environment
from airflow_provider_empirical.api.errors import EmpiricalError, EmpiricalValidationError
from airflow_provider_empirical.api.snoozes import Snooze, create_snooze_body, iso_utc
from airflow_provider_empirical.api.test_cases import TestCaseInfo
from airflow_provider_empirical.api.test_runs import RunPage, TestRun, int_or_none, link_tests, parse_time
from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.errors import EmpiricalTriggerUncertainError
from airflow_provider_empirical.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_empirical.http import endpoints, operations
from airflow_provider_empirical.http.operations import Operation
from airflow_provider_empirical.http.protocol import Call, RetryPolicy
from airflow_provider_empirical.links import DEFAULT_CONN_ID
from airflow_provider_empirical.validation import boolean, positive_int, text, trigger_request_body

if TYPE_CHECKING:
    from airflow_provider_empirical.http.aio import AsyncEmpiricalClient
    from airflow_provider_empirical.http.sync import EmpiricalClient

T = TypeVar("T")


class TestCatalogue(NamedTuple):
    cases: list[TestCaseInfo]
    sync_error: str | None  # Empirical's word on its last sync of the test repository


TestCatalogue.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class
LIST_FILTERS = frozenset({"id", "branch", "state", "result", "environment_ids", "interval_in_days"})
MAX_PAGES = 1000  # list_test_runs stops here even if the server keeps announcing more pages
_UNLEARNED = ""  # the slot for a project slug the API would not tell


def list_params(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The query of a run-list call: known filters only (an unknown one fails before any request,
    naming it), None dropped, a list of environment ids joined as the API expects."""
    unknown = set(filters) - LIST_FILTERS
    if unknown:
        raise EmpiricalValidationError(
            f"unknown filter(s) {sorted(unknown)}; allowed: {sorted(LIST_FILTERS)}",
            field=sorted(unknown)[0],
        )
    params = {key: value for key, value in filters.items() if value is not None}
    if isinstance(params.get("environment_ids"), (list, tuple)):
        params["environment_ids"] = ",".join(str(item) for item in params["environment_ids"])
    return params


class EmpiricalHook(BaseHook):
    """Talk to the Empirical API with the key stored in an Airflow connection.

    :param empirical_conn_id: connection of type ``empirical`` (API key in the password).
    :param retry: how GETs and cancels (and creating requests that were surely rejected) are retried.
    :param deadline: epoch seconds by which a call ends (retries and pauses included) unless the
        call is given its own; None: only the connection's timeout per attempt bounds it.
    """

    conn_name_attr = "empirical_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "empirical"
    hook_name = "Empirical"

    def __init__(
        self,
        empirical_conn_id: str = default_conn_name,
        *,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.empirical_conn_id = empirical_conn_id
        self.retry = retry or RetryPolicy()
        self.deadline = deadline
        self._config: ApiConfig | None = None  # one slot, filled by the sync or the async lookup
        self._project_slug: str | None = None  # learned from the API; _UNLEARNED after a failed try
        self._project: dict[str, Any] | None = None
        self._environments: list[Environment] | None = None
        self._async_client: AsyncEmpiricalClient | None = None
        self._async_stack = contextlib.AsyncExitStack()

    def __repr__(self) -> str:
        return f"EmpiricalHook(empirical_conn_id={self.empirical_conn_id!r})"

    # -- connection form (Airflow 2.11 / 3.0 / 3.1; 3.2+ reads get_provider_info) --

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            types = spec["schema"]["type"]
            default = spec["schema"].get("default")  # e.g. timeout 30, prefilled as on 3.2+
            if "string" in types:
                widgets[name] = StringField(
                    lazy_gettext(spec["label"]),
                    widget=BS3TextFieldWidget(),
                    description=spec["description"],
                    default=default,
                )
            else:  # IntegerField even for "number": Airflow < 3.2 accepts no FloatField in hook forms
                widgets[name] = IntegerField(
                    lazy_gettext(spec["label"]),
                    widget=BS3TextFieldWidget(),
                    validators=[Optional(), NumberRange(min=spec["schema"]["minimum"])],
                    description=spec["description"],
                    default=default,
                )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {key.replace("-", "_"): value for key, value in UI_FIELD_BEHAVIOUR.items()}

    # -- configuration --

    @property
    def config(self) -> ApiConfig:
        if self._config is None:
            conn = self.get_connection(self.empirical_conn_id)
            self._config = self._config_of(conn, conn.extra_dejson)
        return self._config

    async def aconfig(self) -> ApiConfig:
        """The configuration, looked up without blocking the event loop (for triggers)."""
        if self._config is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.empirical_conn_id)
            self._config = self._config_of(conn, await get_async_extra_dejson(conn))
        return self._config

    def _config_of(self, conn: Any, parsed: Any) -> ApiConfig:
        """Airflow drops an extra that is not JSON (`extra_dejson` is then {}): pass its text on,
        so that the configuration refuses it by name instead of ignoring project_id and the rest."""
        extra = parsed or getattr(conn, "extra", None)
        if isinstance(extra, Mapping) and set(extra) - set(CONN_FIELDS):
            self.log.warning(
                "Connection %r: ignoring unknown extra field(s) %s (known: %s)",
                self.empirical_conn_id,
                sorted(set(extra) - set(CONN_FIELDS)),
                ", ".join(CONN_FIELDS),
            )
        return ApiConfig.from_connection(self.empirical_conn_id, conn.host, conn.port, conn.password, extra)

    @cached_property
    def client(self) -> EmpiricalClient:
        from airflow_provider_empirical.http.sync import EmpiricalClient

        return EmpiricalClient(self.config, self.retry)

    async def _aclient(self) -> AsyncEmpiricalClient:
        if self._async_client is None:
            from airflow_provider_empirical.http.aio import shared_async_client

            self._async_client = await self._async_stack.enter_async_context(
                shared_async_client(await self.aconfig(), self.retry)
            )
        return self._async_client

    def close(self) -> None:
        """Release the pooled sync connection; the hook reopens one if used again."""
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    async def aclose(self) -> None:
        """Give the shared async pool back; the last user of a pool closes it."""
        self._async_client = None
        await self._async_stack.aclose()

    # -- driving an operation: the sync and the async face --

    def _deadline(self, deadline: float | None) -> float | None:
        """A call's own deadline, else the hook's."""
        return deadline if deadline is not None else self.deadline

    def _run(
        self,
        operation: Operation[T],
        deadline: float | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> T:
        """Drive `operation` with the sync client. `before_send` runs once, right before the first
        request leaves (after the connection was read and the client built)."""
        deadline = self._deadline(deadline)
        client = self.client
        call, result = operations.start(operation)
        if before_send is not None:
            before_send()
        while call is not None:
            error: EmpiricalError | None = None
            answer = None
            try:
                answer = client.request(call, deadline=deadline)
            except EmpiricalError as exc:
                error = exc
            except BaseException as exc:
                raise _interrupted(call, exc) from exc
            call, result = self._advance(operation, call, answer, error)
        return result  # type: ignore[return-value]

    async def _arun(self, operation: Operation[T], deadline: float | None = None) -> T:
        """Async twin of `_run`."""
        deadline = self._deadline(deadline)
        client = await self._aclient()
        call, result = operations.start(operation)
        while call is not None:
            error: EmpiricalError | None = None
            answer = None
            try:
                answer = await client.request(call, deadline=deadline)
            except EmpiricalError as exc:
                error = exc
            except BaseException as exc:
                raise _interrupted(call, exc) from exc
            call, result = self._advance(operation, call, answer, error)
        return result  # type: ignore[return-value]

    @staticmethod
    def _advance(
        operation: Operation[T], call: Call, answer: Any, error: EmpiricalError | None
    ) -> tuple[Call | None, T | None]:
        try:
            return operations.advance(operation, answer, error)
        except EmpiricalError as exc:
            if exc.may_have_created_run:
                raise _uncertain(call, exc.reason) from None
            raise

    # -- dashboard links --

    def test_run_url(self, test_run_id: int) -> str:
        """The run's dashboard page; the project slug is learned from the API once per hook."""
        if not self.config.project_slug and self._project_slug is None:
            self._learn_slug(self.project)
        return self.config.run_url(test_run_id, self._project_slug)

    async def atest_run_url(self, test_run_id: int) -> str:
        """Async twin of `test_run_url`."""
        config = await self.aconfig()
        if not config.project_slug and self._project_slug is None:
            try:
                project = await self._arun(operations.project(config))
            except EmpiricalError as exc:
                project = {}
                self.log.warning("Could not learn the project slug for dashboard links: %s", exc.message)
            self._remember_project(project, config)
        return config.run_url(test_run_id, self._project_slug)

    def _learn_slug(self, fetch: Callable[[], dict[str, Any]]) -> None:
        try:
            project = fetch()
        except EmpiricalError as exc:
            project = {}
            self.log.warning("Could not learn the project slug for dashboard links: %s", exc.message)
        self._remember_project(project, self.config)

    def _remember_project(self, project: Mapping[str, Any], config: ApiConfig) -> None:
        slug = project.get("slug")
        self._project_slug = slug if isinstance(slug, str) and slug else _UNLEARNED
        if not self._project_slug:
            self.log.warning(
                "The API did not name the project's slug: dashboard links use %s/test-runs/<id>, which may "
                "not resolve. Set the connection's extra field project_slug to fix them.",
                config.dashboard_url,
            )

    def _seen(self, run: TestRun, config: ApiConfig) -> TestRun:
        """Keep the project slug a run answer names (it saves the list call links would need), and
        link each listed test to its own page."""
        if run.get("project_slug") and not self._project_slug:
            self._project_slug = run["project_slug"]
        return link_tests(run, config.run_url(run["id"], self._project_slug))

    # -- test runs --

    def get_test_run(self, test_run_id: int, *, deadline: float | None = None) -> TestRun:
        """Fetch a run. `deadline` (epoch seconds) bounds the request and its retries."""
        return self._seen(self._run(operations.get_test_run(self.config, test_run_id), deadline), self.config)

    async def aget_test_run(self, test_run_id: int, *, deadline: float | None = None) -> TestRun:
        """Async twin of `get_test_run`, on the event loop's shared pool (release it with `aclose`)."""
        config = await self.aconfig()
        return self._seen(await self._arun(operations.get_test_run(config, test_run_id), deadline), config)

    def trigger_test_run(
        self, environment: str, *, extra_body: Mapping[str, Any] | None = None, **fields: Any
    ) -> TestRun:
        """Start a test run (``PUT /api/test-runs``); returns it (id, state, test_run_branch, created_at).

        Fields: the API's (see ``validation.TRIGGER_FIELDS``): build, branch, metadata,
        environment_variables_overrides, tags, test_case_ids, project_id, send_notifications,
        total_shards, rerun_source_id, rerun_only_failed, github_actor. ``extra_body`` adds fields
        this release does not know (sent as given). Input is validated before anything is sent.
        """
        return self.send_trigger_request(
            trigger_request_body({"environment": environment, **fields}, extra_body)
        )

    def send_trigger_request(
        self, body: Mapping[str, Any], *, before_send: Callable[[], None] | None = None
    ) -> TestRun:
        """Send a trigger body already built by ``validation.trigger_request_body`` (the operator
        validates once, in execute()). ``before_send`` runs right before the request leaves.

        Never sent twice: any doubt whether it created a run raises `EmpiricalTriggerUncertainError`.
        """
        call = endpoints.trigger_test_run(body)
        return self._run(operations.create_test_run(self.config, call), before_send=before_send)

    def rerun_test_run(
        self,
        test_run_id: int,
        *,
        only_failed: bool = False,
        send_notifications: bool | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> TestRun:
        """Re-run a run (``POST /api/test-runs/{id}/re-run``), only its failed tests if asked.

        Returns the new run. Like the trigger it creates a run, so it is never sent twice on a doubt.
        """
        body: dict[str, Any] = {"only_failed": boolean(only_failed, "only_failed")}
        if send_notifications is not None:
            body["send_notifications"] = boolean(send_notifications, "send_notifications")
        call = endpoints.rerun_test_run(test_run_id, body)
        return self._run(operations.create_test_run(self.config, call), before_send=before_send)

    def cancel_test_run(
        self, test_run_id: int, reason: str | None = None, *, deadline: float | None = None
    ) -> bool:
        """Cancel a run: True when cancelled, False when it had already ended (HTTP 412 is no error).

        Retried like a GET: cancelling twice is harmless.
        """
        return self._run(operations.cancel_test_run(test_run_id, reason), deadline)

    async def acancel_test_run(
        self, test_run_id: int, reason: str | None = None, *, deadline: float | None = None
    ) -> bool:
        """Async twin of `cancel_test_run`."""
        return await self._arun(operations.cancel_test_run(test_run_id, reason), deadline)

    def with_failed_tests(self, run: TestRun) -> TestRun:
        """The run with its failed tests' names, when its answer had failed tests but no per-test rows.

        One GET of ``/api/v2/test-runs/{id}/cases``, an endpoint Empirical's own tooling uses but
        does not document: best effort, so any problem leaves the run as it was (counts only).
        """
        if run.get("failed_tests") is not None or not run.get("failed_count"):
            return run
        named, why_not = self._run(operations.failed_test_names(self.config, run))
        if why_not:
            self.log.info("No failed test names from %s", why_not)
        return self._seen(named, self.config)

    def list_test_runs(self, *, per_page: int = 100, **filters: Any) -> Iterator[TestRun]:
        """Yield the project's test runs, newest first, walking every page.

        Filters: id, branch, state, result ("passed" | "failed"), environment_ids, interval_in_days.
        Stops after `MAX_PAGES` pages, or when a page repeats the previous one.
        """
        for page in self._run_pages(per_page, filters):
            yield from page.runs

    async def alist_test_runs_page(
        self, page: int = 1, *, per_page: int = 100, deadline: float | None = None, **filters: Any
    ) -> RunPage:
        """One page of ``GET /api/test-runs`` (newest first), on the event loop's shared pool.

        The async face of the pages `list_test_runs` walks, for the triggerer (the event-driven
        watcher reads one page per poll). Same filters; a page naming the project's slug teaches
        the hook its dashboard links. Release the pool with `aclose`.
        """
        params = list_params(filters)
        config = await self.aconfig()
        result = await self._arun(operations.list_test_runs_page(config, page, per_page, params), deadline)
        slug = result.project.get("slug")
        if not self._project_slug and isinstance(slug, str) and slug:
            self._project_slug = config.clean(slug)
        return result

    def _run_pages(self, per_page: int, filters: Mapping[str, Any]) -> Iterator[RunPage]:
        params = list_params(filters)
        previous: list[TestRun] | None = None
        for number in range(1, MAX_PAGES + 1):
            page = self._run(operations.list_test_runs_page(self.config, number, per_page, params))
            if not self._project_slug:
                self._remember_project_quietly(page.project)
            if page.runs == previous:
                return
            previous = page.runs
            yield page
            if not page.runs or page.total_pages is None or number >= page.total_pages:
                return

    def _remember_project_quietly(self, project: Mapping[str, Any]) -> None:
        slug = project.get("slug")
        if isinstance(slug, str) and slug:
            self._project_slug = self.config.clean(slug)

    def latest_test_run(
        self, *, created_after: datetime, environment: str | None = None, branch: str | None = None
    ) -> TestRun | None:
        """The newest run created after `created_after` on `environment` (slug) and `branch`, or None.

        The list endpoint filters environments by numeric id only, so the slug is matched here, on
        the items; the branch is filtered by the API and checked again. Pages are read newest first
        and only until a page whose runs are all older than `created_after`; a page on which no
        `created_at` can be read ends the search (and says so), since nothing on it can match.
        """
        days = max(1, math.ceil((datetime.now(timezone.utc) - created_after).total_seconds() / 86400) + 1)
        for page in self._run_pages(100, {"branch": branch, "interval_in_days": days}):
            times = [parse_time(run.get("created_at")) for run in page.runs]
            if page.runs and all(when is None for when in times):
                shown = page.runs[0].get("created_at")
                self.log.warning(
                    "No created_at on this page of test runs can be read (e.g. %r): cannot tell which run "
                    "is new enough, so no run matches. Please report this API contract mismatch.",
                    shown,
                )
                return None
            for run, created in zip(page.runs, times, strict=True):
                if created is None:
                    continue
                if created < created_after:
                    return None
                if environment is not None and run.get("environment_slug") != environment:
                    continue
                if branch is not None and run.get("test_run_branch") != branch:
                    continue
                return run
        return None

    # -- snoozes --

    def create_snooze(
        self,
        test_ids: Sequence[str],
        snooze_until: str | datetime,
        *,
        description: str | None = None,
        created_by: str | None = None,
        scoped_to_environment_id: int | None = None,
        created_from_test_run_id: int | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> Snooze:
        """Snooze failures of `test_ids` until `snooze_until` (``POST /api/snoozes``).

        In every environment, or only in `scoped_to_environment_id`. Never sent twice: any doubt
        whether it created the snooze raises `EmpiricalTriggerUncertainError`.
        """
        until = (
            iso_utc(snooze_until)
            if isinstance(snooze_until, datetime)
            else text(snooze_until, "snooze_until")
        )
        body = create_snooze_body(
            test_ids,
            until,
            description=description,
            created_by=created_by,
            scoped_to_environment_id=positive_int(scoped_to_environment_id, "scoped_to_environment_id")
            if scoped_to_environment_id is not None
            else None,
            created_from_test_run_id=positive_int(created_from_test_run_id, "created_from_test_run_id")
            if created_from_test_run_id is not None
            else None,
        )
        return self._run(operations.create_snooze(self.config, body), before_send=before_send)

    def get_snooze(self, snooze_id: int) -> Snooze:
        """One snooze (``GET /api/snoozes/{id}``)."""
        return self._run(operations.get_snooze(self.config, snooze_id))

    def expire_snooze(self, snooze_id: int) -> Snooze:
        """End a snooze now (``PATCH /api/snoozes/{id}`` with ``expire_now``); harmless to repeat."""
        return self._run(operations.update_snooze(self.config, snooze_id, {"expire_now": True}))

    def list_snoozes(self, *, status: str = "active", environment_id: int | None = None) -> Iterator[Snooze]:
        """Yield the project's snoozes: ``active`` (default), ``expired`` or ``all``, walking every page."""
        if status not in ("active", "expired", "all"):
            raise EmpiricalValidationError("`status` must be 'active', 'expired' or 'all'", field="status")
        filters: dict[str, Any] = {"status": status}
        if environment_id is not None:
            filters["environment_id"] = positive_int(environment_id, "environment_id")
        for number in range(1, MAX_PAGES + 1):
            snoozes, pages = self._run(operations.list_snoozes_page(self.config, number, 100, filters))
            yield from snoozes
            if not snoozes or pages is None or number >= pages:
                return

    # -- test cases and environments (choosing what runs, and where, before a run exists) --

    def test_case_catalogue(self, *, playwright_project: str | None = None) -> TestCatalogue:
        """Every active test case (``GET /api/v2/test-cases``, all pages, one walk), and the sync
        error Empirical reports for the test repository, if any."""
        filters: dict[str, Any] = {"is_active": True}
        if playwright_project is not None:
            filters["playwright_project"] = text(playwright_project, "test_project")
        cases: list[TestCaseInfo] = []
        sync_error = None
        previous: list[TestCaseInfo] | None = None
        for number in range(1, MAX_PAGES + 1):
            page = self._run(operations.list_test_cases_page(self.config, number, 100, filters))
            sync_error = sync_error or page.sync_error
            if page.cases == previous:
                break
            previous = page.cases
            cases += page.cases
            last = page.has_more is False or (page.has_more is None and (page.total_pages or 0) <= number)
            if not page.cases or last:
                break
        return TestCatalogue(cases, sync_error)

    def environments(self) -> list[Environment]:
        """The project's environments (``GET /api/environments/list``), asked once per hook."""
        if self._environments is None:
            filters: dict[str, Any] = {}
            project_id = self.config.project_id or int_or_none(self.project().get("id"))
            if project_id:
                filters["project_id"] = project_id
            self._environments = self._run(operations.list_environments(self.config, filters))
        return self._environments

    def project(self) -> dict[str, Any]:
        """The key's project (id, name, slug), asked once per hook (one list call)."""
        if self._project is None:
            self._project = self._run(operations.project(self.config))
            self._remember_project(self._project, self.config)
        return self._project

    def test_connection(self) -> tuple[bool, str]:
        """Prove the key with an authenticated call (the UI's Test button); never raises."""
        try:
            project = self._run(operations.project(self.config))
            name = project.get("name") or project.get("slug")
            where = f" (project {name!r}, id {project.get('id')})" if name else ""
            return True, f"Connected to the Empirical API at {self.config.base_url}{where}"
        except Exception as exc:
            message = exc.message if isinstance(exc, EmpiricalError) else f"{type(exc).__name__}: {exc}"
            return False, message


def _uncertain(call: Call, reason: str) -> EmpiricalTriggerUncertainError:
    what = call.creates or "test run"
    return EmpiricalTriggerUncertainError(
        f"{reason}. A {what} may have been created, so this request was not sent again, and this "
        "task is failed without Airflow retries for the same reason (Empirical has no idempotency key: "
        f"a retry would create a second {what}). Look for it in the Empirical dashboard or with "
        f"EmpiricalHook.{'list_snoozes' if what == 'snooze' else 'list_test_runs'}(), then clear the "
        "task if you want a new one.",
        endpoint=call.endpoint,
    )


def _interrupted(call: Call, exc: BaseException) -> BaseException:
    """Something other than an HTTP answer ended a request (a task timeout, a kill): harmless for a
    request that may be repeated; for one that creates a run, the run may exist."""
    if call.idempotent:
        return exc
    return _uncertain(
        call, f"Empirical API {call.endpoint} was interrupted while in flight ({type(exc).__name__})"
    )
