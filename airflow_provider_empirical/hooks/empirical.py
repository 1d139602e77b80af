"""EmpiricalHook: the Airflow connection turned into a client of the Empirical API.

A thin layer: the connection gives an `ApiConfig`, the shared HTTP core does the rest.
Sync methods use one pooled client for the life of the hook; async methods (used by the
trigger) borrow the event loop's shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
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
from airflow_provider_empirical.errors import EmpiricalError, EmpiricalServerError, EmpiricalValidationError
from airflow_provider_empirical.get_provider_info import CONN_FIELDS, DASHBOARD_URL, UI_FIELD_BEHAVIOUR
from airflow_provider_empirical.models import TestRun, parse_test_run
from airflow_provider_empirical.outcome import Waiter, WaitEvent, error_event
from airflow_provider_empirical.validation import positive_int, positive_number, trigger_body

LIST_FILTERS = frozenset({"id", "branch", "state", "result", "environment_ids", "interval_in_days"})


def config_from_connection(
    conn_id: str, host: str | None, port: int | None, api_key: str | None, extra: dict[str, Any]
) -> ApiConfig:
    """Build the API configuration from a connection's fields, naming the field that is wrong."""
    if not api_key or not api_key.strip():
        raise EmpiricalValidationError(
            f"Connection {conn_id!r} has no API key: set its password (labelled 'API key' in the UI)",
            field="password",
        )

    def option(name: str, check: Any) -> Any:
        value = extra.get(name)
        if value in (None, ""):
            return None
        try:
            return check(value, name)
        except EmpiricalValidationError as exc:
            raise EmpiricalValidationError(
                f"Connection {conn_id!r}, extra field {exc.message}", field=name
            ) from None

    try:
        return ApiConfig(
            api_key=api_key,
            base_url=normalize_api_url(host, port),
            project_id=option("project_id", positive_int),
            timeout=option("timeout", positive_number) or DEFAULT_TIMEOUT,
            dashboard_url=str(extra.get("dashboard_url") or DASHBOARD_URL),
        )
    except EmpiricalValidationError as exc:
        raise EmpiricalValidationError(f"Connection {conn_id!r}: {exc.message}", field=exc.field) from None


class EmpiricalHook(BaseHook):
    """Talk to the Empirical test-runs API with the key stored in an Airflow connection.

    :param empirical_conn_id: connection of type ``empirical`` (API key in the password).
    :param retry: how GETs (and trigger PUTs that were surely rejected) are retried.
    """

    conn_name_attr = "empirical_conn_id"
    default_conn_name = "empirical_default"
    conn_type = "empirical"
    hook_name = "Empirical"

    def __init__(
        self, empirical_conn_id: str = default_conn_name, *, retry: RetryPolicy | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.empirical_conn_id = empirical_conn_id
        self.retry = retry or RetryPolicy()
        self._async_config: ApiConfig | None = None
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

    @cached_property
    def config(self) -> ApiConfig:
        conn = self.get_connection(self.empirical_conn_id)
        return config_from_connection(
            self.empirical_conn_id, conn.host, conn.port, conn.password, conn.extra_dejson
        )

    async def aconfig(self) -> ApiConfig:
        """The configuration, looked up without blocking the event loop (for triggers)."""
        if self._async_config is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.empirical_conn_id)
            extra = await get_async_extra_dejson(conn)
            self._async_config = config_from_connection(
                self.empirical_conn_id, conn.host, conn.port, conn.password, extra
            )
        return self._async_config

    @cached_property
    def client(self) -> EmpiricalClient:
        return EmpiricalClient(self.config, self.retry)

    def test_run_url(self, test_run_id: int) -> str:
        return self.config.run_url(test_run_id)

    # -- API --

    def trigger_test_run(
        self,
        environment: str,
        *,
        build: dict[str, str] | None = None,
        branch: str | None = None,
        metadata: dict[str, str | int | float] | None = None,
        environment_variables_overrides: list[dict[str, str]] | dict[str, str] | None = None,
        tags: list[str] | None = None,
        project_id: int | None = None,
        send_notifications: bool | None = None,
        total_shards: int | None = None,
        rerun_source_id: int | None = None,
        rerun_only_failed: bool | None = None,
        github_actor: str | None = None,
    ) -> dict[str, Any]:
        """Start a test run; returns it (id, state, test_run_branch, created_at).

        Input is validated before anything is sent, only the given fields are sent, and the
        PUT is retried only when the server surely did not act on it.
        """
        body = trigger_body(
            environment,
            build=build,
            branch=branch,
            metadata=metadata,
            environment_variables_overrides=environment_variables_overrides,
            tags=tags,
            project_id=project_id,
            send_notifications=send_notifications,
            total_shards=total_shards,
            rerun_source_id=rerun_source_id,
            rerun_only_failed=rerun_only_failed,
            github_actor=github_actor,
        )
        call = Call("PUT", TEST_RUNS_PATH, body=body)
        payload = self.client.request(call)
        try:
            run = payload["data"]["test_run"]
            run["id"] = positive_int(run["id"], "id")
        except (KeyError, TypeError, EmpiricalValidationError):
            error = EmpiricalServerError(
                f"Empirical API {call.endpoint} answered without a test run id: {str(payload)[:200]}. "
                "A test run may have been created: check the Empirical dashboard.",
                status=200,
                endpoint=call.endpoint,
            )
            error.may_have_created_run = True
            raise error from None
        return dict(run)

    def get_test_run(self, test_run_id: int) -> TestRun:
        call = _get_call(test_run_id)
        return _parse_run(call, self.client.request(call))

    async def aget_test_run(self, test_run_id: int) -> TestRun:
        """Async twin of `get_test_run`, on the event loop's shared pool (release it with `aclose`)."""
        call = _get_call(test_run_id)
        if self._async_client is None:
            self._async_client = await self._async_stack.enter_async_context(
                shared_async_client(await self.aconfig(), self.retry)
            )
        return _parse_run(call, await self._async_client.request(call))

    async def aclose(self) -> None:
        """Give the shared async pool back; the last user of a pool closes it."""
        self._async_client = None
        await self._async_stack.aclose()

    def list_test_runs(self, *, per_page: int = 100, **filters: Any) -> Iterator[TestRun]:
        """Yield the project's test runs, newest first, walking every page.

        Filters: id, branch, state, result ("passed" | "failed"), environment_ids, interval_in_days.
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
        page = 1
        while True:
            call = Call("GET", TEST_RUNS_PATH, params={**params, "page": page, "per_page": per_page})
            payload = self.client.request(call)
            data = payload.get("data") or {}
            items = (data.get("test_runs") or {}).get("items") or []
            for item in items:
                yield _parse_run(call, item)
            total_pages = (payload.get("pagination") or {}).get("total_pages") or page
            if not items or page >= total_pages:
                return
            page += 1

    def wait_for_test_run(self, test_run_id: int, *, poll_interval: float, end_time: float) -> WaitEvent:
        """Poll until the run ends or `end_time` (epoch seconds) passes; transient errors never end it."""
        waiter = Waiter(test_run_id, self.test_run_url(test_run_id), poll_interval, end_time, self.log)
        while True:
            result: TestRun | EmpiricalError
            try:
                result = self.get_test_run(test_run_id)
            except EmpiricalError as exc:
                result = exc
            step = waiter.step(result)
            if isinstance(step, dict):
                return step
            time.sleep(step)

    async def await_test_run(self, test_run_id: int, *, poll_interval: float, end_time: float) -> WaitEvent:
        """Async twin of `wait_for_test_run`, used by the trigger; sleeps first, as a check came before.

        Never raises: any failure (a missing connection, a revoked key...) becomes an error event.
        """
        url = None
        try:
            url = (await self.aconfig()).run_url(test_run_id)
            waiter = Waiter(test_run_id, url, poll_interval, end_time, self.log)
            step: WaitEvent | float = min(poll_interval, max(0.0, end_time - time.time()))
            while not isinstance(step, dict):
                await asyncio.sleep(step)
                result: TestRun | Exception
                try:
                    result = await self.aget_test_run(test_run_id)
                except Exception as exc:
                    result = exc
                step = waiter.step(result)
            return step
        except Exception as exc:
            return error_event(test_run_id, url, exc)

    def test_connection(self) -> tuple[bool, str]:
        """Prove the key with an authenticated call (the UI's Test button)."""
        try:
            payload = self.client.request(Call("GET", TEST_RUNS_PATH, params={"per_page": 1}))
        except Exception as exc:
            return False, str(exc)
        project = (payload.get("data") or {}).get("project") or {}
        name = project.get("name") or project.get("slug")
        where = f" (project {name!r}, id {project.get('id')})" if name else ""
        return True, f"Connected to the Empirical API at {self.config.base_url}{where}"

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]


def _get_call(test_run_id: int) -> Call:
    return Call("GET", f"{TEST_RUNS_PATH}/{positive_int(test_run_id, 'test_run_id')}")


def _parse_run(call: Call, payload: Any) -> TestRun:
    try:
        return parse_test_run(payload)
    except ValueError as exc:
        raise EmpiricalServerError(
            f"Empirical API {call.endpoint} returned an unexpected body: {exc}",
            status=200,
            endpoint=call.endpoint,
        ) from None
