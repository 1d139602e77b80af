"""EmpiricalTestRunTrigger: wait for a test run in the triggerer, without holding a worker slot."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_empirical.hooks.empirical import EmpiricalHook


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
    """

    def __init__(
        self,
        test_run_id: int,
        end_time: float,
        empirical_conn_id: str = EmpiricalHook.default_conn_name,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.test_run_id = int(test_run_id)
        self.end_time = float(end_time)
        self.empirical_conn_id = empirical_conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "test_run_id": self.test_run_id,
                "end_time": self.end_time,
                "empirical_conn_id": self.empirical_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = EmpiricalHook(self.empirical_conn_id)
        try:
            event = await hook.await_test_run(
                self.test_run_id, poll_interval=self.poll_interval, end_time=self.end_time
            )
        finally:
            await hook.aclose()
        yield TriggerEvent(dict(event))  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return (
            f"EmpiricalTestRunTrigger(test_run_id={self.test_run_id}, "
            f"empirical_conn_id={self.empirical_conn_id!r}, poll_interval={self.poll_interval}, "
            f"ends_in={max(0.0, self.end_time - time.time()):.0f}s)"
        )
