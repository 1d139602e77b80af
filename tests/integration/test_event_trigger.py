"""EmpiricalTestRunEndedTrigger over real HTTP to the emulator: runs started outside Airflow
(`Emulator.start_run`), ended on demand, reported once each, across restarts.

Most tests drive the watcher one poll at a time (`_Watch.poll`, what `run()` and the shared
stream's filter loop over), so that every assertion is about a known moment. The asset state
store Airflow 3.3 injects is stood in for by an object with the same two async methods, whose
values go through JSON like the database column; the real one is used by the deployment tier
(tests/e2e/test_event_driven.py). Runs on every Airflow version: the 3.3-only parts (the shared
stream manager) are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from airflow_provider_empirical import watching
from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.http.protocol import RetryPolicy
from airflow_provider_empirical.triggers import empirical as module
from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunEndedTrigger, _Watch
from tests.conftest import API_KEY, conn_json

NEVER = RunScript(queued_for=0.0, run_for=3600, outcome="never")  # ends when the test says so


class FakeAssetStore:
    """Airflow 3.3's asset state store accessor: async get/set of JSON values under a key."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    async def aset(self, key: str, value: Any) -> None:
        self.writes += 1
        self.data[key] = json.dumps(value)

    def mark(self) -> watching.Watermark:
        (value,) = self.data.values()
        return watching.Watermark.from_json(value)


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "COMMIT_DELAY", 0.01)
    monkeypatch.setattr(module, "WATCH_RETRY", RetryPolicy(attempts=3, base_delay=0.05))
    module._DETAILS.clear()


def watcher(store: Any = None, **kwargs: Any) -> EmpiricalTestRunEndedTrigger:
    trigger = EmpiricalTestRunEndedTrigger(**{"environment": "production", "poll_interval": 1, **kwargs})
    trigger.asset_state_store = store  # what the triggerer injects on Airflow 3.3
    return trigger


async def poll(watch: _Watch) -> list[dict[str, Any]]:
    return [event.payload async for event in watch.poll(None)]


def start(emulator: Emulator, environment: str = "production", **fields: Any) -> int:
    return int(emulator.start_run(environment, script=NEVER, **fields)["id"])


def list_calls(emulator: Emulator) -> list[Any]:
    return [r for r in emulator.requests if r.method == "GET" and r.path == "/api/test-runs"]


def run_calls(emulator: Emulator) -> list[Any]:
    return [r for r in emulator.requests if r.method == "GET" and r.path.startswith("/api/test-runs/")]


def scenario(coro: Callable[[], Any]) -> Any:
    return asyncio.run(coro())


@pytest.fixture
def said(caplog: pytest.LogCaptureFixture, capfd: Any) -> Callable[[], str]:
    """Everything the watcher logged (Airflow 3 routes trigger logs through structlog to stdout)."""
    caplog.set_level(logging.INFO)
    return lambda: caplog.text + "".join(capfd.readouterr())


# -- the class ---------------------------------------------------------------------------------------


def test_kwargs_are_plain_json_and_rebuild_the_trigger() -> None:
    trigger = EmpiricalTestRunEndedTrigger(
        environment="production", branch="main", result="failed", poll_interval=30
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_empirical.triggers.empirical.EmpiricalTestRunEndedTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs == {
        "environment": "production",
        "branch": "main",
        "result": "failed",
        "empirical_conn_id": "empirical_default",
        "poll_interval": 30.0,
        "fetch_test_names": True,
    }
    assert EmpiricalTestRunEndedTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"result": "green"}, "result"),
        ({"poll_interval": 0.2}, "poll_interval"),
        ({"environment": ""}, "environment"),
        ({"empirical_conn_id": ""}, "empirical_conn_id"),
        ({"fetch_test_names": "yes"}, "fetch_test_names"),
    ],
)
def test_bad_parameters_fail_at_construction_naming_the_parameter(kwargs: dict[str, Any], field: str) -> None:
    """Construction is both when the DAG is parsed and when the triggerer rebuilds the trigger;
    the error is a TypeError too, which the triggerer reports as "Trigger failed to inflate"."""
    with pytest.raises(ValueError, match=f"`{field}`") as caught:
        EmpiricalTestRunEndedTrigger(**kwargs)
    assert isinstance(caught.value, TypeError)


def test_is_an_event_trigger_an_asset_watcher_accepts() -> None:
    try:
        from airflow.sdk import Asset, AssetWatcher
        from airflow.triggers.base import BaseEventTrigger
    except ImportError:
        pytest.skip("Airflow < 3.0 has no AssetWatcher (event-driven scheduling)")
    trigger = EmpiricalTestRunEndedTrigger(environment="production")
    assert isinstance(trigger, BaseEventTrigger)
    asset = Asset("empirical://demo/production/runs", watchers=[AssetWatcher(name="ended", trigger=trigger)])
    assert asset.watchers[0].trigger is trigger


def test_the_watermark_key_names_what_is_watched_not_how_often() -> None:
    a = EmpiricalTestRunEndedTrigger(environment="production", poll_interval=60)
    b = EmpiricalTestRunEndedTrigger(environment="production", poll_interval=10, result="failed")
    c = EmpiricalTestRunEndedTrigger(environment="staging")
    assert a.state_key == b.state_key == "empirical_watermark:empirical_default:production:*"
    assert c.state_key != a.state_key
    assert len(EmpiricalTestRunEndedTrigger(branch="b" * 200).state_key) <= 200


# -- reporting -------------------------------------------------------------------------------------


def test_reports_each_matching_run_once_and_nothing_that_ended_before(empirical_conn: Emulator) -> None:
    emulator = empirical_conn
    ended_before = start(emulator)
    emulator.finish_run(ended_before, "passed")
    running_before = start(emulator)
    store = FakeAssetStore()

    async def main() -> None:
        watch = _Watch(watcher(store))
        assert await poll(watch) == []  # baseline
        assert store.mark().open == (running_before,)
        new = start(emulator)
        other_env = start(emulator, "staging")
        assert await poll(watch) == []
        for run_id in (running_before, new, other_env):
            emulator.finish_run(run_id, "passed")
        events = await poll(watch)
        assert [e["id"] for e in events] == [running_before, new]
        assert all(e["state"] == "ended" and e["outcome"] == "success" for e in events)
        assert await poll(watch) == []  # nothing twice
        await watch.close()

    scenario(main)
    calls = list_calls(emulator)
    assert len(calls) == 4 and all(c.query.get("page") == "1" for c in calls)  # one page per poll
    assert calls[0].query.get("per_page") == str(watching.PER_PAGE)
    assert run_calls(emulator) == []  # passed runs need no second read


def test_a_failed_run_is_reported_with_its_failed_tests_named_and_linked(empirical_conn: Emulator) -> None:
    emulator = empirical_conn

    async def main() -> dict[str, Any]:
        watch = _Watch(watcher(FakeAssetStore()))
        await poll(watch)
        run_id = start(emulator, build={"commit": "c0ffee", "url": "https://ci/build/9", "branch": "main"})
        emulator.finish_run(run_id, "failed")
        (event,) = await poll(watch)
        await watch.close()
        return event

    event = scenario(main)
    assert event["outcome"] == "failed" and event["failed_count"] == 3
    assert event["commit"] == "c0ffee" and event["build_url"] == "https://ci/build/9"
    assert event["url"] == f"{emulator.url}/demo/test-runs/{event['id']}"
    assert len(event["failed_tests"]) == 3
    for test in event["failed_tests"]:
        assert test["name"] and test["url"] == f"{event['url']}?test_id={test['pw_test_id']}"
    assert event["snoozed_tests"] == [] and event["redelivered"] is False
    assert len(run_calls(emulator)) == 1  # one more read, for the names


def test_without_test_names_no_second_read(empirical_conn: Emulator) -> None:
    emulator = empirical_conn

    async def main() -> dict[str, Any]:
        watch = _Watch(watcher(FakeAssetStore(), fetch_test_names=False))
        await poll(watch)
        emulator.finish_run(start(emulator), "failed")
        (event,) = await poll(watch)
        await watch.close()
        return event

    event = scenario(main)
    assert event["failed_count"] == 3 and event["failed_tests"] is None
    assert run_calls(emulator) == []


def test_result_filter_is_the_operators_verdict_snoozed_failures_pass(empirical_conn: Emulator) -> None:
    emulator = empirical_conn

    async def main() -> tuple[list[int], list[int]]:
        failed_watch = _Watch(watcher(FakeAssetStore(), result="failed"))
        passed_watch = _Watch(watcher(FakeAssetStore(), result="passed"))
        await poll(failed_watch), await poll(passed_watch)
        script = RunScript(
            queued_for=0, run_for=0.05, outcome="failed", failed_tests=["known flake"], snoozed_tests=True
        )
        snoozed = int(emulator.start_run("production", script=script)["id"])
        failing = start(emulator)
        cancelled = start(emulator)
        passing = start(emulator)
        emulator.finish_run(failing, "failed")
        emulator.finish_run(cancelled, "cancelled")
        emulator.finish_run(passing, "passed")
        await asyncio.sleep(0.2)  # the scripted run ends
        failed = [e["id"] for e in await poll(failed_watch)]
        passed = [e["id"] for e in await poll(passed_watch)]
        await failed_watch.close(), await passed_watch.close()
        assert failed == [failing, cancelled] and passed == [snoozed, passing]
        return failed, passed

    scenario(main)


# -- restarts ----------------------------------------------------------------------------------------


def test_with_the_asset_state_store_a_restart_loses_and_repeats_nothing(empirical_conn: Emulator) -> None:
    """Airflow 3.3: the watermark survives the triggerer; runs that end while it is down are
    reported by the next instance, once; runs already reported are not reported again."""
    emulator = empirical_conn
    store = FakeAssetStore()

    async def main() -> None:
        first = _Watch(watcher(store))
        await poll(first)
        a, b, c = start(emulator), start(emulator), start(emulator)
        await poll(first)
        emulator.finish_run(a, "passed")
        assert [e["id"] for e in await poll(first)] == [a]
        await first.close()  # the triggerer stops
        emulator.finish_run(b, "failed")  # ends while nobody watches
        d = start(emulator)
        emulator.finish_run(d, "passed")  # starts and ends while nobody watches
        second = _Watch(watcher(store))  # rebuilt from its kwargs elsewhere
        assert [e["id"] for e in await poll(second)] == [b, d]
        emulator.finish_run(c, "passed")
        assert [e["id"] for e in await poll(second)] == [c]
        assert await poll(second) == []
        await second.close()

    scenario(main)


def test_without_the_asset_state_store_a_restart_loses_what_ended_meanwhile(
    empirical_conn: Emulator, said: Callable[[], str]
) -> None:
    """Airflow 3.0-3.2 (docs/event-driven.md): the watermark lives in memory, so a restarted
    watcher starts afresh. Runs that ended while it was down are lost; runs still running are
    reported once when they end; nothing is reported twice."""
    emulator = empirical_conn

    async def main() -> None:
        first = _Watch(watcher(None))
        await poll(first)
        a, b, c = start(emulator), start(emulator), start(emulator)
        await poll(first)
        emulator.finish_run(a, "passed")
        assert [e["id"] for e in await poll(first)] == [a]
        await first.close()
        emulator.finish_run(b, "passed")  # ends while down: lost
        second = _Watch(watcher(None))
        assert await poll(second) == []  # a fresh baseline
        emulator.finish_run(c, "passed")
        assert [e["id"] for e in await poll(second)] == [c]  # was still running: reported
        assert await poll(second) == []
        await second.close()

    scenario(main)
    text = said()
    assert "remembers what it reported in memory only" in text


def test_a_watcher_that_dies_while_handing_events_over_reports_them_again_flagged(
    empirical_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after yielding, before recording them as delivered: Airflow may or may not have
    stored the events, so the next instance reports them again with redelivered=True (none lost)."""
    emulator = empirical_conn
    store = FakeAssetStore()
    monkeypatch.setattr(module, "COMMIT_DELAY", 30.0)

    async def main() -> None:
        first = _Watch(watcher(store))
        await poll(first)
        a = start(emulator)
        emulator.finish_run(a, "passed")
        events = first.poll(None)
        assert (await events.__anext__()).payload["id"] == a
        consumer = asyncio.ensure_future(events.__anext__())  # now in the commit delay
        await asyncio.sleep(0.05)
        consumer.cancel()  # the triggerer dies
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert store.mark().pending == (a,)
        monkeypatch.setattr(module, "COMMIT_DELAY", 0.01)
        second = _Watch(watcher(store))
        (again,) = await poll(second)
        assert again["id"] == a and again["redelivered"] is True
        assert store.mark().pending == ()
        assert await poll(second) == []
        await first.close(), await second.close()

    scenario(main)


def test_an_instance_replaced_by_another_stands_down(
    empirical_conn: Emulator, said: Callable[[], str]
) -> None:
    """A triggerer that stalled past the health threshold and resumes runs the watcher beside the
    instance that adopted it: the older one reports nothing more."""
    emulator = empirical_conn
    store = FakeAssetStore()

    async def main() -> None:
        old = _Watch(watcher(store))
        await poll(old)
        new = _Watch(watcher(store))
        await poll(new)  # takes over the watermark
        emulator.finish_run(start(emulator), "passed")
        assert await poll(old) == []
        assert old.stood_down
        assert len(await poll(new)) == 1
        await old.close(), await new.close()

    scenario(main)
    text = said()
    assert "stands down" in text


# -- errors ------------------------------------------------------------------------------------------


def test_a_transient_error_is_a_warning_and_the_pace_stays(
    empirical_conn: Emulator, said: Callable[[], str]
) -> None:
    emulator = empirical_conn

    async def main() -> None:
        watch = _Watch(watcher(FakeAssetStore()))
        await poll(watch)
        emulator.add_fault("GET", "/api/test-runs", times=-1, status=503)
        for _ in range(3):
            assert await poll(watch) == []
            assert watch.delay() == 1.0 and not watch.slow  # the next poll comes at the usual pace
        await watch.close()

    scenario(main)
    text = said()
    assert text.count("next poll in") >= 3 and "cannot poll" not in text  # one warning a poll


def test_after_transient_errors_the_run_is_still_reported(empirical_conn: Emulator) -> None:
    emulator = empirical_conn

    async def main() -> None:
        watch = _Watch(watcher(FakeAssetStore()))
        await poll(watch)
        run_id = start(emulator)
        emulator.finish_run(run_id, "failed")
        emulator.add_fault("GET", "/api/test-runs*", times=4, status=503)
        assert await poll(watch) == []  # the three tries of this poll fail
        (event,) = await poll(watch)
        assert event["id"] == run_id and event["failed_tests"]
        await watch.close()

    scenario(main)


def test_a_bad_key_is_logged_loudly_and_retried_slowly(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, said: Callable[[], str]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator, password="wrong-key-123456"))

    async def main() -> None:
        watch = _Watch(watcher(FakeAssetStore(), poll_interval=60))
        assert await poll(watch) == []
        assert watch.delay() == module.SLOW_RETRY
        monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator))
        fixed = _Watch(watcher(FakeAssetStore(), poll_interval=60))
        assert await poll(fixed) == [] and fixed.delay() == 60
        await watch.close(), await fixed.close()

    scenario(main)
    text = said()
    assert "cannot poll" in text and "401" in text
    assert API_KEY not in text and "wrong-key-123456" not in text


def test_a_contract_mismatch_is_logged_as_one_and_retried_slowly(
    empirical_conn: Emulator, said: Callable[[], str]
) -> None:
    emulator = empirical_conn
    emulator.add_fault("GET", "/api/test-runs", times=-1, status=200, body={"data": {"runs": []}})

    async def main() -> None:
        watch = _Watch(watcher(FakeAssetStore()))
        assert await poll(watch) == []
        assert watch.delay() == module.SLOW_RETRY
        await watch.close()

    scenario(main)
    text = said()
    assert "contract mismatch" in text and "probe" in text


def test_a_missing_connection_is_logged_and_retried_slowly(
    emulator: Emulator, said: Callable[[], str]
) -> None:
    async def main() -> None:
        watch = _Watch(watcher(FakeAssetStore(), empirical_conn_id="no_such_connection"))
        assert await poll(watch) == []
        assert watch.slow
        await watch.close()

    scenario(main)
    text = said()
    assert "no_such_connection" in text


def test_run_loop_polls_at_its_interval_and_keeps_going(empirical_conn: Emulator) -> None:
    """The public face: `run()` is an endless async generator; it yields events as runs end."""
    emulator = empirical_conn

    async def main() -> list[dict[str, Any]]:
        trigger = watcher(FakeAssetStore())
        events: list[dict[str, Any]] = []

        async def consume(stream: AsyncIterator[Any]) -> None:
            async for event in stream:
                events.append(event.payload)

        task = asyncio.ensure_future(consume(trigger.run()))
        await asyncio.sleep(0.5)
        a, b = start(emulator), start(emulator)
        await asyncio.sleep(1.2)
        emulator.finish_run(a, "passed")
        await asyncio.sleep(1.5)
        emulator.finish_run(b, "error")
        await asyncio.sleep(1.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return events

    events = scenario(main)
    assert [(e["id"], e["state"]) for e in events] == [(events[0]["id"], "ended"), (events[1]["id"], "error")]
    assert len(list_calls(emulator)) <= 6  # one per second


# -- Airflow 3.3: one poll shared by the watchers of a connection -----------------------------------


def _shared_stream_manager() -> Any:
    try:
        from airflow.triggers.shared_stream import SharedStreamManager
    except ImportError:
        pytest.skip("Airflow < 3.3 has no shared streams: each watcher polls on its own")
    return SharedStreamManager()


def test_watchers_of_one_connection_share_one_poll(empirical_conn: Emulator) -> None:
    emulator = empirical_conn
    manager = _shared_stream_manager()
    production, staging_failed = (
        watcher(FakeAssetStore()),
        watcher(FakeAssetStore(), environment="staging", result="failed"),
    )
    assert production.shared_stream_key() == staging_failed.shared_stream_key()

    async def main() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {"production": [], "staging": []}

        async def subscriber(trigger_id: int, trigger: EmpiricalTestRunEndedTrigger, name: str) -> None:
            stream = manager.subscribe(
                trigger_id=trigger_id, trigger=trigger, key=trigger.shared_stream_key()
            )
            async for event in trigger.filter_shared_stream(stream):
                found[name].append(event.payload["id"])

        tasks = [
            asyncio.ensure_future(subscriber(1, production, "production")),
            asyncio.ensure_future(subscriber(2, staging_failed, "staging")),
        ]
        await asyncio.sleep(0.5)  # both have their baseline
        p, s1, s2 = start(emulator), start(emulator, "staging"), start(emulator, "staging")
        emulator.finish_run(p, "passed")
        emulator.finish_run(s1, "passed")
        emulator.finish_run(s2, "failed")
        await asyncio.sleep(2.6)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for trigger_id, trigger in ((1, production), (2, staging_failed)):
            await manager.unsubscribe(trigger_id, trigger.shared_stream_key())
        assert found == {"production": [p], "staging": [s2]}
        return found

    scenario(main)
    polls = list_calls(emulator)
    assert 2 <= len(polls) <= 5  # ~3 s at one poll a second, for both watchers together
    assert len(run_calls(emulator)) == 1  # the failed staging run's names, read once
