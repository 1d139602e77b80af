"""The trigger's kill hook as Airflow 3.3.2's triggerer really calls it, against the emulator over HTTP.

Airflow's own code runs the trigger (`TriggerRunner.run_trigger`), cancels it
(`TriggerRunner.cancel_triggers`, with the "user action" message that makes it call `on_kill`)
and reaps it (`cleanup_finished_triggers`). `airflow_loop` replays the runner loop around them
as `TriggerRunner.arun` does: every ~1 s the supervisor's answer carries the whole cancel set
again (`triggerer_job_runner.py`: `to_cancel=self.cancelling_triggers`) until the runner reports
the trigger finished, so the runner cancels the same task again while `on_kill` still runs.
Only the supervisor is stood in for: `FakeSupervisor` answers `GetTaskStates` as the real one
does from the metadata database (docs/airflow-bug-on-kill.md has the source lines).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.triggers import kill
from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

runner_module = pytest.importorskip("airflow.jobs.triggerer_job_runner")
if not hasattr(runner_module, "_USER_ACTION_CANCEL_MSG"):  # the kill hook is new in Airflow 3.3
    pytest.skip("this Airflow has no trigger kill hook (3.3+)", allow_module_level=True)

TI = SimpleNamespace(
    id="0197a1b2-0000-7000-8000-000000000001",
    dag_id="nightly",
    task_id="wait_for_tests",
    run_id="manual__2026-11-30",
    map_index=-1,
    try_number=1,
    context_carrier=None,
)
WHERE = "Airflow task nightly.wait_for_tests (DAG run manual__2026-11-30)"


class FakeSupervisor:
    """The triggerer supervisor's side of `GetTaskStates`: the task instance's state, by run and task."""

    def __init__(
        self,
        state: str | None,
        *,
        fail: BaseException | None = None,
        delay: float = 0.0,
        key: str = TI.task_id,
    ) -> None:
        self.state, self.fail, self.delay, self.key = state, fail, delay, key
        self.asked: list[Any] = []

    async def asend(self, msg: Any) -> Any:
        if type(msg).__name__ != "GetTaskStates":  # e.g. MaskSecret, from the hook's connection lookup
            return None
        self.asked.append(msg)
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(task_states={TI.run_id: {self.key: self.state}})


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.sdk.execution_time import task_runner

    def install(state: str | None, **kwargs: Any) -> FakeSupervisor:
        fake = FakeSupervisor(state, **kwargs)
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", fake, raising=False)
        return fake

    return install


async def airflow_loop(trigger: Any, *, kill_after: float = 0.3, ti: Any = TI) -> dict[str, float]:
    """Run `trigger` in Airflow's TriggerRunner, kill it as a user's action does, and loop as
    `TriggerRunner.arun` does until the trigger is reaped; then let background work finish."""
    runner = runner_module.TriggerRunner()
    trigger.trigger_id = 1
    trigger.task_instance = ti
    task = asyncio.create_task(runner.run_trigger(1, trigger), name="t")
    runner.triggers[1] = {"task": task, "is_watcher": False, "name": "t", "events": 0}
    ended: list[float] = []
    task.add_done_callback(lambda _: ended.append(time.monotonic()))
    await asyncio.sleep(kill_after)
    killed = time.monotonic()
    cancelling = {1}  # the supervisor's cancelling_triggers: re-sent until reported finished
    loops = 0
    while cancelling:
        cancelling -= set(await runner.cleanup_finished_triggers())
        runner.to_cancel.extend(cancelling)  # sync_state_to_supervisor: resp.to_cancel
        await runner.cancel_triggers()
        loops += 1
        if cancelling:
            await asyncio.sleep(1.0)  # arun: `with anyio.move_on_after(1): await stop_event.wait()`
        if loops > 60:
            raise AssertionError("the trigger was never reaped")
    reaped = ended[0] - killed  # when Airflow's task for the trigger (run, then on_kill) ended
    pending = list(kill._BACKGROUND)
    if pending:
        await asyncio.wait(pending, timeout=60)
    return {"reaped": reaped, "done": time.monotonic() - killed}


def start_run(emulator: Emulator) -> int:
    emulator.queue_runs(RunScript(queued_for=0.1, run_for=120))
    return int(EmpiricalHook().trigger_test_run("production")["id"])


def cancels(emulator: Emulator, run_id: int) -> list[Any]:
    return [
        r for r in emulator.requests if r.method == "POST" and r.path == f"/api/test-runs/{run_id}/cancel"
    ]


def trigger_for(run_id: int, **kwargs: Any) -> EmpiricalTestRunTrigger:
    kwargs = {
        "cancel_on_kill": True,
        "cancel_reason": "Airflow task nightly.wait_for_tests (DAG run manual__2026-11-30) was killed",
        **kwargs,
    }
    trigger = EmpiricalTestRunTrigger(
        test_run_id=run_id, end_time=time.time() + 300, poll_interval=30, **kwargs
    )
    return EmpiricalTestRunTrigger(**trigger.serialize()[1])  # what the triggerer really runs


# -- Airflow's side, on its own: what a kill hook really gets --


class SlowKillTrigger(runner_module.BaseTrigger):  # type: ignore[misc,name-defined]
    """A minimal trigger whose kill hook needs 3 s (one Retry-After: 3), as a reproduction."""

    entered: float | None = None
    finished: bool = False
    cancelled_after: float | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{__name__}.SlowKillTrigger", {})

    async def run(self) -> Any:
        await asyncio.sleep(3600)
        yield  # pragma: no cover

    async def on_kill(self) -> None:
        type(self).entered = time.monotonic()
        try:
            await asyncio.sleep(3)
        except asyncio.CancelledError:
            type(self).cancelled_after = time.monotonic() - type(self).entered
            raise
        type(self).finished = True


def test_airflow_3_3_2_cancels_a_kill_hook_again_about_a_second_later(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The upstream bug (docs/airflow-bug-on-kill.md): not `[triggerer] on_kill_timeout` (30 s), ~1 s,
    and the second cancel is swallowed by `run_trigger` without the 'on_kill() timed out' warning."""
    asyncio.run(airflow_loop(SlowKillTrigger()))
    assert SlowKillTrigger.entered is not None, "Airflow did not call on_kill for a user action"
    assert SlowKillTrigger.finished is False
    assert SlowKillTrigger.cancelled_after is not None and SlowKillTrigger.cancelled_after <= 1.5
    assert "timed out" not in capsys.readouterr().out


# -- our kill hook --


def test_a_user_kill_cancels_once_even_when_cancel_first_answers_503_retry_after(
    empirical_conn: Emulator, supervisor: Any
) -> None:
    """Issue 21.3: the retry sleep used to be cancelled by Airflow's second cancel, silently."""
    run_id = start_run(empirical_conn)
    asked = supervisor("failed")
    path = f"/api/test-runs/{run_id}/cancel"
    empirical_conn.add_fault(method="POST", path=path, status=503, headers={"Retry-After": "3"}, times=1)
    timing = asyncio.run(airflow_loop(trigger_for(run_id)))
    sent = cancels(empirical_conn, run_id)
    assert len(sent) == 2, [(r.path, r.time) for r in sent]  # the 503, then the one that worked
    assert sent[1].time - sent[0].time >= 2.9  # Retry-After honoured: it fitted the budget
    assert timing["reaped"] < 3  # Airflow reaped the trigger before the cancel went out...
    (run,) = [r for r in empirical_conn.runs if r["id"] == run_id]
    assert run["state"] in ("cancelling", "cancelled")  # ...and the cancel went out all the same
    assert run["cancel_reason"] == f"{WHERE} was marked failed by a user"
    # asked once when the trigger started (warming the supervisor up), once by the kill hook
    assert [m.task_ids for m in asked.asked] == [["wait_for_tests"], ["wait_for_tests"]]


def test_the_supervisor_is_asked_once_per_triggerer_before_any_kill(
    empirical_conn: Emulator, supervisor: Any
) -> None:
    """Its first answer can take over 20 s on a loaded machine (it builds a client then): asked at
    the first trigger's start, a later kill hook gets its answer in time (the distributed tier)."""
    run_id = start_run(empirical_conn)
    asked = supervisor("deferred", delay=0.2)

    async def two_triggers_then_none_killed() -> None:
        first, second = trigger_for(run_id), trigger_for(run_id)
        for trigger in (first, second):
            trigger.task_instance = TI
        tasks = [asyncio.create_task(_first_event(trigger)) for trigger in (first, second)]
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(two_triggers_then_none_killed())
    assert len(asked.asked) == 1 and cancels(empirical_conn, run_id) == []


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    return None


def test_a_moved_trigger_cancels_nothing(
    empirical_conn: Emulator, supervisor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21.2: a stalled triggerer resuming calls the kill hook of the triggers that moved away."""
    run_id = start_run(empirical_conn)
    supervisor("deferred")
    asyncio.run(airflow_loop(trigger_for(run_id)))
    assert cancels(empirical_conn, run_id) == []
    (run,) = [r for r in empirical_conn.runs if r["id"] == run_id]
    assert run["state"] in ("queued", "started")
    assert "is still deferred: its trigger was moved to another triggerer" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("success", f"{WHERE} was marked success by a user"),
        (None, f"{WHERE} was cleared by a user"),
        ("restarting", f"{WHERE} was cleared by a user"),
    ],
)
def test_other_user_actions_cancel_with_a_reason_that_says_what_happened(
    empirical_conn: Emulator, supervisor: Any, state: str | None, reason: str
) -> None:
    run_id = start_run(empirical_conn)
    supervisor(state)
    asyncio.run(airflow_loop(trigger_for(run_id)))
    assert [r.json for r in cancels(empirical_conn, run_id)] == [{"reason": reason}]


@pytest.mark.parametrize("state", ["running", "queued", "scheduled"])
def test_a_task_that_already_resumed_is_left_alone(
    empirical_conn: Emulator, supervisor: Any, state: str
) -> None:
    run_id = start_run(empirical_conn)
    supervisor(state)
    asyncio.run(airflow_loop(trigger_for(run_id)))
    assert cancels(empirical_conn, run_id) == []


def test_when_the_state_cannot_be_read_the_run_is_left_going_and_the_log_says_so(
    empirical_conn: Emulator, supervisor: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = start_run(empirical_conn)
    supervisor("failed", fail=ConnectionResetError("supervisor closed"))
    asyncio.run(airflow_loop(trigger_for(run_id, test_run_url=f"{empirical_conn.url}/test-runs/{run_id}")))
    assert cancels(empirical_conn, run_id) == []
    out = capsys.readouterr().out
    assert "the task's state could not be read (ConnectionResetError: supervisor closed)" in out
    assert "cancel the run by hand" in out


def test_a_slow_state_answer_is_bounded(
    empirical_conn: Emulator, supervisor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The question may take the budget less CANCEL_RESERVE, then the run is left going (unknown)."""
    monkeypatch.setattr(kill, "budget_seconds", lambda: kill.CANCEL_RESERVE + 2)
    run_id = start_run(empirical_conn)
    supervisor("failed", delay=30)
    timing = asyncio.run(airflow_loop(trigger_for(run_id)))
    assert 1.5 <= timing["done"] < 4
    assert cancels(empirical_conn, run_id) == []


def test_a_retry_after_longer_than_the_budget_is_cut_to_leave_a_last_attempt(
    empirical_conn: Emulator, supervisor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kill, "budget_seconds", lambda: 6.0)
    run_id = start_run(empirical_conn)
    supervisor("failed")
    path = f"/api/test-runs/{run_id}/cancel"
    empirical_conn.add_fault(method="POST", path=path, status=503, headers={"Retry-After": "120"}, times=1)
    timing = asyncio.run(airflow_loop(trigger_for(run_id)))
    sent = cancels(empirical_conn, run_id)
    assert len(sent) == 2
    assert 3.0 <= sent[1].time - sent[0].time <= 4.5  # 6 s budget - LAST_ATTEMPT (2 s), not 120 s
    assert timing["done"] < 8
    (run,) = [r for r in empirical_conn.runs if r["id"] == run_id]
    assert run["state"] in ("cancelling", "cancelled")


def test_a_cancel_that_keeps_failing_gives_up_at_the_deadline_and_says_so(
    empirical_conn: Emulator,
    supervisor: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(kill, "budget_seconds", lambda: 5.0)
    run_id = start_run(empirical_conn)
    supervisor("failed")
    path = f"/api/test-runs/{run_id}/cancel"
    empirical_conn.add_fault(method="POST", path=path, status=503, headers={"Retry-After": "1"}, times=-1)
    timing = asyncio.run(airflow_loop(trigger_for(run_id)))
    assert 2 <= len(cancels(empirical_conn, run_id)) <= 5
    assert timing["done"] < 7
    assert f"Empirical test run {run_id} was NOT cancelled" in capsys.readouterr().out


def test_without_cancel_on_kill_nothing_is_asked_or_sent(empirical_conn: Emulator, supervisor: Any) -> None:
    run_id = start_run(empirical_conn)
    asked = supervisor("failed")
    asyncio.run(airflow_loop(trigger_for(run_id, cancel_on_kill=False)))
    assert cancels(empirical_conn, run_id) == [] and asked.asked == []


def test_a_mapped_task_is_asked_by_its_map_index(empirical_conn: Emulator, supervisor: Any) -> None:
    run_id = start_run(empirical_conn)
    asked = supervisor("failed", key=f"{TI.task_id}_3")  # how Airflow keys a mapped task's state
    mapped = SimpleNamespace(**{**vars(TI), "map_index": 3})
    asyncio.run(airflow_loop(trigger_for(run_id), ti=mapped))
    assert asked.asked[0].map_index == 3
    reason = "Airflow task nightly.wait_for_tests[3] (DAG run manual__2026-11-30) was marked failed by a user"
    assert [r.json for r in cancels(empirical_conn, run_id)] == [{"reason": reason}]
