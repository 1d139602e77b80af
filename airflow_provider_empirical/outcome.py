"""How a wait ends, decided once for the operator, the sensor and the trigger.

`Waiter` is the polling loop's brain without its I/O: fed a run (or the error of a poll),
it answers with seconds to sleep or with the final event. `resolve` judges that event with the
task's `Policy` and turns it into a task result or a task failure. The sync operator, the sensor
and the async trigger all use these, so the rules and messages cannot drift apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from airflow_provider_empirical.api.errors import (
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalTestRunFailed,
)
from airflow_provider_empirical.api.test_runs import TestCase, TestRun, is_terminal
from airflow_provider_empirical.api.verdict import (
    OUTCOMES,
    Outcome,
    Policy,
    Verdict,
    describe,
    judge,
    outcome_of,
)

if TYPE_CHECKING:
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

# Answers in a row that end a wait although each alone could be a blip: 2xx bodies that do not
# match the contract, and transport failures that look permanent (TLS, DNS).
MAX_STRIKES = 3
# A run just created may not be readable yet (read-after-write lag): a wait that knows its run
# was just created keeps going on a 404 for this long after the creation, until the run was
# seen once. Otherwise a 404 ends the wait at once.
NOT_FOUND_GRACE = 30.0
# The last poll starts this long before the deadline (a tenth of a short wait), so that it can
# still be answered: a wait ends within this margin before its deadline, never after it.
LAST_POLL_MARGIN = 1.0
LOGGED_TESTS = 50  # failed tests listed one per line in the task log
NAMED_TESTS = 10  # failed tests named in the exception message (and so in alerts)


class WaitEvent(TypedDict):
    """The single event that ends a wait; plain JSON so a trigger can send it."""

    status: Outcome
    test_run_id: int
    test_run: TestRun | None
    url: str | None
    message: str


def finished_event(run: TestRun, url: str | None, policy: Policy | None = None) -> WaitEvent:
    """The event for a run in a terminal state (its status as `policy` counts failures)."""
    status = outcome_of(run, (policy or Policy()).honor_snoozes)
    return WaitEvent(status=status, test_run_id=run["id"], test_run=run, url=url, message=describe(run, url))


def last_poll_margin(now: float, end_time: float) -> float:
    """How long before its deadline a wait polls for the last time."""
    return min(LAST_POLL_MARGIN, max(0.0, end_time - now) / 10)


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

    The deadline is wall-clock (epoch seconds) so it survives a hand-off to another process.
    The last poll starts `LAST_POLL_MARGIN` before it, and the wait ends when less than that is
    left after a poll: a run that just finished is reported as finished, and no wait outlives
    its deadline.
    """

    def __init__(
        self,
        test_run_id: int,
        url: str | None,
        poll_interval: float,
        end_time: float,
        log: logging.Logger | Any,
        clock: Callable[[], float] = time.time,
        *,
        max_strikes: int = MAX_STRIKES,
        created_at: float | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.clock = clock  # wall-clock epoch seconds; injectable so the rules are tested without sleeping
        self.test_run_id = test_run_id
        self.url = url
        self.poll_interval = poll_interval
        self.end_time = end_time
        self.log = log
        self.not_found_until = created_at + NOT_FOUND_GRACE if created_at is not None else None
        self.margin = last_poll_margin(clock(), end_time)
        self.policy = policy
        self.last: TestRun | None = None
        self.seen = False  # the run was read at least once (a 404 then means it is gone)
        self.strikes = 0  # contract mismatches or permanent-looking transport failures in a row
        self.max_strikes = max_strikes

    def step(self, result: TestRun | BaseException) -> WaitEvent | float:
        """Feed the result of one poll; get seconds to sleep, or the final event."""
        if isinstance(result, BaseException):
            ended = self._failed_poll(result)
            if ended is not None:
                return ended
        else:
            self.strikes = 0
            self.seen = True
            if is_terminal(result):
                return finished_event(result, self.url, self.policy)
            if self.last is None or self.last["state"] != result["state"]:  # not a line per poll
                self.log.info("%s", describe(result, self.url))
            self.last = result
        remaining = self.end_time - self.clock()
        if remaining <= self.margin:
            return self._timeout()
        return min(self.poll_interval, remaining - self.margin)

    def _failed_poll(self, error: BaseException) -> WaitEvent | None:
        if not isinstance(error, EmpiricalError):
            return error_event(self.test_run_id, self.url, error)
        lagging = not self.seen and self.not_found_until is not None and self.clock() < self.not_found_until
        if isinstance(error, EmpiricalNotFoundError) and lagging:
            self.log.warning(
                "Empirical test run %s is not readable yet (404); a run just created can take a "
                "moment to appear: looking again",
                self.test_run_id,
            )
            return None
        strike = error.contract or error.permanent
        if not (strike or error.transient):
            return error_event(self.test_run_id, self.url, error)
        self.strikes = self.strikes + 1 if strike else 0
        if self.strikes >= self.max_strikes:
            return error_event(self.test_run_id, self.url, error, strikes=self.strikes)
        self.log.warning("Still waiting for Empirical test run %s: %s", self.test_run_id, error.message)
        return None

    def _timeout(self) -> WaitEvent:
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


# -- the two drivers of Waiter: the same loop, one sleeping in a thread, one in the event loop.
# Both start with `first_delay` (0 in a worker; a poll interval in the triggerer, which defers
# right after a check), catch everything a poll raises and never raise themselves. A poll may
# take until the wait's deadline, no longer (retries and their pauses stop there too).


def wait_for_test_run(
    hook: EmpiricalHook,
    test_run_id: int,
    *,
    url: str | None,
    poll_interval: float,
    end_time: float,
    log: logging.Logger | Any,
    first_delay: float = 0.0,
    created_at: float | None = None,
    policy: Policy | None = None,
) -> WaitEvent:
    """Poll until the run ends or `end_time` (epoch seconds) passes; transient errors never end it.

    Without a `url`, the run's link is worked out after the first answer (which may name the
    project's slug). `created_at` (epoch seconds), when the caller just created the run, lets a
    404 from read-after-write lag pass for a moment.
    """
    waiter = Waiter(test_run_id, url, poll_interval, end_time, log, created_at=created_at, policy=policy)
    step: WaitEvent | float = min(first_delay, max(0.0, end_time - waiter.margin - time.time()))
    while not isinstance(step, dict):
        time.sleep(step)
        started = time.time()
        result: TestRun | BaseException
        try:
            result = hook.get_test_run(test_run_id, deadline=end_time)
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
    created_at: float | None = None,
    policy: Policy | None = None,
) -> WaitEvent:
    """Async twin of `wait_for_test_run`, used by the trigger."""
    waiter = Waiter(test_run_id, url, poll_interval, end_time, log, created_at=created_at, policy=policy)
    step: WaitEvent | float = min(first_delay, max(0.0, end_time - waiter.margin - time.time()))
    while not isinstance(step, dict):
        await asyncio.sleep(step)
        started = time.time()
        result: TestRun | BaseException
        try:
            result = await hook.aget_test_run(test_run_id, deadline=end_time)
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


# -- the end of a wait, in the task --

_INTERNAL = ("failed_rows", "snoozed_rows")  # parser bookkeeping, not part of a summary


def summary_of(event: WaitEvent, verdict: Verdict | None = None) -> dict[str, Any]:
    """What the task returns: the run's fields, its URL and outcome, and with a verdict the tests
    as the policy counts them (`failed_tests`: failures that count; `snoozed_tests`)."""
    run: dict[str, Any] = dict(event.get("test_run") or {"id": event["test_run_id"]})
    for key in _INTERNAL:
        run.pop(key, None)
    summary = {**run, "url": event.get("url"), "outcome": event["status"]}
    if verdict is not None:
        summary["outcome"] = verdict.outcome
        summary["failed_tests"] = verdict.failures.counted
        summary["snoozed_tests"] = verdict.failures.snoozed
    return summary


def validate_event(event: Any) -> WaitEvent:
    """Check an event that crossed a process boundary (it may come from another release's trigger)."""
    if not isinstance(event, dict) or event.get("status") not in OUTCOMES or "test_run_id" not in event:
        shown = sorted(event)[:10] if isinstance(event, dict) else type(event).__name__
        raise EmpiricalError(f"Unexpected event from the Empirical trigger: {shown}")
    return event  # type: ignore[return-value]


def verdict_of(event: WaitEvent, policy: Policy) -> Verdict | None:
    """The task's own verdict on the event's run, when the event carries a finished run.

    A trigger from another release (or with other flags) may have judged it differently: the
    task's policy is the one that counts. None for a timeout or an error without a run.
    """
    run = event.get("test_run")
    if run and is_terminal(run) and event["status"] != "timeout":
        return judge(run, policy)
    return None


def log_tests(run: TestRun | None, verdict: Verdict, log: logging.Logger | Any) -> str:
    """Log the failures that count, then the snoozed ones, then the flaky ones, one per line
    (capped); return the counted failures' names for an error message."""
    if not run or (not run.get("failed_count") and not run.get("flaky_count")):
        return ""
    failures = verdict.failures
    if run.get("failed_count") and failures.counted is None:
        log.warning(
            "The API answer for test run %s carried no per-test rows: failed test names are not "
            "available, only the counts.",
            run["id"],
        )
    if failures.raw and not failures.basis.startswith(
        ("failed_count_after", "the per-test", "every failure counts")
    ):
        log.warning("Test run %s: %s", run["id"], failures.basis)
    counted = failures.counted or []
    if counted:
        log.error("Failed tests that count in Empirical test run %s (%d):", run["id"], failures.count)
        for case in counted[:LOGGED_TESTS]:
            log.error("  FAILED %s [%s]%s", case["name"], case["status"], _where(case))
        if len(counted) > LOGGED_TESTS:
            log.error("  ... and %d more", len(counted) - LOGGED_TESTS)
    for case in [c for c in failures.snoozed or [] if c not in counted][:LOGGED_TESTS]:
        snooze: Mapping[str, Any] = case.get("snooze") or {}
        until = f"until {snooze.get('snooze_until')}" if snooze.get("snooze_until") else "by a snooze"
        about = f", {snooze['description']}" if snooze.get("description") else ""
        log.warning("  SNOOZED %s (snoozed %s%s)%s", case["name"], until, about, _where(case))
    for case in (run.get("flaky_tests") or [])[:LOGGED_TESTS]:
        log.warning("  FLAKY  %s%s", case["name"], _where(case))
    if not counted:
        return ""
    names = ", ".join(repr(case["name"]) for case in counted[:NAMED_TESTS])
    more = f" and {len(counted) - NAMED_TESTS} more" if len(counted) > NAMED_TESTS else ""
    return f". Failed tests: {names}{more}"


def _where(case: TestCase) -> str:
    """Where to look: the test's own page, else its Playwright id."""
    if case.get("url"):
        return f" {case['url']}"
    return f" ({case['pw_test_id']})" if case.get("pw_test_id") else ""


def resolve(event: Any, policy: Policy, *, log: logging.Logger | Any) -> dict[str, Any]:
    """Judge the final event with `policy`: the task's return value, or the task fails with why."""
    event = validate_event(event)
    message = str(event.get("message") or f"Empirical test run {event['test_run_id']}: {event['status']}")
    verdict = verdict_of(event, policy)
    if verdict is None:  # a timeout, or a wait that ended without a finished run
        raise EmpiricalTestRunFailed(message)
    names = log_tests(event.get("test_run"), verdict, log)
    summary = summary_of(event, verdict)
    if verdict.passes:
        if verdict.reason == "tests were executed and none failed":
            log.info("%s", message)
        else:
            log.warning("%s (not failing the task: %s)", message, verdict.reason)
        return summary
    if verdict.outcome in ("error", "cancelled", "unreadable"):
        raise EmpiricalTestRunFailed(message)  # the message says why already
    raise EmpiricalTestRunFailed(f"{message}. {verdict.reason[0].upper()}{verdict.reason[1:]}{names}")
