"""EmpiricalHook: the Airflow connection turned into a client of the Empirical API.

An API client and nothing more: it fetches, lists, triggers, re-runs and cancels. Waiting
lives next to `Waiter` in `outcome.py`. The connection gives an `ApiConfig`; the shared HTTP
core does the rest. Sync methods use one pooled client for the life of the hook; async
methods (used by the trigger) borrow the event loop's shared pool.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_empirical.client import (
    TEST_RUNS_PATH,
    AsyncEmpiricalClient,
    Call,
    EmpiricalClient,
    RetryPolicy,
    shared_async_client,
)
from airflow_provider_empirical.config import DEFAULT_TIMEOUT, ApiConfig, normalize_api_url
from airflow_provider_empirical.errors import (
    EmpiricalContractError,
    EmpiricalError,
    EmpiricalTriggerUncertainError,
    EmpiricalValidationError,
)
from airflow_provider_empirical.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_empirical.links import DEFAULT_CONN_ID
from airflow_provider_empirical.models import (
    FAILED_STATUSES,
    FLAKY_STATUSES,
    MAX_LISTED_TESTS,
    TestRun,
    parse_created_at,
    parse_test_cases,
    parse_test_run,
)
from airflow_provider_empirical.validation import (
    boolean,
    positive_int,
    text,
    trigger_request_body,
)

LIST_FILTERS = frozenset({"id", "branch", "state", "result", "environment_ids", "interval_in_days"})
MAX_PAGES = 1000  # list_test_runs stops here even if the server keeps announcing more pages
_UNLEARNED = ""  # the slot for a project slug the API would not tell


def config_from_connection(
    conn_id: str, host: str | None, port: int | None, password: str | None, extra: Any
) -> ApiConfig:
    """Build the API configuration from a connection's fields; an error names the field to fix."""
    try:
        if not isinstance(extra, dict):
            raise EmpiricalValidationError("extra is not a JSON object", field="extra")
        return ApiConfig(
            api_key=password or "",
            base_url=normalize_api_url(host, port),
            project_id=extra.get("project_id"),
            timeout=extra.get("timeout") or DEFAULT_TIMEOUT,
            dashboard_url=extra.get("dashboard_url") or "",
            project_slug=extra.get("project_slug"),
            ca_bundle=extra.get("ca_bundle"),
        )
    except EmpiricalValidationError as exc:
        raise EmpiricalValidationError(f"Connection {conn_id!r} {exc.message}", field=exc.field) from None


def _extra_of(conn_id: str, raw: str | None, parsed: Any) -> dict[str, Any]:
    """The connection's extra, refusing text that is not JSON (Airflow would silently drop it)."""
    if raw and raw.strip() and not parsed:
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise EmpiricalValidationError(
                f"Connection {conn_id!r}: its extra is not valid JSON, so project_id, timeout and the "
                "other extra fields cannot be read",
                field="extra",
            ) from None
    return parsed if isinstance(parsed, dict) else {}


class EmpiricalHook(BaseHook):
    """Talk to the Empirical test-runs API with the key stored in an Airflow connection.

    :param empirical_conn_id: connection of type ``empirical`` (API key in the password).
    :param retry: how GETs and cancels (and trigger PUTs that were surely rejected) are retried.
    """

    conn_name_attr = "empirical_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "empirical"
    hook_name = "Empirical"

    def __init__(
        self, empirical_conn_id: str = default_conn_name, *, retry: RetryPolicy | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.empirical_conn_id = empirical_conn_id
        self.retry = retry or RetryPolicy()
        self._config: ApiConfig | None = None  # one slot, filled by the sync or the async lookup
        self._project_slug: str | None = None  # learned from the API; _UNLEARNED after a failed try
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

    def _config_of(self, conn: Any, extra: Any) -> ApiConfig:
        extra = _extra_of(self.empirical_conn_id, getattr(conn, "extra", None), extra)
        unknown = sorted(set(extra) - set(CONN_FIELDS))
        if unknown:
            self.log.warning(
                "Connection %r: ignoring unknown extra field(s) %s (known: %s)",
                self.empirical_conn_id,
                unknown,
                ", ".join(CONN_FIELDS),
            )
        return config_from_connection(self.empirical_conn_id, conn.host, conn.port, conn.password, extra)

    @cached_property
    def client(self) -> EmpiricalClient:
        return EmpiricalClient(self.config, self.retry)

    async def _aclient(self) -> AsyncEmpiricalClient:
        if self._async_client is None:
            self._async_client = await self._async_stack.enter_async_context(
                shared_async_client(await self.aconfig(), self.retry)
            )
        return self._async_client

    # -- dashboard links --

    def test_run_url(self, test_run_id: int) -> str:
        """The run's dashboard page; the project slug is learned from the API once per hook."""
        if not self.config.project_slug and self._project_slug is None:
            self._learn_project_slug()
        return self.config.run_url(test_run_id, self._project_slug)

    async def atest_run_url(self, test_run_id: int) -> str:
        """The run's page from what this hook knows, without a request (the trigger learns the slug
        from the run answers it polls anyway)."""
        return (await self.aconfig()).run_url(test_run_id, self._project_slug)

    def _learn_project_slug(self) -> None:
        """One list call (its answer names the project); on failure links fall back to the short form."""
        try:
            payload = self.client.request(Call("GET", TEST_RUNS_PATH, params={"per_page": 1}))
            slug = _project(payload).get("slug")
        except EmpiricalError as exc:
            self.log.warning("Could not learn the project slug for dashboard links: %s", exc.message)
            slug = None
        self._project_slug = slug if isinstance(slug, str) and slug else _UNLEARNED
        if not self._project_slug:
            self.log.warning(
                "The API did not name the project's slug: dashboard links use %s/test-runs/<id>, which may "
                "not resolve. Set the connection's extra field project_slug to fix them.",
                self.config.dashboard_url,
            )

    def _remember_slug(self, run: TestRun) -> TestRun:
        if run.get("project_slug") and not self._project_slug:
            self._project_slug = run["project_slug"]
        return run

    # -- API --

    def trigger_test_run(
        self, environment: str, *, extra_body: dict[str, Any] | None = None, **fields: Any
    ) -> TestRun:
        """Start a test run (``PUT /api/test-runs``); returns it (id, state, test_run_branch, created_at).

        Fields: the API's (see ``validation.TRIGGER_FIELDS``): build, branch, metadata,
        environment_variables_overrides, tags, test_case_ids, project_id, send_notifications,
        total_shards, rerun_source_id, rerun_only_failed, github_actor. ``extra_body`` adds fields
        this release does not know (sent as given). Input is validated before anything is sent.
        """
        body = trigger_request_body({"environment": environment, **fields}, extra_body)
        return self._put_test_run(body)

    def _put_test_run(self, body: dict[str, Any]) -> TestRun:
        """Send an already validated trigger body (the operator validates it once, in execute())."""
        return self._start(Call("PUT", TEST_RUNS_PATH, body=body))

    def rerun_test_run(
        self, test_run_id: int, *, only_failed: bool = False, send_notifications: bool | None = None
    ) -> TestRun:
        """Re-run a run (``POST /api/test-runs/{id}/re-run``), only its failed tests if asked.

        Returns the new run.

        Like the trigger it creates a run, so an answer that leaves it unclear is never resent.
        """
        body: dict[str, Any] = {"only_failed": boolean(only_failed, "only_failed")}
        if send_notifications is not None:
            body["send_notifications"] = boolean(send_notifications, "send_notifications")
        return self._start(Call("POST", f"{_run_path(test_run_id)}/re-run", body=body))

    def _start(self, call: Call) -> TestRun:
        """Send a request that creates a run; any doubt about whether it did ends in a non-retryable error."""
        try:
            payload = self.client.request(call)
            return parse_test_run(payload)
        except EmpiricalError as exc:
            if not exc.may_have_created_run:
                raise
            raise _uncertain(call, exc.reason) from None
        except ValueError as exc:  # a 2xx without a readable run: it may exist all the same
            raise _uncertain(
                call, f"Empirical API {call.endpoint} answered without a test run id ({exc})"
            ) from None

    def cancel_test_run(self, test_run_id: int, reason: str | None = None) -> bool:
        """Cancel a run: True when cancelled, False when it had already ended (HTTP 412 is no error).

        Retried like a GET: cancelling twice is harmless.
        """
        return _cancelled(lambda call: self.client.request(call), _cancel_call(test_run_id, reason))

    async def acancel_test_run(self, test_run_id: int, reason: str | None = None) -> bool:
        """Async twin of `cancel_test_run`."""
        call = _cancel_call(test_run_id, reason)
        client = await self._aclient()
        try:
            await client.request(call)
        except EmpiricalError as exc:
            if exc.status == 412:
                return False
            raise
        return True

    def get_test_run(self, test_run_id: int, *, deadline: float | None = None) -> TestRun:
        """Fetch a run. `deadline` (epoch seconds) bounds the request and its retries."""
        call = Call("GET", _run_path(test_run_id))
        run = _parse_run(call, self.client.request(call, deadline=deadline), test_run_id)
        return self._remember_slug(run)

    async def aget_test_run(self, test_run_id: int, *, deadline: float | None = None) -> TestRun:
        """Async twin of `get_test_run`, on the event loop's shared pool (release it with `aclose`)."""
        call = Call("GET", _run_path(test_run_id))
        client = await self._aclient()
        run = _parse_run(call, await client.request(call, deadline=deadline), test_run_id)
        return self._remember_slug(run)

    async def aclose(self) -> None:
        """Give the shared async pool back; the last user of a pool closes it."""
        self._async_client = None
        await self._async_stack.aclose()

    def list_test_runs(self, *, per_page: int = 100, **filters: Any) -> Iterator[TestRun]:
        """Yield the project's test runs, newest first, walking every page.

        Filters: id, branch, state, result ("passed" | "failed"), environment_ids, interval_in_days.
        Stops after `MAX_PAGES` pages, or when a page repeats the previous one.
        """
        unknown = set(filters) - LIST_FILTERS
        if unknown:
            raise EmpiricalValidationError(
                f"unknown filter(s) {sorted(unknown)}; allowed: {sorted(LIST_FILTERS)}",
                field=sorted(unknown)[0],
            )
        params = {key: value for key, value in filters.items() if value is not None}
        if isinstance(params.get("environment_ids"), (list, tuple)):
            params["environment_ids"] = ",".join(str(item) for item in params["environment_ids"])
        previous: list[Any] | None = None
        for page in range(1, MAX_PAGES + 1):
            call = Call("GET", TEST_RUNS_PATH, params={**params, "page": page, "per_page": per_page})
            payload = self.client.request(call)
            data = payload.get("data") if isinstance(payload, dict) else None
            items = ((data or {}).get("test_runs") or {}).get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):
                seen = sorted(payload)[:10] if isinstance(payload, dict) else type(payload).__name__
                raise EmpiricalContractError(
                    f"Empirical API {call.endpoint} answered without data.test_runs.items ({seen})",
                    status=200,
                    endpoint=call.endpoint,
                )
            if not self._project_slug and isinstance(_project(payload).get("slug"), str):
                self._project_slug = _project(payload)["slug"]
            if items == previous:
                return
            previous = items
            for item in items:
                yield _parse_run(call, item)
            total_pages = (payload.get("pagination") or {}).get("total_pages")
            if not items or not isinstance(total_pages, int) or page >= total_pages:
                return

    def with_failed_tests(self, run: TestRun) -> TestRun:
        """The run with its failed tests' names, when its answer had failed tests but no per-test rows.

        One GET of ``/api/v2/test-runs/{id}/cases``, an endpoint Empirical's own tooling uses but
        does not document: best effort, so any problem leaves the run as it was (counts only).
        """
        if run.get("failed_tests") is not None or not run.get("failed_count"):
            return run
        call = Call("GET", f"/api/v2/test-runs/{positive_int(run['id'], 'test_run_id')}/cases")
        try:
            rows = self.client.request(call).get("data")
            if not isinstance(rows, list) or not rows:
                raise ValueError("no rows")
        except (EmpiricalError, ValueError, AttributeError) as exc:
            reason = exc.message if isinstance(exc, EmpiricalError) else "an answer without rows"
            self.log.info("No failed test names from %s: %s", call.endpoint, reason)
            return run
        cases = parse_test_cases([row for row in rows if isinstance(row, dict)])
        failed = [case for case in cases if case["status"].lower() in FAILED_STATUSES]
        flaky = [case for case in cases if case["status"].lower() in FLAKY_STATUSES]
        return TestRun(
            **{**run, "failed_tests": failed[:MAX_LISTED_TESTS], "flaky_tests": flaky[:MAX_LISTED_TESTS]}
        )

    def latest_test_run(
        self, *, created_after: datetime, environment: str | None = None, branch: str | None = None
    ) -> TestRun | None:
        """The newest run created after `created_after` on `environment` (slug) and `branch`, or None.

        The list endpoint filters environments by numeric id only, so the slug is matched here, on
        the items; the branch is filtered by the API and checked again. Pages are read newest first
        and only until runs get older than `created_after`.
        """
        days = max(1, math.ceil((datetime.now(timezone.utc) - created_after).total_seconds() / 86400) + 1)
        for run in self.list_test_runs(branch=branch, interval_in_days=days):
            created = parse_created_at(run.get("created_at"))
            if created is not None and created < created_after:
                return None
            if created is None:
                continue
            if environment is not None and run.get("environment_slug") != environment:
                continue
            if branch is not None and run.get("test_run_branch") != branch:
                continue
            return run
        return None

    def test_connection(self) -> tuple[bool, str]:
        """Prove the key with an authenticated call (the UI's Test button); never raises."""
        try:
            payload = self.client.request(Call("GET", TEST_RUNS_PATH, params={"per_page": 1}))
            project = _project(payload)
            name = project.get("name") or project.get("slug")
            where = f" (project {name!r}, id {project.get('id')})" if name else ""
            return True, f"Connected to the Empirical API at {self.config.base_url}{where}"
        except Exception as exc:
            message = exc.message if isinstance(exc, EmpiricalError) else f"{type(exc).__name__}: {exc}"
            return False, message

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]


def _run_path(test_run_id: Any) -> str:
    return f"{TEST_RUNS_PATH}/{positive_int(test_run_id, 'test_run_id')}"


def _cancel_call(test_run_id: int, reason: str | None) -> Call:
    body = {"reason": text(reason, "reason")[:500]} if reason is not None else {}
    return Call("POST", f"{_run_path(test_run_id)}/cancel", body=body, repeatable=True)


def _cancelled(send: Any, call: Call) -> bool:
    try:
        send(call)
    except EmpiricalError as exc:
        if exc.status == 412:  # the run is already in a terminal state: nothing to cancel
            return False
        raise
    return True


def _project(payload: Any) -> dict[str, Any]:
    data = payload.get("data") if isinstance(payload, dict) else None
    project = data.get("project") if isinstance(data, dict) else None
    return project if isinstance(project, dict) else {}


def _uncertain(call: Call, reason: str) -> EmpiricalTriggerUncertainError:
    error = EmpiricalTriggerUncertainError(
        f"{reason}. A test run may have been created, so this request was not sent again, and this "
        "task is failed without Airflow retries for the same reason (Empirical has no idempotency key: "
        "a retry would start a second run). Look for the run in the Empirical dashboard or with "
        "EmpiricalHook.list_test_runs(), then clear the task if you want a new one.",
        endpoint=call.endpoint,
    )
    error.may_have_created_run = True
    return error


def _parse_run(call: Call, payload: Any, expected_id: int | None = None) -> TestRun:
    """A run from an answer, or a contract error that names what was seen (keys, never values)."""
    try:
        run = parse_test_run(payload)
    except ValueError as exc:
        raise EmpiricalContractError(
            f"Empirical API {call.endpoint} answered 2xx without a test run the provider can read: {exc}",
            status=200,
            endpoint=call.endpoint,
        ) from None
    if expected_id is not None and run["id"] != int(expected_id):
        raise EmpiricalContractError(
            f"Empirical API {call.endpoint} answered with test run {run['id']} instead of {expected_id}",
            status=200,
            endpoint=call.endpoint,
        )
    return run
