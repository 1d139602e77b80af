"""EmpiricalTestRunTrigger over real HTTP: one event per run, transient faults never end the wait."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.http import aio as client_module
from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger
from tests.conftest import API_KEY

QUICK = {"queued_for": 0.1, "run_for": 0.6}


def collect(*triggers: EmpiricalTestRunTrigger) -> list[list[dict[str, Any]]]:
    """Run triggers concurrently on one event loop; every event each one yields."""

    async def events(trigger: EmpiricalTestRunTrigger) -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    async def main() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(events(t) for t in triggers)))

    return asyncio.run(main())


def start_run(emulator: Emulator, **script: Any) -> int:
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

    emulator.queue_runs(RunScript(**{**QUICK, **script}))
    return EmpiricalHook().trigger_test_run("production")["id"]


def trigger_for(
    run_id: int, timeout: float = 30, poll: float = 0.2, **kwargs: Any
) -> EmpiricalTestRunTrigger:
    return EmpiricalTestRunTrigger(
        test_run_id=run_id, end_time=time.time() + timeout, poll_interval=poll, **kwargs
    )


def test_serializes_to_plain_json_without_secrets(empirical_conn: Emulator) -> None:
    trigger = trigger_for(12)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_empirical.triggers.empirical.EmpiricalTestRunTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert set(kwargs) == {
        "test_run_id",
        "end_time",
        "empirical_conn_id",
        "poll_interval",
        "test_run_url",
        "cancel_on_kill",
        "cancel_reason",
        "created_at",
        "policy",
    }
    assert EmpiricalTestRunTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert API_KEY not in json.dumps(kwargs) + repr(trigger)


@pytest.mark.parametrize(
    ("script", "status", "words"),
    [
        ({"outcome": "passed"}, "success", "ended: 23 passed, 0 failed"),
        ({"outcome": "failed"}, "failed", "3 failed"),
        (
            {"outcome": "error", "error_code": "merge_reports_failed"},
            "error",
            "failed to merge sharded reports",
        ),
        ({"outcome": "cancelled"}, "cancelled", "was cancelled"),
    ],
)
def test_yields_exactly_one_event_per_outcome(
    empirical_conn: Emulator, script: dict, status: str, words: str
) -> None:
    run_id = start_run(empirical_conn, **script)
    ((event,),) = collect(trigger_for(run_id))
    assert event["status"] == status and event["test_run_id"] == run_id and words in event["message"]
    assert (
        event["url"] == f"{empirical_conn.url}/demo/test-runs/{run_id}"
    )  # the slug comes from the run answer
    assert event["test_run"]["id"] == run_id


def test_transient_faults_during_the_wait_never_end_it(empirical_conn: Emulator) -> None:
    run_id = start_run(empirical_conn, run_for=2.0)
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=2, status=503)
    empirical_conn.add_fault(
        method="GET", path="/api/test-runs/*", times=1, status=429, headers={"Retry-After": "1"}
    )
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=1, malformed=True)
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=1, drop=True)
    ((event,),) = collect(trigger_for(run_id))
    assert event["status"] == "success"


def test_server_that_disappears_and_comes_back(empirical_conn: Emulator) -> None:
    run_id = start_run(empirical_conn, run_for=1.0)
    empirical_conn.down_for(4.0)
    ((event,),) = collect(trigger_for(run_id))
    assert event["status"] == "success"


@pytest.mark.parametrize(("status", "words"), [(401, "check the API key"), (404, "check the test run id")])
def test_permanent_errors_mid_wait_end_it_with_what_to_fix(
    empirical_conn: Emulator, status: int, words: str
) -> None:
    run_id = start_run(empirical_conn, run_for=30)
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=status)
    ((event,),) = collect(trigger_for(run_id))
    assert event["status"] == "error" and words in event["message"] and f"HTTP {status}" in event["message"]
    assert API_KEY not in json.dumps(event)


def test_timeout_is_reported_with_the_url(empirical_conn: Emulator) -> None:
    run_id = start_run(empirical_conn, outcome="never")
    ((event,),) = collect(trigger_for(run_id, timeout=0.5))
    assert event["status"] == "timeout" and "may still be going" in event["message"]
    assert event["url"] in event["message"] and event["test_run"]["state"] in ("queued", "started")


def test_run_that_ends_at_the_deadline_is_not_reported_late(empirical_conn: Emulator) -> None:
    run_id = start_run(empirical_conn, queued_for=0.0, run_for=0.7)
    ((event,),) = collect(trigger_for(run_id, timeout=1.0, poll=30))
    assert event["status"] == "success"


def test_missing_connection_is_an_error_event_not_a_crash(empirical_conn: Emulator) -> None:
    ((event,),) = collect(trigger_for(1, empirical_conn_id="no_such_connection"))
    assert event["status"] == "error" and "no_such_connection" in event["message"]
    assert empirical_conn.count() == 0


def test_rebuilt_trigger_resumes_to_the_same_outcome(empirical_conn: Emulator) -> None:
    run_id = start_run(empirical_conn, run_for=1.5, outcome="failed")
    first = trigger_for(run_id)

    async def interrupted() -> None:  # a triggerer that dies mid-wait
        task = asyncio.ensure_future(first.run().__anext__())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    _, kwargs = first.serialize()
    ((event,),) = collect(EmpiricalTestRunTrigger(**kwargs))
    assert event["status"] == "failed" and event["test_run_id"] == run_id


def test_triggers_on_one_loop_share_one_pool_and_release_it(empirical_conn: Emulator) -> None:
    run_ids = [start_run(empirical_conn, run_for=0.3 + 0.1 * i) for i in range(5)]
    seen: list[int] = []

    async def main() -> list[Any]:
        async def watch() -> None:
            await asyncio.sleep(0.4)
            seen.append(len(client_module._shared[asyncio.get_running_loop()]))

        async def events(trigger: EmpiricalTestRunTrigger) -> list[Any]:
            return [e.payload async for e in trigger.run()]

        results = await asyncio.gather(watch(), *(events(trigger_for(r)) for r in run_ids))
        seen.append(len(client_module._shared[asyncio.get_running_loop()]))
        return results[1:]

    results = asyncio.run(main())
    assert [events[0]["status"] for events in results] == ["success"] * 5
    assert seen == [1, 0]  # one shared client while waiting, closed by the last trigger
