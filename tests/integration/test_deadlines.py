"""Deadlines that hold (issue 13): a wait ends within one poll interval plus one request timeout of
its own deadline, whatever the server does: a body that drips a byte a second, a Retry-After longer
than the wait, a pool full of such requests next to a healthy run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.outcome import await_test_run, wait_for_test_run
from tests.conftest import conn_json

REQUEST_TIMEOUT = 1.0
POLL = 0.2
SLACK = 1.5  # scheduling on a loaded 2-core machine


@pytest.fixture
def slow_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator, extra={"timeout": REQUEST_TIMEOUT})
    )
    return emulator


def _start(emulator: Emulator) -> int:
    emulator.queue_runs(RunScript(outcome="never", queued_for=0, run_for=60))
    return EmpiricalHook().trigger_test_run("production")["id"]


def _sync_wait(run_id: int, seconds: float) -> dict[str, Any]:
    return dict(
        wait_for_test_run(
            EmpiricalHook(),
            run_id,
            url=None,
            poll_interval=POLL,
            end_time=time.time() + seconds,
            log=logging.getLogger(),
        )
    )


async def _async_wait(run_id: int, seconds: float) -> dict[str, Any]:
    hook = EmpiricalHook()
    try:
        return dict(
            await await_test_run(
                hook,
                run_id,
                url=None,
                poll_interval=POLL,
                end_time=time.time() + seconds,
                log=logging.getLogger(),
            )
        )
    finally:
        await hook.aclose()


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(
    "fault",
    [
        {"status": None, "drip": 1.0, "times": -1},
        {"status": 429, "headers": {"Retry-After": "6"}, "times": -1},
    ],
    ids=["drip-1-byte-per-second", "retry-after-beyond-the-wait"],
)
def test_the_wait_deadline_holds(slow_conn: Emulator, mode: str, fault: dict[str, Any]) -> None:
    run_id = _start(slow_conn)
    slow_conn.add_fault(method="GET", path=f"/api/test-runs/{run_id}", **fault)
    deadline = 2.0
    started = time.monotonic()
    event = _sync_wait(run_id, deadline) if mode == "sync" else asyncio.run(_async_wait(run_id, deadline))
    took = time.monotonic() - started
    assert event["status"] == "timeout"
    assert took <= deadline + POLL + REQUEST_TIMEOUT + SLACK, took


def test_dripping_requests_do_not_starve_a_healthy_trigger(slow_conn: Emulator) -> None:
    stuck = _start(slow_conn)
    slow_conn.queue_runs(RunScript(queued_for=0, run_for=0.5))
    healthy = EmpiricalHook().trigger_test_run("production")["id"]
    slow_conn.add_fault(method="GET", path=f"/api/test-runs/{stuck}", status=None, drip=1.0, times=-1)

    async def main() -> list[dict[str, Any]]:
        waits = [_async_wait(stuck, 4.0) for _ in range(12)] + [_async_wait(healthy, 30.0)]
        return await asyncio.gather(*waits)

    started = time.monotonic()
    *stuck_events, healthy_event = asyncio.run(main())
    assert healthy_event["status"] == "success"
    assert all(event["status"] == "timeout" for event in stuck_events)
    assert time.monotonic() - started <= 4.0 + POLL + REQUEST_TIMEOUT + SLACK
