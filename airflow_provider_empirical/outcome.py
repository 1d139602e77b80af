"""How a wait ends, decided once for the operator, the sensor and the trigger.

`Waiter` is the polling loop's brain without its I/O: fed a run (or the error of a poll),
it answers with seconds to sleep or with the final event. `resolve` turns that event into
a task result or a task failure. The sync operator, the sensor and the async trigger all
use these, so the outcome rules and messages cannot drift apart.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, TypedDict

from airflow_provider_empirical.errors import EmpiricalError, EmpiricalTestRunFailed
from airflow_provider_empirical.models import TestRun, describe, is_terminal, passed

Status = Literal["success", "failed", "error", "cancelled", "timeout"]
STATUSES: frozenset[str] = frozenset({"success", "failed", "error", "cancelled", "timeout"})


class WaitEvent(TypedDict):
    """The single event that ends a wait; plain JSON so a trigger can send it."""

    status: Status
    test_run_id: int
    test_run: TestRun | None
    url: str | None
    message: str


def status_of(run: TestRun) -> Status:
    """How a run in a terminal state ended."""
    if passed(run):
        return "success"
    if run["state"] == "ended":
        return "failed"
    if run["state"] == "cancelled":
        return "cancelled"
    return "error"


def finished_event(run: TestRun, url: str | None) -> WaitEvent:
    """The event for a run in a terminal state."""
    return WaitEvent(
        status=status_of(run), test_run_id=run["id"], test_run=run, url=url, message=describe(run, url)
    )


def error_event(test_run_id: int, url: str | None, error: BaseException) -> WaitEvent:
    """A wait that cannot go on (bad key, run gone, missing connection...)."""
    reason = error.message if isinstance(error, EmpiricalError) else f"{type(error).__name__}: {error}"
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
    ) -> None:
        self.test_run_id = test_run_id
        self.url = url
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.log = log
        self.last: TestRun | None = None

    def step(self, result: TestRun | BaseException) -> WaitEvent | float:
        """Feed the result of one poll; get seconds to sleep, or the final event."""
        if isinstance(result, BaseException):
            if not (isinstance(result, EmpiricalError) and result.transient):
                return error_event(self.test_run_id, self.url, result)
            self.log.warning("Still waiting for Empirical test run %s: %s", self.test_run_id, result.message)
        else:
            if is_terminal(result):
                return finished_event(result, self.url)
            if self.last is None or self.last["state"] != result["state"]:  # not a line per poll
                self.log.info("%s", describe(result, self.url))
            self.last = result
        remaining = self.end_time - time.time()
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


def summary_of(event: WaitEvent) -> dict[str, Any]:
    """What the task returns: the run's fields plus its URL and outcome."""
    run = event.get("test_run") or {"id": event["test_run_id"]}
    return {**run, "url": event.get("url"), "outcome": event["status"]}


def resolve(event: Any, *, fail_on_test_failure: bool, log: logging.Logger | Any) -> dict[str, Any]:
    """Turn the final event into the task's return value, or fail the task with its message."""
    if not isinstance(event, dict) or event.get("status") not in STATUSES or "test_run_id" not in event:
        raise EmpiricalError(f"Unexpected event from the Empirical trigger: {event!r}")
    message = str(event.get("message") or f"Empirical test run {event['test_run_id']}: {event['status']}")
    if event["status"] == "success":
        log.info("%s", message)
        return summary_of(event)  # type: ignore[arg-type]
    if event["status"] == "failed" and not fail_on_test_failure:
        log.warning("%s (not failing the task: fail_on_test_failure=False)", message)
        return summary_of(event)  # type: ignore[arg-type]
    raise EmpiricalTestRunFailed(message)
