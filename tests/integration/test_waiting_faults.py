"""Faults while waiting, for the two sync faces (hook poll, sensor poke); the trigger has its own.

Transient faults never fail the wait and the outcome stays right; permanent faults end it
fast with a message that says what to fix.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.errors import EmpiricalTestRunFailed
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.http.protocol import RetryPolicy
from airflow_provider_empirical.outcome import wait_for_test_run
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
from tests.conftest import conn_json

FAST = RetryPolicy(attempts=4, base_delay=0.1, max_delay=0.5)


def start(emulator: Emulator, **script: Any) -> int:
    emulator.queue_runs(RunScript(**{"queued_for": 0.1, "run_for": 1.0, **script}))
    return EmpiricalHook().trigger_test_run("production")["id"]


def wait(run_id: int, timeout: float = 30, **hook_kwargs: Any) -> dict[str, Any]:
    hook = EmpiricalHook(retry=FAST, **hook_kwargs)
    return dict(
        wait_for_test_run(
            hook, run_id, url=None, poll_interval=0.2, end_time=time.time() + timeout, log=logging.getLogger()
        )
    )


TRANSIENT = {
    "5xx burst": [{"status": 500, "times": 3}, {"status": 502, "times": 3}, {"status": 503, "times": 3}],
    "429 Retry-After": [{"status": 429, "headers": {"Retry-After": "1"}, "times": 2}],
    # two in a row are a blip; a third would be a contract mismatch (test_contract.py)
    "malformed JSON": [{"malformed": True, "status": None, "times": 2}],
    "slow beyond request timeout": [{"delay": 1.5, "status": None, "times": 2}],
    "dropped connections": [{"drop": True, "times": 3}],
}


@pytest.mark.parametrize("faults", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_hook_wait_survives_transient_faults(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, faults: list[dict]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator, extra={"timeout": 1}))
    run_id = start(emulator, outcome="failed")
    for fault in faults:
        emulator.add_fault(method="GET", path="/api/test-runs/*", **fault)
    event = wait(run_id)
    assert event["status"] == "failed" and event["test_run"]["failed_count"] == 3


def test_hook_wait_survives_the_server_going_down_for_10_seconds(empirical_conn: Emulator) -> None:
    run_id = start(empirical_conn, run_for=2.0)
    empirical_conn.down_for(10.0)
    started = time.monotonic()
    assert wait(run_id)["status"] == "success"
    assert time.monotonic() - started >= 10


@pytest.mark.parametrize(
    ("status", "words"),
    [(401, "check the API key"), (403, "cannot access this project"), (404, "check the test run id")],
)
def test_hook_wait_ends_fast_on_permanent_faults(empirical_conn: Emulator, status: int, words: str) -> None:
    run_id = start(empirical_conn, run_for=30)
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=status)
    started = time.monotonic()
    event = wait(run_id)
    assert event["status"] == "error" and words in event["message"]
    assert time.monotonic() - started < 2
    assert empirical_conn.count("GET") == 1


def _sensor(run_id: Any) -> EmpiricalTestRunSensor:
    return EmpiricalTestRunSensor(task_id="wait", test_run_id=run_id, poke_interval=0.1)


def test_sensor_poke_keeps_waiting_through_transient_faults(empirical_conn: Emulator) -> None:
    run_id = start(empirical_conn, run_for=0.3)
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=503)
    sensor = _sensor(str(run_id))
    sensor.hook.retry = FAST
    assert sensor.poke({}) is False
    assert empirical_conn.count("GET") == FAST.attempts


def test_sensor_poke_states(empirical_conn: Emulator) -> None:
    run_id = start(empirical_conn, run_for=0.4)
    sensor = _sensor(f"{run_id}")
    assert sensor.poke({}) is False  # queued / started
    time.sleep(0.7)
    result = sensor.poke({})
    assert result and result.xcom_value["id"] == run_id and result.xcom_value["outcome"] == "success"


def test_sensor_cancelling_keeps_waiting(empirical_conn: Emulator) -> None:
    run_id = start(empirical_conn, outcome="cancelled", queued_for=0.0, run_for=0.0)
    assert _sensor(run_id).poke({}) is False  # "cancelling" for a moment
    time.sleep(0.6)
    with pytest.raises(Exception, match="was cancelled"):
        _sensor(run_id).poke({})


@pytest.mark.parametrize(("status", "hint"), [(401, "check the API key"), (404, "check the test run id")])
def test_sensor_poke_fails_fast_on_permanent_faults(empirical_conn: Emulator, status: int, hint: str) -> None:
    run_id = start(empirical_conn)
    empirical_conn.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=status)
    with pytest.raises(EmpiricalTestRunFailed, match=f"Stopped waiting .*HTTP {status}.*{hint}"):
        _sensor(run_id).poke({})
    assert empirical_conn.count("GET") == 1
