"""Each API operation once, as a generator of calls: what to send, and how to read each answer.

An operation yields a `Call`, receives the parsed JSON of its answer (or has the call's final
`EmpiricalError` thrown into it), and returns its result, the way httpx's `auth_flow` is one
generator driven by both of its clients. The hook's sync face (httpx) and async face (aiohttp)
drive the same operations with `start` / `advance`, so the twins cannot drift apart: the 412
rule of a cancel, the id check of a run answer and the doubt about a created run are written
here only. Nothing here does I/O or imports Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

from airflow_provider_empirical.api.environments import Environment, parse_environments
from airflow_provider_empirical.api.errors import EmpiricalContractError, EmpiricalError
from airflow_provider_empirical.api.snoozes import Snooze, parse_snooze_answer, parse_snooze_page
from airflow_provider_empirical.api.test_cases import TestCasePage, parse_test_case_page
from airflow_provider_empirical.api.test_runs import (
    FAILED_STATUSES,
    FLAKY_STATUSES,
    MAX_LISTED_TESTS,
    RunPage,
    TestRun,
    parse_cases_answer,
    parse_run_page,
    parse_test_run,
    project_of,
    status_in,
)
from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.http import endpoints
from airflow_provider_empirical.http.protocol import Call

T = TypeVar("T")
Operation = Generator[Call, Any, T]


def start(operation: Operation[T]) -> tuple[Call | None, T | None]:
    """The operation's first call (operations always send at least one)."""
    return next(operation), None


def advance(
    operation: Operation[T], answer: Any = None, error: EmpiricalError | None = None
) -> tuple[Call | None, T | None]:
    """Feed the last call's answer (or its final error); (next call, None) or (None, result)."""
    try:
        call = operation.throw(error) if error is not None else operation.send(answer)
    except StopIteration as stop:
        return None, stop.value
    return call, None


def _contract(call: Call, detail: str) -> EmpiricalContractError:
    return EmpiricalContractError(
        f"Empirical API {call.endpoint} answered 2xx without {detail}", status=200, endpoint=call.endpoint
    )


def read(call: Call, parse: Callable[[Any], T], what: str) -> Operation[T]:
    """Send `call` and parse its answer; an answer `parse` cannot read (ValueError) is a contract
    error naming what was expected (`what`) and what was seen."""
    payload = yield call
    try:
        return parse(payload)
    except ValueError as exc:
        raise _contract(call, f"{what} the provider can read: {exc}") from None


# -- test runs --


def get_test_run(config: ApiConfig, test_run_id: int) -> Operation[TestRun]:
    """`GET /api/test-runs/{id}`: the run, or a contract error naming what was seen (keys, never values)."""
    call = endpoints.get_test_run(test_run_id)
    run = yield from read(call, lambda payload: parse_test_run(payload, config.clean), "a test run")
    if run["id"] != int(test_run_id):
        raise EmpiricalContractError(
            f"Empirical API {call.endpoint} answered with test run {run['id']} instead of {test_run_id}",
            status=200,
            endpoint=call.endpoint,
        )
    return run


def list_test_runs_page(
    config: ApiConfig, page: int, per_page: int, filters: Mapping[str, Any]
) -> Operation[RunPage]:
    """One page of `GET /api/test-runs`."""
    call = endpoints.list_test_runs(page, per_page, filters)
    return read(call, lambda payload: parse_run_page(payload, config.clean), "a list of test runs")


def create(call: Call, parse: Callable[[Any], T]) -> Operation[T]:
    """Send a call that creates something; a 2xx whose answer cannot be read is flagged
    `may_have_created_run` like a timeout (the thing may exist all the same). The hook turns a
    flagged error into `EmpiricalTriggerUncertainError`."""
    payload = yield call
    try:
        return parse(payload)
    except ValueError as exc:
        error = _contract(call, f"an answer the provider can read ({exc})")
        error.may_have_created_run = True
        raise error from None


def create_test_run(config: ApiConfig, call: Call) -> Operation[TestRun]:
    """Send a call that creates a run (trigger, re-run)."""
    return create(call, lambda payload: parse_test_run(payload, config.clean))


def cancel_test_run(test_run_id: int, reason: str | None) -> Operation[bool]:
    """True when cancelled; False when the run had already ended (HTTP 412 is no error)."""
    try:
        yield endpoints.cancel_test_run(test_run_id, reason)
    except EmpiricalError as exc:
        if exc.status == 412:  # the run is already in a terminal state: nothing to cancel
            return False
        raise
    return True


def failed_test_names(config: ApiConfig, run: TestRun) -> Operation[tuple[TestRun, str | None]]:
    """The run with its failed and flaky tests named from the per-test endpoint, and why not if not.

    For a run whose answer had failed tests but no per-test rows. One GET of the undocumented
    `/api/v2/test-runs/{id}/cases`: best effort, so any problem leaves the run as it was.
    """
    call = endpoints.test_run_cases(run["id"])
    try:
        payload = yield call
        cases = parse_cases_answer(payload, config.clean)
    except EmpiricalError as exc:
        return run, f"{call.endpoint}: {exc.message}"
    except ValueError as exc:
        return run, f"{call.endpoint}: {exc}"
    failed = [case for case in cases if status_in(case, FAILED_STATUSES)]
    flaky = [case for case in cases if status_in(case, FLAKY_STATUSES)]
    named = TestRun(
        **{
            **run,
            "failed_tests": failed[:MAX_LISTED_TESTS],
            "flaky_tests": flaky[:MAX_LISTED_TESTS],
            "failed_rows": len(failed),
            "snoozed_rows": sum(1 for case in failed if case.get("snooze"))
            if all("snooze" in case for case in failed)
            else None,
        }
    )

    return named, None


# -- the project --


def project(config: ApiConfig) -> Operation[dict[str, Any]]:
    """The key's project (`data.project` of a one-item list page): id, name, slug. Proves the key."""
    payload = yield endpoints.list_test_runs(1, 1, {})
    return {
        key: config.clean(value) if isinstance(value, str) else value
        for key, value in project_of(payload).items()
    }


# -- snoozes --


def create_snooze(config: ApiConfig, body: Mapping[str, Any]) -> Operation[Snooze]:
    """`POST /api/snoozes`: never sent twice on a doubt."""
    return create(endpoints.create_snooze(body), lambda payload: parse_snooze_answer(payload, config.clean))


def get_snooze(config: ApiConfig, snooze_id: int) -> Operation[Snooze]:
    call = endpoints.get_snooze(snooze_id)
    return read(call, lambda payload: parse_snooze_answer(payload, config.clean), "a snooze")


def update_snooze(config: ApiConfig, snooze_id: int, body: Mapping[str, Any]) -> Operation[Snooze]:
    call = endpoints.update_snooze(snooze_id, body)
    return read(call, lambda payload: parse_snooze_answer(payload, config.clean), "a snooze")


def list_snoozes_page(
    config: ApiConfig, page: int, per_page: int, filters: Mapping[str, Any]
) -> Operation[tuple[list[Snooze], int | None]]:
    call = endpoints.list_snoozes(page, per_page, filters)
    return read(call, lambda payload: parse_snooze_page(payload, config.clean), "a list of snoozes")


# -- test cases, environments --


def list_test_cases_page(
    config: ApiConfig, page: int, per_page: int, filters: Mapping[str, Any]
) -> Operation[TestCasePage]:
    call = endpoints.list_test_cases(page, per_page, filters)
    return read(call, lambda payload: parse_test_case_page(payload, config.clean), "a list of test cases")


def list_environments(config: ApiConfig, filters: Mapping[str, Any]) -> Operation[list[Environment]]:
    call = endpoints.list_environments(filters)
    return read(call, lambda payload: parse_environments(payload, config.clean), "a list of environments")
