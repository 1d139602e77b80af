"""The deferred wait's kill hook: cancel the run only when a user stopped the task, and in time.

Airflow 3.3 calls `BaseTrigger.on_kill` when the triggerer stops running a trigger that is no
longer assigned to it and that did not time out. Airflow 3.3.2 cannot tell why it is no longer
assigned, so two very different things reach the hook (docs/airflow-bug-on-kill.md):

- a user marked the deferred task failed or success, or cleared it: the run should be cancelled;
- a triggerer stalled past ``[triggerer] triggerer_health_check_threshold`` (a long GC pause, a
  frozen VM, a network partition) and its triggers moved to another triggerer, which is still
  waiting for the run (apache/airflow PR #73454): cancelling there kills live work.

So the hook first asks Airflow the task instance's current state, through the request channel
the 3.3 triggerer gives every trigger (`GetTaskStates`, answered by the triggerer's supervisor
from the metadata database), and decides from it (`verdict`): a task still ``deferred`` was only
moved, and nothing is cancelled.

Time: Airflow 3.3.2 gives the hook about one second, not ``[triggerer] on_kill_timeout``: the
supervisor re-sends the trigger's id in every state sync until the runner reports it finished,
the runner cancels the trigger's task again on its next loop (~1 s), and `run_trigger` swallows
that `CancelledError` without a log line. So the work runs in its own task, started at once and
shielded from those repeated cancels, with its own deadline (``[triggerer] on_kill_timeout``,
30 s by default, counted from the kill): the state question is bounded, the cancel is sent at
once, retried only while time remains, and a long ``Retry-After`` is cut so a last attempt still
fits. When Airflow cancels the hook again, the cancel goes on in the background; its later log
lines land in the triggerer's own log, because Airflow closes the trigger's log by then.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from airflow_provider_empirical.errors import EmpiricalError

# Of the kill hook's budget, what the state question leaves for the cancel itself (one 503 with
# Retry-After: 3 and a second attempt fit). The question may take the rest: the triggerer's
# supervisor builds its in-process execution API client on the first request of its life, and
# answers nothing meanwhile (3.6 s on an idle machine here; 7.6 to 13 s under load in the tier).
CANCEL_RESERVE = 8.0
# A pause before a retry (Retry-After or backoff) never leaves less than this for the last attempt.
LAST_ATTEMPT = 2.0
DEFAULT_BUDGET = 30.0  # [triggerer] on_kill_timeout's default

# The states a user's action leaves a deferred task in (REST PATCH / UI "mark as ..."), and what
# the cancel reason says about each.
MARKED = {
    "failed": "was marked failed by a user",
    "success": "was marked success by a user",
    "skipped": "was set to skipped (by a user, or its DAG run timed out)",
    "upstream_failed": "was marked upstream_failed",
    "removed": "was removed from its DAG",
}
CLEARED = {None: "was cleared by a user", "restarting": "was cleared by a user"}

# Tasks cancelled in the background, kept referenced until they end (asyncio keeps weak ones).
_BACKGROUND: set[asyncio.Task[None]] = set()


class _Unknown:
    """The task instance's state could not be learned (no answer, or not run by a triggerer)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"unknown ({self.why})"


_GONE = "gone"  # the task instance no longer exists (its DAG run was deleted)


@dataclass(frozen=True)
class Verdict:
    """Whether to cancel the run, and the sentence saying why (the cancel reason when cancelling)."""

    cancel: bool
    reason: str


def task_label(ti: Any) -> str:
    """`dag.task` (with its map index) and the DAG run, as the operator names the task."""
    map_index = getattr(ti, "map_index", -1)
    mapped = f"[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else ""
    return f"{ti.dag_id}.{ti.task_id}{mapped} (DAG run {ti.run_id})"


def verdict(state: str | _Unknown | None, ti: Any, fallback_reason: str | None) -> Verdict:
    """Decide from the task instance's current state whether the kill was a user's.

    ``ti`` is the trigger's task instance (None when Airflow gave the trigger none: nothing can be
    asked then, and the call is taken at its word, with ``fallback_reason``).
    """
    if ti is None:
        return Verdict(True, fallback_reason or "the Airflow task waiting for it was killed")
    where = f"Airflow task {task_label(ti)}"
    if isinstance(state, _Unknown):
        return Verdict(
            False,
            f"{where}: Airflow called the kill hook, but the task's state could not be read ({state.why}); "
            "the kill may be a reassignment to another triggerer (apache/airflow PR #73454), so the run is "
            "left going. If a user stopped the task, cancel the run by hand",
        )
    if state == "deferred":
        return Verdict(
            False,
            f"{where} is still deferred: its trigger was moved to another triggerer (this triggerer "
            "stalled or lost its heartbeat, apache/airflow PR #73454), which goes on waiting; not a "
            "user's kill, so the run is not cancelled",
        )
    if state == _GONE:
        return Verdict(True, f"{where} no longer exists (its DAG run was deleted)")
    if state in MARKED:
        return Verdict(True, f"{where} {MARKED[state]}")
    if state in CLEARED:
        return Verdict(True, f"{where} {CLEARED[state]}")
    return Verdict(
        False,
        f"{where} is {state}, no longer waiting for this trigger: it resumed (another triggerer's copy of "
        "this trigger fired) or was cleared and already restarted; the run is left alone",
    )


async def task_state(ti: Any, timeout: float) -> str | _Unknown | None:
    """The task instance's current state, asked through the 3.3 triggerer's supervisor channel."""
    try:
        from airflow.sdk.execution_time import task_runner
        from airflow.sdk.execution_time.comms import GetTaskStates
    except ImportError:
        return _Unknown("this Airflow has no task state requests")
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is None or not hasattr(comms, "asend"):
        return _Unknown("not running in an Airflow triggerer")
    map_index = getattr(ti, "map_index", -1)
    request = GetTaskStates(
        dag_id=ti.dag_id,
        task_ids=[ti.task_id],
        run_ids=[ti.run_id],
        map_index=map_index if isinstance(map_index, int) and map_index >= 0 else None,
    )
    try:
        answer = await asyncio.wait_for(comms.asend(request), timeout)
    except asyncio.TimeoutError:
        return _Unknown(f"no answer within {timeout:.0f} s")
    except Exception as exc:
        return _Unknown(f"{type(exc).__name__}: {exc}")
    states = getattr(answer, "task_states", None)
    if not isinstance(states, dict):
        return _Unknown(f"unexpected answer {type(answer).__name__}")
    key = ti.task_id if not (isinstance(map_index, int) and map_index >= 0) else f"{ti.task_id}_{map_index}"
    per_task = states.get(ti.run_id) or {}
    if key not in per_task:
        return _GONE
    value = per_task[key]
    return None if value is None else str(getattr(value, "value", value))


_WARMED: set[int] = set()  # event loops (triggerer processes) whose supervisor channel was asked once
_WARMING: set[asyncio.Task[None]] = set()
WARM_UP_TIMEOUT = 120.0


def warm_up(trigger: Any) -> None:
    """Ask the supervisor for the task's state once per triggerer, in the background, as soon as a
    trigger that may need it starts: the supervisor builds its execution-API client on the first
    request that needs one (seconds, over 20 s on a loaded machine), and a kill hook that asked
    first would run out of its time and leave a killed task's run going."""
    loop = asyncio.get_running_loop()
    ti = getattr(trigger, "task_instance", None)
    if id(loop) in _WARMED or ti is None:
        return
    _WARMED.add(id(loop))
    work = loop.create_task(_ask_quietly(ti), name="empirical-kill-hook-warm-up")
    _WARMING.add(work)  # a reference, so the task is not collected before it is done
    work.add_done_callback(_WARMING.discard)


async def _ask_quietly(ti: Any) -> None:
    await task_state(ti, WARM_UP_TIMEOUT)


def budget_seconds() -> float:
    """``[triggerer] on_kill_timeout``: the time Airflow says a kill hook may take (30 s by default)."""
    try:
        from airflow.providers.common.compat.sdk import conf

        seconds = float(conf.getint("triggerer", "on_kill_timeout", fallback=int(DEFAULT_BUDGET)))
    except Exception:
        seconds = DEFAULT_BUDGET
    return seconds if seconds > 0 else DEFAULT_BUDGET


async def cancel_until(
    test_run_id: int, reason: str, deadline: float, *, conn_id: str, log: Any
) -> tuple[bool | None, int]:
    """Cancel the run, retrying transient errors only while `deadline` (epoch s) allows another try.

    Returns (True: cancelled, False: it had already ended, None: not cancelled) and the attempts.
    A ``Retry-After`` is honoured when it fits; a longer one is cut so that a last attempt still
    gets `LAST_ATTEMPT` seconds before the deadline.
    """
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook
    from airflow_provider_empirical.http.protocol import RetryPolicy

    policy = RetryPolicy()
    hook = EmpiricalHook(conn_id, retry=RetryPolicy(attempts=1))  # this loop does the retrying
    attempt = 0
    try:
        while True:
            attempt += 1
            remaining = deadline - time.time()
            try:
                cancelled = await asyncio.wait_for(
                    hook.acancel_test_run(test_run_id, reason=reason), max(0.1, remaining)
                )
                return cancelled, attempt
            except asyncio.TimeoutError:
                log.warning(
                    "Could not cancel Empirical test run %s: no answer before the kill hook's deadline "
                    "(attempt %d)",
                    test_run_id,
                    attempt,
                )
                return None, attempt
            except EmpiricalError as exc:
                error = exc
            remaining = deadline - time.time()
            if not error.transient or error.permanent:
                log.warning("Could not cancel Empirical test run %s: %s", test_run_id, error.message)
                return None, attempt
            hint = error.retry_after
            if hint is None:
                ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
                hint = ceiling / 2 + random.uniform(0, ceiling / 2)
            pause = min(hint, remaining - LAST_ATTEMPT)
            if pause < 0:
                log.warning(
                    "Could not cancel Empirical test run %s: %s; no time left for another attempt "
                    "(%.1f s of the kill hook's deadline remain)",
                    test_run_id,
                    error.message,
                    max(0.0, remaining),
                )
                return None, attempt
            log.warning(
                "Cancelling Empirical test run %s: %s; attempt %d, retrying in %.1f s (%.1f s left)%s",
                test_run_id,
                error.message,
                attempt,
                pause,
                remaining,
                "" if error.retry_after is None or pause >= error.retry_after else " (Retry-After cut)",
            )
            await asyncio.sleep(pause)
    finally:
        await hook.aclose()


async def _kill(trigger: Any, started: float, deadline: float) -> None:
    log = trigger.log
    ti = getattr(trigger, "task_instance", None)
    state: str | _Unknown | None = _Unknown("no task instance")
    if ti is not None:
        state = await task_state(ti, timeout=max(1.0, deadline - time.time() - CANCEL_RESERVE))
        log.info("Task state %r read %.1f s after the kill", state, time.monotonic() - started)
    decision = verdict(state, ti, trigger.cancel_reason)
    if not decision.cancel:
        log.warning("Not cancelling Empirical test run %s: %s", trigger.test_run_id, decision.reason)
        return
    log.info(
        "Cancelling Empirical test run %s (task state %r): %s",
        trigger.test_run_id,
        state if ti is not None else "not asked",
        decision.reason,
    )
    cancelled, attempts = await cancel_until(
        trigger.test_run_id, decision.reason, deadline, conn_id=trigger.empirical_conn_id, log=log
    )
    took = time.monotonic() - started
    if cancelled:
        log.info(
            "Cancelled Empirical test run %s %.1f s after the kill (%d attempt(s)) %s",
            trigger.test_run_id,
            took,
            attempts,
            trigger.test_run_url or "",
        )
    elif cancelled is False:
        log.info("Empirical test run %s had already ended: nothing to cancel", trigger.test_run_id)
    else:
        log.warning(
            "Empirical test run %s was NOT cancelled (gave up after %.1f s, %d attempt(s)): cancel it by "
            "hand %s",
            trigger.test_run_id,
            took,
            attempts,
            trigger.test_run_url or "",
        )


async def kill_hook(trigger: Any) -> None:
    """What `EmpiricalTestRunTrigger.on_kill` does with ``cancel_on_kill``: see the module docstring.

    Returns when the work is done; when Airflow cancels the hook first, the work goes on (shielded)
    until its own deadline and the `CancelledError` propagates to Airflow as it expects.
    """
    started = time.monotonic()
    budget = budget_seconds()
    deadline = time.time() + budget
    work = asyncio.get_running_loop().create_task(
        _kill(trigger, started, deadline), name=f"empirical-kill-hook-{trigger.test_run_id}"
    )
    _BACKGROUND.add(work)
    work.add_done_callback(_report_and_forget)
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        if not work.done():
            trigger.log.info(
                "Airflow cancelled the kill hook again %.1f s after the kill; the cancel of Empirical test "
                "run %s goes on in the background (until %.0f s after the kill; later lines are in the "
                "triggerer's log)",
                time.monotonic() - started,
                trigger.test_run_id,
                budget,
            )
        raise


def _report_and_forget(work: asyncio.Task[None]) -> None:
    _BACKGROUND.discard(work)
    if not work.cancelled() and work.exception() is not None:
        import logging

        logging.getLogger(__name__).warning(
            "The Empirical kill hook failed: %r", work.exception(), exc_info=work.exception()
        )
