"""Stopping and re-running runs (issue 12) and at most one run per task instance (issue 13):
the hook's cancel / re-run over real HTTP, the trigger's kill hook, and real DAG runs with retries.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.errors import (
    EmpiricalNotFoundError,
    EmpiricalTriggerUncertainError,
    EmpiricalValidationError,
)
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.http.protocol import RetryPolicy
from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger
from tests.airflow_helpers import task_states, xcoms
from tests.conftest import QUICK

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1)


def _posts(emulator: Emulator, suffix: str) -> list[Any]:
    return [r for r in emulator.requests if r.method == "POST" and r.path.endswith(suffix)]


# -- hook --


def test_cancel_answers_true_then_false_once_the_run_has_ended(empirical_conn: Emulator) -> None:
    empirical_conn.queue_runs(RunScript(run_for=60))
    hook = EmpiricalHook()
    run_id = hook.trigger_test_run("production")["id"]
    assert hook.cancel_test_run(run_id, reason="rolled back") is True
    assert hook.get_test_run(run_id)["state"] in ("cancelling", "cancelled")
    time.sleep(0.7)
    assert hook.get_test_run(run_id)["state"] == "cancelled"
    assert hook.cancel_test_run(run_id) is False  # 412: nothing to cancel, not an error
    (first, second) = _posts(empirical_conn, "/cancel")
    assert first.json == {"reason": "rolled back"} and second.json == {}
    assert empirical_conn.runs[0]["cancel_reason"] == "rolled back"


def test_cancel_is_retried_like_a_get_and_fails_clearly_on_404(empirical_conn: Emulator) -> None:
    empirical_conn.queue_runs(RunScript(run_for=60))
    hook = EmpiricalHook(retry=FAST)
    run_id = hook.trigger_test_run("production")["id"]
    empirical_conn.add_fault(
        method="POST", path="/api/test-runs/*/cancel", times=1, status=502, after_create=True
    )
    assert hook.cancel_test_run(run_id) is True
    assert len(_posts(empirical_conn, "/cancel")) == 2
    with pytest.raises(EmpiricalNotFoundError):
        hook.cancel_test_run(9999)
    with pytest.raises(EmpiricalValidationError, match="`reason`"):
        hook.cancel_test_run(run_id, reason="  ")


def test_async_cancel(empirical_conn: Emulator) -> None:
    empirical_conn.queue_runs(RunScript(run_for=60))
    run_id = EmpiricalHook().trigger_test_run("production")["id"]

    async def main() -> tuple[bool, bool]:
        hook = EmpiricalHook()
        try:
            first = await hook.acancel_test_run(run_id, reason="r")
            await asyncio.sleep(0.7)
            return first, await hook.acancel_test_run(run_id)
        finally:
            await hook.aclose()

    assert asyncio.run(main()) == (True, False)


def test_rerun_only_failed_returns_the_new_run(empirical_conn: Emulator) -> None:
    empirical_conn.queue_runs(RunScript(outcome="failed", queued_for=0, run_for=0.1), RunScript(**QUICK))
    hook = EmpiricalHook()
    source = hook.trigger_test_run("production")["id"]
    time.sleep(0.3)
    rerun = hook.rerun_test_run(source, only_failed=True, send_notifications=False)
    assert rerun["id"] != source and rerun["state"]
    (post,) = _posts(empirical_conn, "/re-run")
    assert post.json == {"only_failed": True, "send_notifications": False}
    assert empirical_conn.runs[-1]["rerun_source_id"] == source


def test_an_ambiguous_rerun_is_never_resent(empirical_conn: Emulator) -> None:
    empirical_conn.queue_runs(RunScript(outcome="failed", queued_for=0, run_for=0.1))
    hook = EmpiricalHook(retry=FAST)
    source = hook.trigger_test_run("production")["id"]
    time.sleep(0.3)
    empirical_conn.add_fault(
        method="POST", path="/api/test-runs/*/re-run", times=1, status=502, after_create=True
    )
    with pytest.raises(EmpiricalTriggerUncertainError, match="may have been created"):
        hook.rerun_test_run(source, only_failed=True)
    assert len(_posts(empirical_conn, "/re-run")) == 1 and len(empirical_conn.runs) == 2


# -- trigger kill hook (Airflow 3.3 calls it when a user marks the deferred task failed or clears it) --


@pytest.mark.parametrize("flag", [True, False])
def test_trigger_on_kill_cancels_only_when_asked(empirical_conn: Emulator, flag: bool) -> None:
    empirical_conn.queue_runs(RunScript(run_for=60))
    run_id = EmpiricalHook().trigger_test_run("production")["id"]
    trigger = EmpiricalTestRunTrigger(
        test_run_id=run_id,
        end_time=time.time() + 60,
        poll_interval=1,
        cancel_on_kill=flag,
        cancel_reason="dag.task killed",
    )
    rebuilt = EmpiricalTestRunTrigger(**trigger.serialize()[1])  # what the triggerer really runs

    async def main() -> None:
        run = asyncio.ensure_future(rebuilt.run().__anext__())
        await asyncio.sleep(0.2)
        run.cancel()  # as the triggerer does before calling on_kill
        with pytest.raises(asyncio.CancelledError):
            await run
        await rebuilt.on_kill()

    asyncio.run(main())
    cancels = _posts(empirical_conn, "/cancel")
    assert [c.json for c in cancels] == ([{"reason": "dag.task killed"}] if flag else [])


# -- DAG runs --


def _store_supported() -> bool:
    """Airflow 3.3+ gives tasks a durable task_state_store, kept across tries."""
    from airflow.providers.common.compat.sdk import ResumableJobMixin

    return not ResumableJobMixin.__module__.startswith("airflow.providers.common.compat")


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id", ["e2e_rerun_failed_sync", "e2e_rerun_failed_deferrable"])
def test_a_retry_after_failed_tests_reruns_only_those(run_dag: Any, emulator: Emulator, dag_id: str) -> None:
    emulator.queue_runs(RunScript(outcome="failed", **QUICK), RunScript(outcome="passed", **QUICK))
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)["run_tests"] == "success"
    puts, reruns = emulator.count("PUT"), _posts(emulator, "/re-run")
    if not _store_supported():  # documented: no durable state, so the retry starts a full run
        assert (puts, len(reruns)) == (2, 0)
        return
    assert (puts, len(reruns)) == (1, 1)
    source, rerun = emulator.runs
    assert reruns[0].path == f"/api/test-runs/{source['id']}/re-run" and reruns[0].json["only_failed"] is True
    summary = xcoms(dag_run, "run_tests")["return_value"]
    assert summary["id"] == rerun["id"] and summary["rerun_of"] == source["id"]
    assert summary["total_count"] == source["failed_count"]  # only the failed tests ran again


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id", ["e2e_cancel_on_timeout_sync", "e2e_cancel_on_timeout_deferrable"])
def test_cancel_on_timeout_sends_exactly_one_cancel(
    run_dag: Any, emulator: Emulator, dag_id: str, capfd: Any
) -> None:
    emulator.queue_runs(RunScript(outcome="never", queued_for=0.1, run_for=60))
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)["run_tests"] == "failed"
    (cancel,) = _posts(emulator, "/cancel")
    assert f"/{emulator.runs[0]['id']}/cancel" in cancel.path and "run_tests" in cancel.json["reason"]
    assert "was cancelled" in "".join(capfd.readouterr())


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id", ["e2e_retry_no_wait", "e2e_operator_durable", "e2e_retry_deferrable"])
def test_an_ambiguous_trigger_is_not_resent_by_airflows_retry(
    run_dag: Any, emulator: Emulator, dag_id: str
) -> None:
    """The PUT created a run but the answer was a 502: fail, without Airflow's retry (retries=1)."""
    emulator.add_fault(method="PUT", path="/api/test-runs", times=1, status=502, after_create=True)
    emulator.queue_runs(RunScript(**QUICK), RunScript(**QUICK))
    dag_run = run_dag(dag_id)
    assert str(dag_run.state) == "failed"
    assert emulator.count("PUT") == 1 and len(emulator.runs) == 1


@pytest.mark.e2e
def test_a_failing_tasks_console_names_the_failed_tests(run_dag: Any, emulator: Emulator, capfd: Any) -> None:
    names = ["login > rejects a wrong password", "cart > keeps items", "search > finds by sku"]
    emulator.queue_runs(RunScript(outcome="failed", tests=names, failed_tests=names[:2], **QUICK))
    dag_run = run_dag("e2e_operator_sync")
    assert task_states(dag_run)["run_tests"] == "failed"
    out = "".join(capfd.readouterr())
    assert all(f"FAILED {name}" in out for name in names[:2]) and f"FAILED {names[2]}" not in out


@pytest.mark.e2e
def test_cancel_operator_cancels_or_reports_the_run_had_ended(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(run_for=60))
    dag_run = run_dag("e2e_cancel_operator")
    assert task_states(dag_run) == {"trigger_tests": "success", "cancel_tests": "success"}
    (cancel,) = _posts(emulator, "/cancel")
    assert cancel.json["reason"] == f"rolled back {dag_run.run_id}"
    assert xcoms(dag_run, "cancel_tests")["return_value"] is True


# -- a worker that died between sending the trigger and recording the run (Airflow 3.3 durable state) --


class _Store:
    """The task_state_store's interface (get/set/delete); Airflow's own needs a running supervisor."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class _TI:
    dag_id, run_id, task_id, try_number = "d", "r", "t", 2

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_a_try_that_died_mid_trigger_is_not_followed_by_a_second_run(empirical_conn: Emulator) -> None:
    from airflow_provider_empirical.durable import TRIGGER_SENT_KEY
    from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator

    store = _Store()
    store.set(TRIGGER_SENT_KEY, 1)  # try 1 sent its PUT, then the worker died before recording the run
    op = EmpiricalTriggerTestRunOperator(task_id="t", environment="production")
    context: Any = {"ti": _TI(), "task_state_store": store, "run_id": "r"}
    with pytest.raises(EmpiricalTriggerUncertainError, match="ended before it could record"):
        op.execute(context)
    assert empirical_conn.count("PUT") == 0
    assert op.execute(context) == empirical_conn.runs[0]["id"]  # said once: a user's clear starts anew
    assert empirical_conn.count("PUT") == 1 and TRIGGER_SENT_KEY not in store.data


def test_a_definite_rejection_clears_the_marker_so_a_retry_may_try_again(empirical_conn: Emulator) -> None:
    from airflow_provider_empirical.durable import TRIGGER_SENT_KEY
    from airflow_provider_empirical.errors import EmpiricalAuthError
    from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator

    store = _Store()
    empirical_conn.add_fault(method="PUT", path="/api/test-runs", times=1, status=401)
    op = EmpiricalTriggerTestRunOperator(task_id="t", environment="production")
    with pytest.raises(EmpiricalAuthError):
        op.execute({"ti": _TI(), "task_state_store": store, "run_id": "r"})
    assert TRIGGER_SENT_KEY not in store.data


def test_a_killed_poking_sensor_cancels_only_when_told(empirical_conn: Emulator) -> None:
    from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

    empirical_conn.queue_runs(RunScript(run_for=60), RunScript(run_for=60))
    first = EmpiricalHook().trigger_test_run("production")["id"]
    second = EmpiricalHook().trigger_test_run("production")["id"]
    for run_id, flag in ((first, False), (second, True)):
        sensor = EmpiricalTestRunSensor(task_id="s", test_run_id=run_id, cancel_on_kill=flag)
        assert sensor.poke({}) is False
        sensor.on_kill()
    assert [r.path for r in _posts(empirical_conn, "/cancel")] == [f"/api/test-runs/{second}/cancel"]
