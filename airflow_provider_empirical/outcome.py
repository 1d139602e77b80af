"""How a wait ends, decided once for the operator, the sensor and the trigger.

`Waiter` is the polling loop's brain without its I/O: fed a run (or the error of a poll),
it answers with seconds to sleep or with the final event. `resolve` turns that event into
a task result or a task failure. The sync operator, the sensor and the async trigger all
use these, so the outcome rules and messages cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from airflow_provider_empirical.errors import EmpiricalError, EmpiricalTestRunFailed
from airflow_provider_empirical.models import TestCase, TestRun, describe, is_terminal, result_of

if TYPE_CHECKING:
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

Status = Literal["success", "failed", "empty", "error", "cancelled", "timeout"]
STATUSES: frozenset[str] = frozenset({"success", "failed", "empty", "error", "cancelled", "timeout"})
# Answers in a row that end a wait although each alone could be a blip: 2xx bodies that do not
# match the contract, and transport failures that look permanent (TLS verification, DNS).
MAX_STRIKES = 3
LOGGED_TESTS = 50  # failed tests listed one per line in the task log
NAMED_TESTS = 10  # failed tests named in the exception message (and so in alerts)
_STATUS_OF_RESULT: dict[str, Status] = {
    "passed": "success",
    "failed": "failed",
    "empty": "empty",
    "unreadable": "error",
    "error": "error",
    "cancelled": "cancelled",
}


class WaitEvent(TypedDict):
    """The single event that ends a wait; plain JSON so a trigger can send it."""

    status: Status
    test_run_id: int
    test_run: TestRun | None
    url: str | None
    message: str


def status_of(run: TestRun) -> Status:
    """How a run in a terminal state ended; unreadable counts end as `error` (fail closed)."""
    return _STATUS_OF_RESULT[result_of(run)]


def finished_event(run: TestRun, url: str | None) -> WaitEvent:
    """The event for a run in a terminal state."""
    return WaitEvent(
        status=status_of(run), test_run_id=run["id"], test_run=run, url=url, message=describe(run, url)
    )


def error_event(test_run_id: int, url: str | None, error: BaseException, *, strikes: int = 0) -> WaitEvent:
    """A wait that cannot go on (bad key, run gone, missing connection, an answer we cannot read...)."""
    reason = error.message if isinstance(error, EmpiricalError) else f"{type(error).__name__}: {error}"
    if strikes and isinstance(error, EmpiricalError) and error.contract:
        reason = (
            f"{strikes} answers in a row did not match the API contract this provider expects. "
            f"Last one: {reason}. Please report this API contract mismatch, with the output of "
            "`python -m airflow_provider_empirical.probe`"
        )
    elif strikes:
        reason = f"{strikes} attempts in a row failed the same way, which retrying will not fix: {reason}"
    return WaitEvent(
        status="error",
        test_run_id=test_run_id,
        test_run=None,
        url=url,
        message=f"Stopped waiting for Empirical test run {test_run_id}: {reason}",
    )


class Waiter:
    """Decides, poll after poll, whether to sleep on or how the wait ended.

    The deadline is wall-clock (epoch seconds) so it survives a hand-off to another process,
    and it is checked only after a poll, so a run that just finished is never reported late.
    """

    def __init__(
        self,
        test_run_id: int,
        url: str | None,
        poll_interval: float,
        end_time: float,
        log: logging.Logger | Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # wall-clock epoch seconds; injectable so the rules are tested without sleeping
        self.test_run_id = test_run_id
        self.url = url
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.log = log
        self.last: TestRun | None = None
        self.strikes = 0  # contract mismatches or permanent-looking transport failures in a row
        self.max_strikes = MAX_STRIKES

    def step(self, result: TestRun | BaseException) -> WaitEvent | float:
        """Feed the result of one poll; get seconds to sleep, or the final event."""
        if isinstance(result, BaseException):
            if not isinstance(result, EmpiricalError):
                return error_event(self.test_run_id, self.url, result)
            strike = result.contract or getattr(result, "permanent", False)
            if not (strike or result.transient):
                return error_event(self.test_run_id, self.url, result)
            self.strikes = self.strikes + 1 if strike else 0
            if self.strikes >= self.max_strikes:
                return error_event(self.test_run_id, self.url, result, strikes=self.strikes)
            self.log.warning("Still waiting for Empirical test run %s: %s", self.test_run_id, result.message)
        else:
            self.strikes = 0
            if is_terminal(result):
                return finished_event(result, self.url)
            if self.last is None or self.last["state"] != result["state"]:  # not a line per poll
                self.log.info("%s", describe(result, self.url))
            self.last = result
        remaining = self.end_time - self.clock()
        if remaining <= 0:
            state = self.last["state"] if self.last else "unknown"
            return WaitEvent(
                status="timeout",
                test_run_id=self.test_run_id,
                test_run=self.last,
                url=self.url,
                message=(
                    f"Timed out waiting for Empirical test run {self.test_run_id} (last state: {state}). "
                    f"The run may still be going: {self.url or 'see the Empirical dashboard'}"
                ),
            )
        return min(self.poll_interval, remaining)


# -- the two drivers of Waiter: the same loop, one sleeping in a thread, one in the event loop.
# Both start with `first_delay` (0 in a worker; a poll interval in the triggerer, which defers
# right after a check), catch everything a poll raises and never raise themselves.


def wait_for_test_run(
    hook: EmpiricalHook,
    test_run_id: int,
    *,
    url: str | None,
    poll_interval: float,
    end_time: float,
    log: logging.Logger | Any,
    first_delay: float = 0.0,
) -> WaitEvent:
    """Poll until the run ends or `end_time` (epoch seconds) passes; transient errors never end it.

    Without a `url`, the run's link is worked out after the first answer (which may name the
    project's slug).
    """
    waiter = Waiter(test_run_id, url, poll_interval, end_time, log)
    step: WaitEvent | float = min(first_delay, max(0.0, end_time - time.time()))
    while not isinstance(step, dict):
        time.sleep(step)
        started = time.time()
        result: TestRun | BaseException
        try:
            # a check started just before the deadline may take one request timeout, no more:
            # retries and their pauses stop there too
            result = hook.get_test_run(test_run_id, deadline=end_time + hook.config.timeout)
            waiter.url = waiter.url or hook.test_run_url(test_run_id)
        except Exception as exc:
            result = exc
        step = _cadence(waiter.step(result), started)
    return step


async def await_test_run(
    hook: EmpiricalHook,
    test_run_id: int,
    *,
    url: str | None,
    poll_interval: float,
    end_time: float,
    log: logging.Logger | Any,
    first_delay: float = 0.0,
) -> WaitEvent:
    """Async twin of `wait_for_test_run`, used by the trigger."""
    waiter = Waiter(test_run_id, url, poll_interval, end_time, log)
    step: WaitEvent | float = min(first_delay, max(0.0, end_time - time.time()))
    while not isinstance(step, dict):
        await asyncio.sleep(step)
        started = time.time()
        result: TestRun | BaseException
        try:
            grace = (await hook.aconfig()).timeout
            result = await hook.aget_test_run(test_run_id, deadline=end_time + grace)
            waiter.url = waiter.url or await hook.atest_run_url(test_run_id)
        except Exception as exc:
            result = exc
        step = _cadence(waiter.step(result), started)
    return step


def _cadence(step: WaitEvent | float, started: float) -> WaitEvent | float:
    """Polls start every `poll_interval`: the time the check itself took is not slept again."""
    if isinstance(step, dict):
        return step
    return max(0.0, step - (time.time() - started))


def summary_of(event: WaitEvent) -> dict[str, Any]:
    """What the task returns: the run's fields plus its URL and outcome."""
    run = event.get("test_run") or {"id": event["test_run_id"]}
    return {**run, "url": event.get("url"), "outcome": event["status"]}


def validate_event(event: Any) -> WaitEvent:
    """Check an event that crossed a process boundary (it may come from another release's trigger)."""
    if not isinstance(event, dict) or event.get("status") not in STATUSES or "test_run_id" not in event:
        shown = sorted(event)[:10] if isinstance(event, dict) else type(event).__name__
        raise EmpiricalError(f"Unexpected event from the Empirical trigger: {shown}")
    return event  # type: ignore[return-value]


def log_failed_tests(run: TestRun | None, log: logging.Logger | Any) -> str:
    """Log every failed test, one per line (capped), and return the names for an error message."""
    if not run or not run.get("failed_count"):
        return ""
    failed: list[TestCase] | None = run.get("failed_tests")
    if failed is None:
        log.warning(
            "The API answer for test run %s carried no per-test rows: failed test names are not "
            "available, only the counts.",
            run["id"],
        )
        return ""
    if not failed:
        return ""
    log.error("Failed tests in Empirical test run %s (%d):", run["id"], len(failed))
    for case in failed[:LOGGED_TESTS]:
        log.error("  FAILED %s [%s]%s", case["name"], case["status"], _pw_id(case))
    if len(failed) > LOGGED_TESTS:
        log.error("  ... and %d more", len(failed) - LOGGED_TESTS)
    for case in run.get("flaky_tests") or []:
        log.warning("  FLAKY  %s%s", case["name"], _pw_id(case))
    names = ", ".join(repr(case["name"]) for case in failed[:NAMED_TESTS])
    more = f" and {len(failed) - NAMED_TESTS} more" if len(failed) > NAMED_TESTS else ""
    return f". Failed tests: {names}{more}"


def _pw_id(case: TestCase) -> str:
    return f" ({case['pw_test_id']})" if case.get("pw_test_id") else ""


def passes(status: str, *, fail_on_test_failure: bool, fail_on_empty_run: bool = True) -> bool:
    """Whether a wait that ended with `status` lets the task succeed (the one rule, used by `resolve`)."""
    return (
        status == "success"
        or (status == "failed" and not fail_on_test_failure)
        or (status == "empty" and not fail_on_empty_run)
    )


def resolve(
    event: Any,
    *,
    fail_on_test_failure: bool,
    log: logging.Logger | Any,
    fail_on_empty_run: bool = True,
) -> dict[str, Any]:
    """Turn the final event into the task's return value, or fail the task with its message."""
    event = validate_event(event)
    status = event["status"]
    message = str(event.get("message") or f"Empirical test run {event['test_run_id']}: {status}")
    names = log_failed_tests(event.get("test_run"), log) if status == "failed" else ""
    if passes(status, fail_on_test_failure=fail_on_test_failure, fail_on_empty_run=fail_on_empty_run):
        if status == "success":
            log.info("%s", message)
        else:
            flag = "fail_on_test_failure" if status == "failed" else "fail_on_empty_run"
            log.warning("%s (not failing the task: %s=False)", message, flag)
        return summary_of(event)
    if status == "empty":
        raise EmpiricalTestRunFailed(
            f"{message}. A run that executes no test proves nothing (check the tags, test_case_ids and "
            "the environment); set fail_on_empty_run=False to allow it"
        )
    raise EmpiricalTestRunFailed(message + names)
