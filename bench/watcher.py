"""Figure 7: the event-driven watcher (EmpiricalTestRunEndedTrigger).

A. API calls per hour per watcher at a 60 s poll (target: at most 60, plus one per ended run
   whose failed tests are named). A faithful in-process harness, in a child process: the real
   trigger (`run()`, and on Airflow 3.3 Airflow's own `SharedStreamManager` for three watchers
   of one connection), the real hook and HTTP client, the emulator in its own process over
   loopback; only time is virtual (`asyncio.sleep` and the clock of the trigger module jump
   ahead instead of waiting, so an hour takes seconds) and the asset state store is an
   in-memory stand-in. One hour of a project's life: 40 runs in 3 environments, started and
   ended at scripted times, 8 of the 16 production runs with failed tests.
B. Lag from a run's end to the creation of the DAG run it schedules (target: at most poll + 5 s
   on a quiet machine). Real processes: Airflow 3.3's scheduler, dag-processor, triggerer and API
   server (tests/deployment_helpers.py) with example_dags/empirical_on_production_run.py, the
   emulator in its own process; runs started and ended on the emulator at random phases of the
   poll; the lag is the DAG run's `queued_at` minus the moment the run was ended.

    .venv/bin/python bench/watcher.py            # this figure alone (same as run_all.py --only 6)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

from common import (
    API_KEY,
    BENCH,
    ROOT,
    Figure,
    Row,
    child_env,
    fmt,
    make_home,
    median,
    run_child,
    write_result,
)

POLL = 60.0  # A: the default poll interval
HOUR = 3600.0
LAG_POLL = 20.0  # B: a shorter poll so that a few samples take minutes, not an hour
LAG_SAMPLES = 4
FIG = "7. Watcher"


def run() -> Figure:
    rows, notes = [], []
    calls = _api_calls()
    budget = 60 + calls["named_runs"]
    rows.append(
        Row(
            FIG,
            f"API calls per hour, one watcher, {POLL:g} s poll (virtual-time harness)",
            f"{calls['single_total']} ({calls['single_lists']} list + {calls['single_reads']} run reads)",
            "-",
            f"<= 60 + {calls['named_runs']} named runs = {budget}",
            calls["single_total"] <= budget and calls["single_events"] == calls["expected_events"],
        )
    )
    rows.append(
        Row(
            FIG,
            "events: runs that ended / reported once each (one watcher)",
            f"{calls['single_events']} / {calls['expected_events']}",
            "-",
            "all, once",
            calls["single_events"] == calls["expected_events"] and calls["single_duplicates"] == 0,
        )
    )
    if calls.get("shared_watchers"):
        per = calls["shared_total"] / calls["shared_watchers"]
        rows.append(
            Row(
                FIG,
                f"API calls per hour per watcher, {calls['shared_watchers']} watchers sharing a poll (3.3)",
                f"{per:.1f} ({calls['shared_lists']} list + {calls['shared_reads']} run reads, all together)",
                "-",
                f"<= {budget}",
                per <= budget and calls["shared_ok"],
            )
        )
    notes.append(
        "Figure 7A: virtual time, real HTTP to the emulator process; "
        f"harness wall time {calls['wall']:.1f} s for {calls['hours']:g} virtual hour(s)."
    )
    try:
        lag = _lag()
    except Exception as exc:  # keep part A's rows
        rows.append(
            Row(FIG, "lag, run end -> DAG run created (real Airflow)", "ERROR", str(exc)[:200], "-", False)
        )
        return Figure(rows, notes)
    rows.append(
        Row(
            FIG,
            f"lag, run end -> DAG run created, {LAG_POLL:g} s poll, max of {len(lag['lags'])} (real Airflow)",
            fmt(max(lag["lags"]), "s", 1),
            "-",
            f"<= {LAG_POLL + 5:g} s (poll + 5 s)",
            max(lag["lags"]) <= LAG_POLL + 5,
        )
    )
    rows.append(
        Row(
            FIG,
            "same: median lag",
            fmt(median(lag["lags"]), "s", 1),
            "-",
            f"~{LAG_POLL / 2 + 2:g} s expected",
            None,
        )
    )
    notes.append(
        "Figure 7B lags (s): "
        + ", ".join(f"{x:.1f}" for x in lag["lags"])
        + f"; Airflow up in {lag['startup']:.0f} s; the lag is poll phase + the triggerer's and "
        "scheduler's loops (about 1 s each)."
    )
    return Figure(rows, notes)


# -- A: API calls, in a child process with virtual time ----------------------------------------------


def _api_calls() -> dict[str, Any]:
    from servers import Server

    home = make_home("watcher-calls")
    with open(home / "server.log", "w") as log, Server("empirical", child_env(home), log) as server:
        conn = {
            "conn_type": "empirical",
            "host": server.url,
            "password": API_KEY,
            "extra": {"dashboard_url": server.url},
        }
        env = child_env(home, AIRFLOW_CONN_EMPIRICAL_DEFAULT=json.dumps(conn), PYTHONPATH=f"{BENCH}:{ROOT}")
        return run_child(
            [str(BENCH / "watcher.py"), "child-calls", "--emulator", server.url], env, 600, home / "calls.log"
        )


class VirtualTime:
    """The trigger module's `time` and `asyncio.sleep`: sleeping jumps the clock ahead (and runs the
    scenario's actions that fall due) instead of waiting. Virtual time only runs ahead of real time."""

    def __init__(self, actions: list[tuple[float, Any]]) -> None:
        self.offset = 0.0
        self.over = False  # a poller tried to sleep past the hour
        self.start = time.time()
        self.actions = sorted(actions, key=lambda item: item[0])

    def now(self) -> float:
        return time.time() + self.offset - self.start

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, delay: float) -> None:
        if self.now() + delay >= HOUR:  # the hour is over: no more polls, wait to be cancelled
            self.over = True
            await asyncio.Event().wait()
        if delay > 0:
            self.offset += delay
            while self.actions and self.actions[0][0] <= self.now():
                self.actions.pop(0)[1]()
        await asyncio.sleep(0)


def _scenario(emulator: Any) -> tuple[list[tuple[float, Any]], set[int], int]:
    """One hour: runs start and end at fixed virtual times. Returns the actions, a set the ids of
    the production runs that end get added to, and how many of those end with failed tests."""
    rng = random.Random(6)
    ended: set[int] = set()
    actions: list[tuple[float, Any]] = []
    failing = 0
    plan = [("production", 16), ("staging", 16), ("development", 8)]
    for env, count in plan:
        for i in range(count):
            begin = rng.uniform(1, HOUR - 600)
            end = begin + rng.uniform(60, 500)  # by 3500 s
            state = "failed" if env == "production" and i % 2 else "passed"
            failing += env == "production" and state == "failed"
            box: dict[str, int] = {}

            def start(env: str = env, box: dict[str, int] = box) -> None:
                box["id"] = emulator.start(env)

            def finish(env: str = env, box: dict[str, int] = box, state: str = state) -> None:
                emulator.finish(box["id"], state)
                if env == "production":
                    ended.add(box["id"])

            actions += [(begin, start), (end, finish)]
    return actions, ended, failing


class _Control:
    def __init__(self, url: str) -> None:
        self.url = url

    def _post(self, path: str, body: Any) -> Any:
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}{path}",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def start(self, env: str) -> int:
        never = {"queued_for": 0, "run_for": 3600, "outcome": "never"}
        return int(
            self._post("/_emulator/runs/start", {"environment": env, "script": never})["test_run"]["id"]
        )

    def finish(self, run_id: int, state: str) -> None:
        self._post(f"/_emulator/runs/{run_id}/finish", {"state": state})

    def requests(self) -> list[dict[str, Any]]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_emulator/requests", timeout=30) as response:
            return list(json.loads(response.read()))

    def reset(self) -> None:
        self._post("/_emulator/reset", {})


class _Store:
    """Stand-in for the asset state store accessor (values through JSON, like the database)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)


class _Asyncio:
    """`asyncio` for the trigger module, with a virtual `sleep`."""

    def __init__(self, clock: VirtualTime) -> None:
        self.sleep = clock.sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def _count(control: _Control) -> tuple[int, int]:
    lists = reads = 0
    for r in control.requests():
        if r["method"] == "GET" and r["path"] == "/api/test-runs":
            lists += 1
        elif r["method"] == "GET" and r["path"].startswith("/api/test-runs/"):
            reads += 1
    return lists, reads


def _hour(control: _Control, watchers: list[Any], shared: bool) -> dict[str, Any]:
    """Run `watchers` for one virtual hour of the scenario (after a baseline poll)."""
    from airflow_provider_empirical.triggers import empirical as module

    control.reset()
    actions, ended, failing = _scenario(control)
    clock = VirtualTime(actions)
    module.asyncio = _Asyncio(clock)  # type: ignore[assignment]
    module.time = clock  # type: ignore[assignment]
    module.COMMIT_DELAY = 0.0
    events: list[list[int]] = [[] for _ in watchers]

    async def main() -> None:
        manager = None
        if shared:
            from airflow.triggers.shared_stream import SharedStreamManager

            manager = SharedStreamManager()

        async def consume(index: int, trigger: Any) -> None:
            if manager is not None:
                stream = manager.subscribe(
                    trigger_id=index + 1, trigger=trigger, key=trigger.shared_stream_key()
                )
                source = trigger.filter_shared_stream(stream)
            else:
                source = trigger.run()
            async for event in source:
                events[index].append(int(event.payload["id"]))

        tasks = [asyncio.ensure_future(consume(i, t)) for i, t in enumerate(watchers)]
        # polls at 0, 60, ..., 3540 s: 60 in the hour; the last runs end by 3500 s
        while not clock.over:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the watchers finish with the last snapshot
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    started = time.monotonic()
    asyncio.run(main())
    lists, reads = _count(control)
    return {
        "events": events,
        "ended": ended,
        "failing": failing,
        "lists": lists,
        "reads": reads,
        "wall": time.monotonic() - started,
    }


def child_calls(emulator_url: str, result: str) -> None:
    from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunEndedTrigger

    control = _Control(emulator_url)

    def watcher(**kwargs: Any) -> Any:
        trigger = EmpiricalTestRunEndedTrigger(poll_interval=POLL, **kwargs)
        trigger.asset_state_store = _Store()
        return trigger

    single = _hour(control, [watcher(environment="production")], shared=False)
    got = single["events"][0]
    data: dict[str, Any] = {
        "hours": 1,
        "expected_events": len(single["ended"]),
        "single_events": len(set(got) & single["ended"]) if set(got) <= single["ended"] else -1,
        "single_duplicates": len(got) - len(set(got)),
        "single_lists": single["lists"],
        "single_reads": single["reads"],
        "single_total": single["lists"] + single["reads"],
        "named_runs": single["failing"],
        "wall": single["wall"],
    }
    try:
        import airflow.triggers.shared_stream  # noqa: F401  # Airflow 3.3+
    except ImportError:
        write_result(result, data)
        return
    shared = _hour(
        control,
        [watcher(environment="production"), watcher(environment="staging"), watcher(result="failed")],
        shared=True,
    )
    data.update(
        shared_watchers=3,
        shared_lists=shared["lists"],
        shared_reads=shared["reads"],
        shared_total=shared["lists"] + shared["reads"],
        shared_ok=sorted(set(shared["events"][0])) == sorted(shared["ended"]),
        wall=data["wall"] + shared["wall"],
    )
    write_result(result, data)


# -- B: lag in a real Airflow -------------------------------------------------------------------------


def _lag() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.deployment_helpers import Deployment, EmulatorProcess, wait_until

    home = make_home("watcher-lag")
    emulator = EmulatorProcess(home).start()
    deployment = Deployment(
        home / "airflow", emulator.url, dags=[ROOT / "example_dags" / "empirical_on_production_run.py"]
    )
    deployment.env["EMPIRICAL_POLL_INTERVAL"] = str(LAG_POLL)
    dag_id = "empirical_on_production_run"
    never = {"queued_for": 0, "run_for": 3600, "outcome": "never"}
    lags: list[float] = []
    try:
        started = time.monotonic()
        deployment.start()
        deployment.wait_for_dags([dag_id])
        startup = time.monotonic() - started
        deployment.unpause(dag_id)

        def polls() -> int:
            return sum(
                1 for r in emulator.requests() if r["method"] == "GET" and r["path"] == "/api/test-runs"
            )

        wait_until("the watcher's baseline", lambda: polls() >= 2, 300)
        rng = random.Random(66)
        for _ in range(LAG_SAMPLES):
            run_id = emulator.control(
                "POST", "/_emulator/runs/start", {"environment": "production", "script": never}
            )["test_run"]["id"]
            time.sleep(rng.uniform(LAG_POLL, 2 * LAG_POLL))  # a random phase of the poll
            ended = time.time()
            emulator.control("POST", f"/_emulator/runs/{run_id}/finish", {"state": "passed"})

            def created(run_id: int = run_id) -> float | None:
                for dag_run in deployment.dag_runs(dag_id):
                    try:
                        events = deployment.upstream_asset_events(dag_id, dag_run["dag_run_id"])
                    except RuntimeError as exc:  # Airflow 3.3.2 answers 500 while the run is queued
                        if ": 500 " in str(exc):
                            return None
                        raise
                    if any(e["extra"]["payload"]["id"] == run_id for e in events):
                        return _epoch(dag_run["queued_at"])
                return None

            lags.append(wait_until(f"the DAG run for run {run_id}", created, 5 * LAG_POLL, 0.25) - ended)
    finally:
        deployment.stop()
        emulator.stop()
    return {"lags": lags, "startup": startup}


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="figure")
    parser.add_argument("--emulator")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.mode == "child-calls":
        child_calls(args.emulator, args.result)
    else:
        from run_all import main

        raise SystemExit(main(["--only", "7"]))
