"""EmpiricalTestRunTrigger: wait for a test run in the triggerer, without holding a worker slot."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_empirical.api.verdict import Policy
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.outcome import await_test_run


class EmpiricalTestRunTrigger(BaseTrigger):
    """Poll a test run until it ends or `end_time` passes, then yield exactly one event.

    Its kwargs are plain JSON (a connection id, never a key or a client) and `end_time` is
    wall-clock epoch seconds, so it can be rebuilt in another process after a restart.
    Transient API errors are retried and logged; they never end the wait. Anything else
    ends it with an `error` event that says what to fix. The event is a `WaitEvent` dict.

    :param test_run_id: the run to wait for.
    :param end_time: when to stop waiting, as a UNIX timestamp.
    :param empirical_conn_id: connection of type ``empirical``.
    :param poll_interval: seconds between two status checks.
    :param test_run_url: the run's dashboard page, for messages (computed by the task).
    :param policy: the task's pass policy (`api.verdict.Policy.to_dict()`), so the event's status
        counts failures as the task will (the task judges the run again when it resumes).
    :param created_at: when the task created the run (epoch seconds), if it just did: a 404 from
        read-after-write lag then keeps the wait going for a moment.
    :param cancel_on_kill: on Airflow 3.3+, cancel the run when a user marks the deferred task
        failed or success, or clears it (not when the triggerer restarts or the wait times out).
    :param cancel_reason: the reason recorded with that cancel (names the DAG, run and task).
    """

    def __init__(
        self,
        test_run_id: int,
        end_time: float,
        empirical_conn_id: str = EmpiricalHook.default_conn_name,
        poll_interval: float = 30.0,
        test_run_url: str | None = None,
        cancel_on_kill: bool = False,
        cancel_reason: str | None = None,
        created_at: float | None = None,
        policy: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.test_run_id = int(test_run_id)
        self.end_time = float(end_time)
        self.empirical_conn_id = empirical_conn_id
        self.poll_interval = float(poll_interval)
        self.test_run_url = test_run_url
        self.cancel_on_kill = bool(cancel_on_kill)
        self.cancel_reason = cancel_reason
        self.created_at = float(created_at) if created_at is not None else None
        self.policy = dict(policy) if policy else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "test_run_id": self.test_run_id,
                "end_time": self.end_time,
                "empirical_conn_id": self.empirical_conn_id,
                "poll_interval": self.poll_interval,
                "test_run_url": self.test_run_url,
                "cancel_on_kill": self.cancel_on_kill,
                "cancel_reason": self.cancel_reason,
                "created_at": self.created_at,
                "policy": self.policy,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.cancel_on_kill:  # so that a kill hook gets its answer about the task in time
            from airflow_provider_empirical.triggers.kill import warm_up

            warm_up(self)
        hook = EmpiricalHook(self.empirical_conn_id)
        try:
            event = await await_test_run(
                hook,
                self.test_run_id,
                url=self.test_run_url,
                poll_interval=self.poll_interval,
                end_time=self.end_time,
                log=self.log,
                # the task checked the run just before deferring; a random phase within the second
                # half of the interval keeps a thousand triggers deferred together from polling in waves
                first_delay=self.poll_interval * random.uniform(0.5, 1.0),
                created_at=self.created_at,
                policy=Policy.from_dict(self.policy),
            )
        finally:
            await hook.aclose()
        yield TriggerEvent(dict(event))  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """Airflow 3.3+ calls this when the triggerer drops the trigger (after `run` was cancelled).

        That is a user's mark-failed/success or clear, or, on 3.3.2, a reassignment after this
        triggerer stalled (apache/airflow PR #73454): `kill.kill_hook` asks the task's state first
        (a task still deferred was only moved) and cancels within the time Airflow really gives.
        """
        if not self.cancel_on_kill:
            return
        from airflow_provider_empirical.triggers.kill import kill_hook

        await kill_hook(self)

    def __repr__(self) -> str:
        return (
            f"EmpiricalTestRunTrigger(test_run_id={self.test_run_id}, "
            f"empirical_conn_id={self.empirical_conn_id!r}, poll_interval={self.poll_interval}, "
            f"ends_in={max(0.0, self.end_time - time.time()):.0f}s)"
        )
