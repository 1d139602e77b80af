"""Event-driven DAGs and triage with a person, end to end.

`dag.test()` part (every Airflow version): both examples parse without calling the API, the
watched DAG triggered by hand reports nothing, and a passing suite skips the question; on
versions without the feature the DAGs parse and their task skips, saying why.

Deployment tier (Airflow 3.3: scheduler, dag-processor, triggerer, API server; LocalExecutor):

- **The watcher.** Runs are started and ended directly on the emulator (its control API: not
  through Airflow, as Empirical's own schedule or a GitHub Action would). The watched DAG
  (example `empirical_on_production_run`) runs once per production run that ends, none for
  runs that ended before the watcher started or in another environment; a second watcher on
  the same connection (tests/deployment_dags/empirical_on_failed_staging_run.py, staging runs
  that did not pass) shares the poll and sees only its runs. The triggerer is stopped (SIGTERM)
  and later killed (SIGKILL) while runs are open, and runs end while it is down: nothing is lost
  or repeated (the watermark is in the asset state store). Kills are done between polls, not
  inside the 3 s in which a watcher hands events over (that window is tested in-process,
  tests/integration/test_event_trigger.py).
- **Triage.** Example `empirical_triage_failed_tests` triggered four times: a passing suite skips
  the question; for three failing suites the question is answered over Airflow's REST API, once
  per choice, and the outcome checked (a re-run of the failed tests, a snooze, a blocked release).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests import deployment_helpers as helpers
from tests.airflow_helpers import load_dags, task_states, xcoms
from tests.conftest import QUICK
from tests.deployment_helpers import Deployment, EmulatorProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WATCHED = "empirical_on_production_run"
TRIAGE = "empirical_triage_failed_tests"
STAGING = "empirical_on_failed_staging_run"
PRODUCTION_URI = "empirical://demo/production/runs"
STAGING_URI = "empirical://demo/staging/failed-runs"
RERUN, SNOOZE, BLOCK = "Re-run failed tests", "Snooze them for 24 h and release", "Block the release"
NEVER = {"queued_for": 0, "run_for": 3600, "outcome": "never"}
RUN_FOR = 12.0  # triage suites: deferred waits resume >= 10 s after deferring (Airflow 3.3 race)
REPORTED_WITHIN = 60.0  # seconds from a run's end to its asset event (2 s polls)
# after a triggerer (re)start: seen here, on 2 busy cores, ~35 s to start the process and ~25 s for
# its first request to the in-process execution API (the watcher's first read of its watermark)
AFTER_RESTART = 240.0


def _airflow_version() -> tuple[int, int]:
    from importlib import metadata

    major, minor = metadata.version("apache-airflow").split(".")[:2]
    return int(major), int(minor)


# -- dag.test(), every Airflow version ---------------------------------------------------------------


def test_examples_parse_with_docs_and_no_api_calls(empirical_conn: Emulator) -> None:
    bag = load_dags(str(ROOT / "example_dags"))
    assert bag.import_errors == {}
    for dag_id in (WATCHED, TRIAGE):
        dag = bag.get_dag(dag_id)
        assert dag is not None and len(dag.doc_md or "") > 300, dag_id
    assert empirical_conn.count() == 0  # parsing sends nothing (the watcher's trigger included)


def test_the_watched_dag_by_hand_reports_nothing(run_dag: Any) -> None:
    dag_run = run_dag(WATCHED)
    if _airflow_version() < (3, 0):
        assert task_states(dag_run) == {"report": "skipped"}  # says why: no AssetWatcher on 2.x
        return
    assert task_states(dag_run) == {"report": "success"}
    assert xcoms(dag_run, "report")["return_value"] == []


def test_triage_a_passing_suite_skips_the_question(run_dag: Any, emulator: Emulator) -> None:
    if _airflow_version() < (3, 1):
        dag_run = run_dag(TRIAGE)
        assert task_states(dag_run) == {"triage_unavailable": "skipped"}
        return
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag(TRIAGE)
    states = task_states(dag_run)
    assert states["run_suite"] == states["check"] == states["tests_passed"] == states["release"] == "success"
    assert {states[t] for t in ("ask", "rerun_failed_tests", "snooze_failed_tests", "block_release")} == {
        "skipped"
    }
    assert xcoms(dag_run, "release")["return_value"]["because"] == "every test passed"


# -- the deployment tier (Airflow 3.3) --------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, EmulatorProcess]]:
    if _airflow_version() != (3, 3):
        reason = (
            "DEPLOYMENT TIER NOT RUN: needs Airflow 3.3 (asset state store, shared streams, awaiting_input)"
        )
        print(f"\n{reason}", file=sys.stderr)
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("event-driven")
    emulator = EmulatorProcess(workdir).start()
    dags = [
        ROOT / "example_dags" / f"{WATCHED}.py",
        ROOT / "example_dags" / f"{TRIAGE}.py",
        ROOT / "tests" / "deployment_dags" / f"{STAGING}.py",
    ]
    deployment = Deployment(workdir / "airflow", emulator.url, dags=dags)
    try:
        started = time.monotonic()
        deployment.start()
        deployment.wait_for_dags([WATCHED, TRIAGE, STAGING])
        print(f"\n[event-driven] Airflow up in {time.monotonic() - started:.1f} s")
        yield deployment, emulator
    except BaseException:
        print(deployment.logs(), file=sys.stderr)
        raise
    finally:
        deployment.stop()
        emulator.stop()


def _start(emulator: EmulatorProcess, environment: str = "production") -> int:
    body = {"environment": environment, "script": NEVER}
    return int(emulator.control("POST", "/_emulator/runs/start", body)["test_run"]["id"])


def _finish(emulator: EmulatorProcess, run_id: int, state: str) -> None:
    emulator.control("POST", f"/_emulator/runs/{run_id}/finish", {"state": state})


def _list_polls(emulator: EmulatorProcess) -> int:
    return sum(1 for r in emulator.requests() if r["method"] == "GET" and r["path"] == "/api/test-runs")


def _wait_polls(emulator: EmulatorProcess, count: int, timeout: float = 60) -> None:
    """Until the watchers read the list `count` more times (each read is a complete poll's start)."""
    target = _list_polls(emulator) + count
    helpers.wait_until(f"{count} more polls of the list", lambda: _list_polls(emulator) >= target, timeout)


def _asset_events(deployment: Deployment, uri: str) -> list[dict[str, Any]]:
    """The asset's events. Airflow 3.3.2 answers 500 while an event's DAG run is queued (its
    DagRunAssetReference requires a start_date the queued run does not have yet): ask again."""

    def events() -> list[dict[str, Any]] | None:
        try:
            return deployment.asset_events(uri) or [{}]
        except RuntimeError as exc:
            if ": 500 " not in str(exc):
                raise
            return None

    found = helpers.wait_until(f"the events of {uri}", events, 60, 0.5)
    return [event for event in found if event]


def _watermarks(deployment: Deployment) -> dict[str, dict[str, Any]]:
    rows = deployment.db_rows(
        "SELECT key, value FROM asset_state_store WHERE key LIKE 'empirical_watermark:%'"
    )
    return {key: json.loads(value) for key, value in rows}


def _reported(deployment: Deployment, uri: str) -> list[int]:
    return [int(e["extra"]["payload"]["id"]) for e in _asset_events(deployment, uri)]


def _wait_reported(deployment: Deployment, uri: str, run_id: int, timeout: float = REPORTED_WITHIN) -> float:
    started = time.monotonic()
    helpers.wait_until(
        f"run {run_id} reported on {uri}", lambda: run_id in _reported(deployment, uri), timeout
    )
    return time.monotonic() - started


class Story:
    """What the watcher story did and what Airflow recorded."""

    def __init__(self) -> None:
        self.ended_before = 0
        self.running_before = 0
        self.production: list[int] = []  # runs that must be reported on the production asset, once
        self.staging_failed = 0
        self.staging_passed = 0
        self.failed_run = 0
        self.events: list[dict[str, Any]] = []
        self.staging_events: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []  # the watched DAG's XComs, every DAG run
        self.dag_runs: list[dict[str, Any]] = []
        self.staging_reports: list[int] = []
        self.shared_polls = 0.0  # list reads per poll interval, two watchers together
        self.watermarks: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def story(stack: tuple[Deployment, EmulatorProcess]) -> Story:
    deployment, emulator = stack
    s = Story()
    started = time.monotonic()
    try:
        # before the watchers exist: one run ended, one still running
        s.ended_before = _start(emulator)
        _finish(emulator, s.ended_before, "passed")
        s.running_before = _start(emulator)
        deployment.unpause(WATCHED)
        deployment.unpause(STAGING)
        # both watchers have their baseline once their watermarks are in the asset state store
        # (the first read of a fresh triggerer's store takes ~20 s here: Airflow's in-process API)
        helpers.wait_until(
            "both watchers' baselines", lambda: len(_watermarks(deployment)) == 2, AFTER_RESTART
        )
        _wait_polls(emulator, 2)

        # one shared poll for both watchers (same connection, same 2 s interval)
        before, t0 = _list_polls(emulator), time.monotonic()
        time.sleep(12)
        s.shared_polls = (_list_polls(emulator) - before) / (
            (time.monotonic() - t0) / float(helpers.POLL_INTERVAL)
        )

        # runs started and ended outside Airflow, a few seconds apart
        s.failed_run = _start(emulator)
        s.staging_passed, s.staging_failed = _start(emulator, "staging"), _start(emulator, "staging")
        _wait_polls(emulator, 2)
        _finish(emulator, s.running_before, "passed")
        _wait_reported(deployment, PRODUCTION_URI, s.running_before)
        _finish(emulator, s.failed_run, "failed")
        _wait_reported(deployment, PRODUCTION_URI, s.failed_run)
        _finish(emulator, s.staging_passed, "passed")
        _finish(emulator, s.staging_failed, "failed")
        _wait_reported(deployment, STAGING_URI, s.staging_failed)

        # the triggerer stops (SIGTERM) with runs open; one ends while it is down
        p2, p3 = _start(emulator), _start(emulator)
        _wait_polls(emulator, 3)
        time.sleep(1)  # between polls, out of any hand-over window
        deployment.stop_component("triggerer")
        _finish(emulator, p2, "passed")
        time.sleep(3)
        deployment.start(components=["triggerer"], migrate=False)
        _wait_reported(deployment, PRODUCTION_URI, p2, timeout=AFTER_RESTART)
        _finish(emulator, p3, "failed")
        _wait_reported(deployment, PRODUCTION_URI, p3)

        # the triggerer is killed (SIGKILL); another one adopts the watchers
        p4, p5 = _start(emulator), _start(emulator)
        _wait_polls(emulator, 3)
        time.sleep(1)
        deployment.kill_component("triggerer")
        _finish(emulator, p4, "error")
        time.sleep(3)
        deployment.start(components=["triggerer"], migrate=False)
        # adopted once the dead triggerer's heartbeat is older than [triggerer]
        # triggerer_health_check_threshold (30 s)
        _wait_reported(deployment, PRODUCTION_URI, p4, timeout=AFTER_RESTART + 30)
        _finish(emulator, p5, "cancelled")
        _wait_reported(deployment, PRODUCTION_URI, p5)

        s.production = [s.running_before, s.failed_run, p2, p3, p4, p5]
        _wait_polls(emulator, 6)  # room for anything reported twice to show up
        time.sleep(5)

        def watched_runs_done() -> list[dict[str, Any]] | None:
            runs = [r for r in deployment.dag_runs(WATCHED) if r["run_type"] == "asset_triggered"]
            done = runs and all(r["state"] in ("success", "failed") for r in runs)
            events = sum(len(deployment.upstream_asset_events(WATCHED, r["dag_run_id"])) for r in runs)
            return runs if done and events >= len(s.production) else None

        s.dag_runs = helpers.wait_until("the watched DAG's runs", watched_runs_done, 120)
        for dag_run in s.dag_runs:
            s.reports.extend(
                deployment.xcoms(WATCHED, dag_run["dag_run_id"], "report").get("return_value") or []
            )
        for dag_run in deployment.dag_runs(STAGING):
            deployment.wait_for_run(STAGING, dag_run["dag_run_id"], 60)
            s.staging_reports.extend(
                deployment.xcoms(STAGING, dag_run["dag_run_id"], "report")["return_value"]
            )
        s.events = _asset_events(deployment, PRODUCTION_URI)
        s.staging_events = _asset_events(deployment, STAGING_URI)
        s.watermarks = _watermarks(deployment)
    except BaseException:
        print(deployment.logs(6000), file=sys.stderr)
        raise
    print(
        f"\n[event-driven] watcher story done in {time.monotonic() - started:.1f} s; list reads per "
        f"poll interval, two watchers: {s.shared_polls:.2f}; {len(s.dag_runs)} DAG runs for "
        f"{len(s.production)} runs"
    )
    return s


def test_runs_ended_outside_airflow_schedule_the_watched_dag_once_each(story: Story) -> None:
    reported = Counter(int(e["extra"]["payload"]["id"]) for e in story.events)
    assert reported == Counter(story.production), reported
    assert story.ended_before not in reported  # ended before the watcher first started
    assert story.staging_passed not in reported and story.staging_failed not in reported
    assert all(not e["extra"]["payload"]["redelivered"] for e in story.events)
    # every event scheduled the DAG, whose task reported each run once
    assert Counter(r["test_run_id"] for r in story.reports) == Counter(story.production)
    assert all(r["state"] == "success" for r in story.dag_runs)
    assert len(story.dag_runs) >= len(story.production) - 2  # runs ended seconds apart: ~one DAG run each


def test_the_event_carries_the_operators_summary(story: Story) -> None:
    failed = next(
        e["extra"]["payload"] for e in story.events if e["extra"]["payload"]["id"] == story.failed_run
    )
    assert (
        failed["outcome"] == "failed"
        and failed["failed_count"] == 3
        and failed["environment_slug"] == "production"
    )
    assert failed["url"].endswith(f"/test-runs/{story.failed_run}")
    assert len(failed["failed_tests"]) == 3
    assert all(t["name"] and t["url"].startswith(failed["url"] + "?test_id=") for t in failed["failed_tests"])
    report = next(r for r in story.reports if r["test_run_id"] == story.failed_run)
    assert [t["name"] for t in report["failed_tests"]] == [t["name"] for t in failed["failed_tests"]]
    states = {e["extra"]["payload"]["id"]: e["extra"]["payload"]["state"] for e in story.events}
    assert sorted(states.values()) == ["cancelled", "ended", "ended", "ended", "ended", "error"]


def test_a_second_watcher_filters_by_result_and_shares_the_poll(story: Story) -> None:
    assert [int(e["extra"]["payload"]["id"]) for e in story.staging_events] == [story.staging_failed]
    assert story.staging_reports == [story.staging_failed]
    # two watchers, one read of the list per poll interval (two without the shared stream)
    assert story.shared_polls <= 1.3, story.shared_polls


def test_the_watermark_is_in_the_asset_state_store_with_nothing_pending(story: Story) -> None:
    production = story.watermarks["empirical_watermark:empirical_default:production:*"]
    staging = story.watermarks["empirical_watermark:empirical_default:staging:*"]
    assert production["pending"] == [] and production["open"] == [] and staging["pending"] == []
    assert production["high"] >= max(story.production)


# -- triage with a person (Airflow 3.3's awaiting_input state, answered over the REST API) ------------


class Triage:
    def __init__(self) -> None:
        self.runs: dict[str, str] = {}  # choice (or "pass") -> DAG run id
        self.states: dict[str, str] = {}
        self.tasks: dict[str, dict[str, str | None]] = {}
        self.questions: dict[str, dict[str, Any]] = {}
        self.suites: dict[str, dict[str, Any]] = {}
        self.rerun_body: dict[str, Any] = {}
        self.rerun_summary: dict[str, Any] = {}
        self.snoozes: list[dict[str, Any]] = []
        self.logs: dict[str, str] = {}


@pytest.fixture(scope="module")
def triage(stack: tuple[Deployment, EmulatorProcess]) -> Triage:
    deployment, emulator = stack
    t = Triage()
    started = time.monotonic()
    script = {"queued_for": 0.5, "run_for": RUN_FOR}
    try:
        emulator.control(
            "POST", "/_emulator/default-script", {**script, "outcome": "failed", "environment": "development"}
        )
        deployment.unpause(TRIAGE)
        emulator.control("POST", "/_emulator/runs/queue", [{**script, "outcome": "passed"}])
        t.runs["pass"] = deployment.trigger(TRIAGE, {"environment": "development"})
        helpers.wait_until(
            "the passing suite to start",
            lambda: any(
                r.get("metadata", {}).get("airflow_run_id") == t.runs["pass"] for r in emulator.runs()
            ),
            60,
        )
        for choice in (RERUN, SNOOZE, BLOCK):
            t.runs[choice] = deployment.trigger(TRIAGE, {"environment": "development"})

        for choice in (RERUN, SNOOZE, BLOCK):
            run_id = t.runs[choice]
            helpers.wait_until(
                f"the question of {run_id}",
                lambda run_id=run_id: deployment.task_states(TRIAGE, run_id).get("ask") == "awaiting_input",
                RUN_FOR * 10,
            )
            t.questions[choice] = deployment.hitl_detail(TRIAGE, run_id, "ask")
            t.suites[choice] = deployment.xcoms(TRIAGE, run_id, "run_suite")["return_value"]
        # A person answers after minutes. An answer within seconds of the question can resume the
        # task before the scheduler has processed the worker's exit from parking it, and Airflow
        # 3.3.2 then fails the task ("finished with state success, but the task instance's state
        # attribute is queued"): the race of apache/airflow#71580 / #72716, seen here once.
        time.sleep(10)
        for choice in (RERUN, SNOOZE, BLOCK):
            if choice == RERUN:  # the re-run (the next run created through the API) passes
                emulator.control("POST", "/_emulator/runs/queue", [{**script, "outcome": "passed"}])
            deployment.answer_hitl(TRIAGE, t.runs[choice], "ask", choice)

        for key, run_id in t.runs.items():
            t.states[key] = deployment.wait_for_run(TRIAGE, run_id, RUN_FOR * 10)
            t.tasks[key] = deployment.task_states(TRIAGE, run_id)
        rerun = deployment.xcoms(TRIAGE, t.runs[RERUN], "rerun_failed_tests")
        t.rerun_summary = rerun.get("return_value") or {}
        if t.rerun_summary.get("id"):
            t.rerun_body = next(r for r in emulator.runs() if r["id"] == t.rerun_summary["id"])
        t.snoozes = list(emulator.control("GET", "/_emulator/snoozes"))
        for key in (SNOOZE, BLOCK):
            task = "snooze_failed_tests" if key == SNOOZE else "block_release"
            tries = deployment.task_instances(TRIAGE, t.runs[key])[task]["try_number"]
            t.logs[key] = deployment.task_log(TRIAGE, t.runs[key], task, max(1, tries)) if tries else ""
        for key, tasks in t.tasks.items():
            if tasks.get("ask") == "failed":
                log = deployment.task_log(TRIAGE, t.runs[key], "ask")
                print(f"\n[event-driven] ask failed in {key}:\n{log}")
        print(f"\n[event-driven] triage task states: {json.dumps(t.tasks, indent=1)}")
    except BaseException:
        print(deployment.logs(6000), file=sys.stderr)
        raise
    print(f"\n[event-driven] triage story done in {time.monotonic() - started:.1f} s")
    return t


def test_triage_a_passing_suite_asks_nothing_and_releases(triage: Triage) -> None:
    tasks = triage.tasks["pass"]
    assert triage.states["pass"] == "success"
    assert tasks["tests_passed"] == tasks["release"] == "success" and tasks["ask"] == "skipped"


def test_triage_shows_the_failed_tests_with_their_links(triage: Triage) -> None:
    for choice in (RERUN, SNOOZE, BLOCK):
        question, suite = triage.questions[choice], triage.suites[choice]
        assert question["options"] == [RERUN, SNOOZE, BLOCK]
        assert str(suite["id"]) in question["subject"]
        assert len(suite["failed_tests"]) == 3
        for test in suite["failed_tests"]:
            assert f"]({test['url']})" in question["body"], question["body"]
            assert test["url"].startswith(suite["url"] + "?test_id=")


def test_triage_rerun_reruns_only_the_failed_tests_then_releases(triage: Triage) -> None:
    tasks = triage.tasks[RERUN]
    assert triage.states[RERUN] == "success", tasks
    assert tasks["rerun_failed_tests"] == tasks["release"] == "success"
    assert tasks["snooze_failed_tests"] == tasks["block_release"] == "skipped"
    source = triage.suites[RERUN]
    assert triage.rerun_body["rerun_source_id"] == source["id"]  # Empirical's re-run of the suite's run
    assert triage.rerun_body["total_count"] == 3  # only the three failed tests ran again
    assert triage.rerun_summary["outcome"] == "success"


def test_triage_block_fails_the_release_naming_the_tests(triage: Triage) -> None:
    tasks = triage.tasks[BLOCK]
    assert triage.states[BLOCK] == "failed"
    assert tasks["block_release"] == "failed" and tasks["release"] == "skipped"
    assert tasks["rerun_failed_tests"] == tasks["snooze_failed_tests"] == "skipped"
    assert "Release blocked" in triage.logs[BLOCK]
    for test in triage.suites[BLOCK]["failed_tests"]:
        assert test["name"] in triage.logs[BLOCK]


def test_triage_snooze_snoozes_the_failed_tests_and_releases(triage: Triage) -> None:
    tasks = triage.tasks[SNOOZE]
    assert tasks["rerun_failed_tests"] == tasks["block_release"] == "skipped"  # the branch taken
    assert triage.states[SNOOZE] == "success", tasks
    assert tasks["snooze_failed_tests"] == tasks["release"] == "success"
    suite = triage.suites[SNOOZE]
    failed_ids = {t["pw_test_id"] for t in suite["failed_tests"]}
    covering = [s for s in triage.snoozes if failed_ids <= set(s["test_ids"]) and s["active"]]
    assert covering, triage.snoozes
