"""The example DAGs in a real Airflow 3.3: scheduler, dag-processor, triggerer, API server.

Not `dag.test()`: Airflow's own processes (LocalExecutor, SQLite) in a throwaway
AIRFLOW_HOME on free loopback ports, the emulator as a separate process, the example DAGs
as the dags folder (tests/deployment_helpers.py). Every example is unpaused and triggered by
hand through the REST API (no logical date, as the UI's Trigger button does on Airflow 3),
all at once; unpausing the nightly DAG also makes the scheduler start its latest scheduled
run. What is checked comes back through the REST API: run and task states, extra links,
XComs, asset events.

Emulated runs last ~12 s, so every deferred wait resumes >= 10 s after deferring (Airflow
3.3 race, apache/airflow #71580 / #72716: a trigger that fires within seconds of the
deferral can get the resumed task marked failed). Airflow 3.3 only; skipped, with the
reason, elsewhere. The template checks at the end run on every version.
"""

from __future__ import annotations

import inspect
import re
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import deployment_helpers as helpers
from tests.deployment_helpers import Deployment, EmulatorProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NIGHTLY = "empirical_nightly_regression"
SMOKE = "empirical_post_deploy_smoke"
RERUN = "empirical_rerun_failed"
WAIT = "empirical_wait_for_test_run"
RELEASE = "empirical_release_after_tests"
ROLLBACK = "empirical_post_deploy_rollback"
POLLING = "empirical_polling_kill"  # tests/deployment_dags: an operator polling in the worker
EXAMPLES = [NIGHTLY, SMOKE, RERUN, WAIT, RELEASE, ROLLBACK]
# tasks that are skipped when everything passes (the rollback branch)
SKIPPED_WHEN_GREEN = {ROLLBACK: {"rollback", "cancel_full_regression"}}
ASSET_URI = "empirical://demo/production/regression"
# (dag, task) pairs that start or wait for an Empirical run: each has the extra link
LINKED = {NIGHTLY: ["trigger_tests", "wait_for_tests"], SMOKE: ["smoke_tests"], RERUN: ["rerun_failed_tests"]}
LINKED[WAIT] = ["wait_for_test_run"]
RUN_FOR = 12.0  # seconds an emulated run lasts: deferred waits resume >= 10 s after deferring
SNOOZED_TEST = "signs in with email"  # a test of the emulator's catalogue
RUN_TIMEOUT = 120.0


def _airflow_version() -> tuple[int, int]:
    from importlib import metadata

    major, minor = metadata.version("apache-airflow").split(".")[:2]
    return int(major), int(minor)


def _skip_loudly(why: str) -> None:
    print(f"\nDEPLOYMENT TIER NOT RUN: {why}", file=sys.stderr)
    pytest.skip(f"DEPLOYMENT TIER NOT RUN: {why}")


# -- the deployment and one batch of runs, shared by the tests below --


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, EmulatorProcess]]:
    version = _airflow_version()
    if version != (3, 3):
        _skip_loudly(f"needs Airflow 3.3 (its REST API, UI and processes), this is {version[0]}.{version[1]}")
    workdir = tmp_path_factory.mktemp("deployment")
    emulator = EmulatorProcess(workdir)
    deployment: Deployment | None = None
    try:
        started = time.monotonic()
        emulator.start()
        dags = [
            *sorted((ROOT / "example_dags").glob("*.py")),
            ROOT / "tests" / "deployment_dags" / f"{POLLING}.py",
        ]
        deployment = Deployment(workdir / "airflow", emulator.url, dags=dags)
        deployment.start()
        deployment.wait_for_dags([*EXAMPLES, POLLING])
        print(f"\n[deployment] Airflow up with the examples parsed in {time.monotonic() - started:.1f} s")
        yield deployment, emulator
    except BaseException:
        if deployment is not None:
            print(deployment.logs(), file=sys.stderr)
        raise
    finally:
        if deployment is not None:
            deployment.stop()
        emulator.stop()


class Batch:
    """Every example triggered by hand at once, plus a nightly run scripted to fail."""

    def __init__(self, deployment: Deployment, emulator: EmulatorProcess) -> None:
        self.deployment, self.emulator = deployment, emulator
        self.runs: dict[str, str] = {}  # dag id -> manual run id
        self.states: dict[str, str] = {}
        self.failing_nightly = ""
        self.snoozed_nightly = ""  # its only failure is snoozed: it must pass, in the triggerer
        self.scheduled_nightly = ""
        self.source_run: dict[str, Any] = {}
        self.failed_source: dict[str, Any] = {}
        self.release_runs: dict[str, str] = {}  # release run id -> state
        self.events: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def batch(stack: tuple[Deployment, EmulatorProcess]) -> Batch:
    deployment, emulator = stack
    result = Batch(deployment, emulator)
    started = time.monotonic()
    script = {"queued_for": 0.5, "run_for": RUN_FOR}
    emulator.control("POST", "/_emulator/default-script", {**script, "outcome": "passed"})
    # the nightly run triggered with {"environment": "development"} fails its tests
    emulator.control(
        "POST", "/_emulator/default-script", {**script, "outcome": "failed", "environment": "development"}
    )
    # ... and with {"environment": "staging"} its only failure is snoozed: Empirical shows it Passed.
    # It ends later than the others, so its asset event does not race theirs.
    snoozed = {"outcome": "failed", "total": 24, "failed_tests": [SNOOZED_TEST], "snoozed_tests": True}
    emulator.control(
        "POST",
        "/_emulator/default-script",
        {"queued_for": 0.5, "run_for": RUN_FOR + 5, **snoozed, "environment": "staging"},
    )
    # someone else's runs: one with failed tests to re-run, one to wait for across teams
    emulator.control("POST", "/_emulator/runs/queue", [{"queued_for": 0, "run_for": 0, "outcome": "failed"}])
    result.failed_source = emulator.create_run(environment="production")
    emulator.control("POST", "/_emulator/runs/queue", [{"queued_for": 0, "run_for": 6}])
    result.source_run = emulator.create_run(environment="production")
    try:
        # Unpausing the nightly DAG makes the scheduler start its latest scheduled run. Its test
        # run ends only when this test says so, after the other nightly runs' asset events have
        # their release runs: two events within ~0.2 s of a release run's creation can leave the
        # second one without a run (Airflow 3.3.2; seen in CI when fixed durations happened to end
        # 70 ms apart), which would make the release counts below a lottery.
        emulator.control("POST", "/_emulator/runs/queue", [{"queued_for": 0.5, "run_for": 10 * RUN_TIMEOUT}])
        deployment.unpause(NIGHTLY)
        scheduled_test_run = helpers.wait_until(
            "the scheduled nightly run to trigger its tests",
            lambda: next(
                (
                    r
                    for r in emulator.runs()
                    if str(r.get("metadata", {}).get("airflow_run_id", "")).startswith("scheduled__")
                ),
                None,
            ),
            60,
        )
        result.scheduled_nightly = scheduled_test_run["metadata"]["airflow_run_id"]
        for dag_id in EXAMPLES[1:]:
            deployment.unpause(dag_id)
        confs: dict[str, dict[str, Any]] = {
            RERUN: {"rerun_source_id": result.failed_source["id"]},
            WAIT: {"test_run_id": result.source_run["id"]},
        }
        for dag_id in EXAMPLES:
            result.runs[dag_id] = deployment.trigger(dag_id, confs.get(dag_id))
        result.failing_nightly = deployment.trigger(NIGHTLY, {"environment": "development"})
        result.snoozed_nightly = deployment.trigger(NIGHTLY, {"environment": "staging"})
        waits = [
            *result.runs.items(),
            (NIGHTLY, result.failing_nightly),
            (NIGHTLY, result.snoozed_nightly),
        ]
        for dag_id, run_id in waits:
            result.states[run_id] = deployment.wait_for_run(dag_id, run_id, RUN_TIMEOUT)

        # the release DAG runs scheduled by the asset events of the nightly runs that passed
        manual_nightlies = (result.runs[NIGHTLY], result.snoozed_nightly)

        def released(passed: list[str]) -> bool:
            events = [e for e in deployment.asset_events(ASSET_URI) if e["source_run_id"] in passed]
            runs = [r for r in deployment.dag_runs(RELEASE) if r["run_type"] == "asset_triggered"]
            return len(events) == len(passed) and all(_release_run_for(e, runs) for e in events)

        def wait_released(passed: list[str]) -> None:
            try:
                helpers.wait_until("asset-triggered release runs", lambda: released(passed), 60)
            except TimeoutError as exc:
                events = deployment.asset_events(ASSET_URI)
                raise AssertionError(
                    f"{exc}\nnightly runs that passed: {passed}\nasset events: {events}\n"
                    f"release runs: {deployment.dag_runs(RELEASE)}"
                ) from None

        wait_released([r for r in manual_nightlies if result.states[r] == "success"])
        # now the scheduled nightly run's tests pass, and its asset event comes on its own
        emulator.control("POST", f"/_emulator/runs/{scheduled_test_run['id']}/finish", {"state": "passed"})
        waits.append((NIGHTLY, result.scheduled_nightly))
        result.states[result.scheduled_nightly] = deployment.wait_for_run(
            NIGHTLY, result.scheduled_nightly, RUN_TIMEOUT
        )
        nightlies = (*manual_nightlies, result.scheduled_nightly)
        wait_released([r for r in nightlies if result.states[r] == "success"])
        release_ids = {
            r["dag_run_id"] for r in deployment.dag_runs(RELEASE) if r["run_type"] == "asset_triggered"
        }
        for run_id in sorted(release_ids):
            result.release_runs[run_id] = deployment.wait_for_run(RELEASE, run_id, 60)
        # give the scheduler a few more loops to (wrongly) react to the failed nightly run
        failed_end = deployment.dag_run(NIGHTLY, result.failing_nightly)["end_date"]
        assert failed_end, "the failing nightly run has no end date"
        time.sleep(5)
        result.events = deployment.asset_events(ASSET_URI)
    except BaseException:
        print(deployment.logs(), file=sys.stderr)
        raise
    print(f"\n[deployment] {len(waits)} DAG runs finished in {time.monotonic() - started:.1f} s")
    if result.states[result.runs[SMOKE]] == "success":  # the browser test opens this one
        url = deployment.xcoms(SMOKE, result.runs[SMOKE], "smoke_tests")["test_run_url"]
        helpers.FINISHED_SMOKE.clear()
        helpers.FINISHED_SMOKE.update(
            home=deployment.home,
            emulator_url=emulator.url,
            dag_id=SMOKE,
            run_id=result.runs[SMOKE],
            task_id="smoke_tests",
            url=url,
        )
    return result


# -- the examples, by hand --


def test_every_example_succeeds_when_triggered_by_hand(batch: Batch) -> None:
    for dag_id, run_id in batch.runs.items():
        run = batch.deployment.dag_run(dag_id, run_id)
        assert run["run_type"] == "manual" and run["logical_date"] is None, run
        states = batch.deployment.task_states(dag_id, run_id)
        assert batch.states[run_id] == "success", f"{dag_id}: {states}\n{batch.deployment.logs()}"
        skipped = SKIPPED_WHEN_GREEN.get(dag_id, set())
        assert {task for task, state in states.items() if state != "success"} == skipped, (dag_id, states)
        assert all(states[task] == "skipped" for task in skipped), (dag_id, states)


def test_a_nightly_whose_only_failure_is_snoozed_passes_in_the_triggerer(batch: Batch) -> None:
    """As Empirical's dashboard shows it Passed (issue 23), through the real scheduler and triggerer."""
    run_id = batch.snoozed_nightly
    assert batch.states[run_id] == "success", batch.deployment.task_states(NIGHTLY, run_id)
    summary = batch.deployment.xcoms(NIGHTLY, run_id, "wait_for_tests")["return_value"]
    assert summary["outcome"] == "success" and summary["environment_slug"] == "staging"
    assert (summary["failed_count"], summary["failed_count_after_snoozing"]) == (1, 0)
    assert summary["failed_tests"] == [] and [t["name"] for t in summary["snoozed_tests"]] == [SNOOZED_TEST]
    log = batch.deployment.task_log(NIGHTLY, run_id, "wait_for_tests")
    assert f"SNOOZED {SNOOZED_TEST}" in log and "is snoozed, as Empirical judges it" in log


def test_the_scheduled_nightly_run_succeeds_too(batch: Batch) -> None:
    run = batch.deployment.dag_run(NIGHTLY, batch.scheduled_nightly)
    assert run["logical_date"] is not None
    assert batch.states[batch.scheduled_nightly] == "success", batch.deployment.task_states(
        NIGHTLY, batch.scheduled_nightly
    )


def _emulator_run(batch: Batch, dag_id: str, run_id: str) -> dict[str, Any]:
    """The run the emulator created for a DAG run (the operator sends the DAG/run ids as metadata)."""
    (run,) = [
        r
        for r in batch.emulator.runs()
        if r.get("metadata", {}).get("airflow_dag_id") == dag_id
        and r.get("metadata", {}).get("airflow_run_id") == run_id
    ]
    return run


def test_extra_links_and_xcoms_name_the_emulators_run(batch: Batch) -> None:
    url = batch.emulator.url
    for dag_id, tasks in LINKED.items():
        run_id = batch.runs[dag_id]
        if dag_id in (RERUN, NIGHTLY, SMOKE):
            expected_id = _emulator_run(batch, dag_id, run_id)["id"]
        else:  # the cross-team wait watches a run someone else started
            expected_id = batch.source_run["id"]
        for task_id in tasks:
            links = batch.deployment.links(dag_id, run_id, task_id)
            xcoms = batch.deployment.xcoms(dag_id, run_id, task_id)
            assert xcoms["test_run_url"].startswith(url), (dag_id, task_id, xcoms)
            assert xcoms["test_run_url"].endswith(f"/test-runs/{expected_id}"), (dag_id, task_id, xcoms)
            assert links == {"Empirical test run": xcoms["test_run_url"]}, (dag_id, task_id, links)
            summary = xcoms["return_value"]
            if isinstance(summary, dict):  # the task waited: its summary is the finished run
                assert summary["id"] == expected_id and summary["outcome"] == "success", summary
                assert summary["url"] == xcoms["test_run_url"]
            else:  # trigger_tests hands the id on
                assert summary == expected_id == xcoms["test_run_id"]


def test_build_version_comes_from_run_after_on_a_manual_run(batch: Batch) -> None:
    """The bug of issue 15: `{{ ds_nodash }}` is undefined in a manual Airflow 3 run."""
    run = batch.deployment.dag_run(NIGHTLY, batch.runs[NIGHTLY])
    (body,) = [
        r["json"]
        for r in batch.emulator.requests()
        if r["method"] == "PUT"
        and (r.get("json") or {}).get("metadata", {}).get("airflow_run_id") == run["dag_run_id"]
    ]
    run_after = datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))
    assert body["build"] == {"version": f"nightly-{run_after:%Y%m%d}", "branch": "main"}, body
    assert body["metadata"]["run_after"].startswith(f"{run_after:%Y-%m-%dT%H:%M:%S}"), body["metadata"]
    assert body["metadata"]["suite"] == "nightly" and body["tags"] == ["@regression"]


# -- assets: the release DAG follows the nightly suite's success, and only that --


def _release_run_for(event: dict[str, Any], release_runs: list[dict[str, Any]]) -> str | None:
    """The asset-triggered release run an event caused: the one Airflow links to it, else (when
    Airflow merged or did not link the event) the first release run asked for after it."""
    linked = [d["run_id"] for d in event["created_dagruns"] if d["dag_id"] == RELEASE]
    if linked:
        return str(linked[0])
    after = sorted(r["run_after"] for r in release_runs if r["run_after"] >= event["timestamp"])
    return next((r["dag_run_id"] for r in release_runs if after and r["run_after"] == after[0]), None)


def _event_of(batch: Batch, nightly_run: str) -> dict[str, Any]:
    (event,) = [e for e in batch.events if e["source_run_id"] == nightly_run]
    return event


def test_release_runs_after_the_nightly_suite_passed(batch: Batch) -> None:
    event = _event_of(batch, batch.runs[NIGHTLY])
    assert event["source_dag_id"] == NIGHTLY and event["source_task_id"] == "wait_for_tests"
    runs = [r for r in batch.deployment.dag_runs(RELEASE) if r["run_type"] == "asset_triggered"]
    release_run = _release_run_for(event, runs)
    assert release_run, (event, runs)
    assert batch.release_runs[release_run] == "success"
    promoted = batch.deployment.xcoms(RELEASE, release_run, "promote")["return_value"]
    assert set(promoted) >= {"test_run_id", "url", "build_version", "commit"}
    # the manual release run had no event: it promoted nothing
    assert batch.deployment.xcoms(RELEASE, batch.runs[RELEASE], "promote").get("return_value") is None


def test_release_reads_which_run_passed_from_the_event_extra(batch: Batch) -> None:
    nightly_run = batch.runs[NIGHTLY]
    run_id = batch.deployment.xcoms(NIGHTLY, nightly_run, "trigger_tests")["test_run_id"]
    extra = _event_of(batch, nightly_run)["extra"]
    assert extra["test_run_id"] == run_id, extra
    assert extra["url"] == batch.deployment.xcoms(NIGHTLY, nightly_run, "trigger_tests")["test_run_url"]
    assert extra["outcome"] == "success" and extra["failed_count"] == 0
    passed_ids = {
        batch.deployment.xcoms(NIGHTLY, r, "trigger_tests")["test_run_id"]
        for r in (nightly_run, batch.scheduled_nightly, batch.snoozed_nightly)
    }
    for release_run in batch.release_runs:
        promoted = batch.deployment.xcoms(RELEASE, release_run, "promote")["return_value"]
        assert promoted["test_run_id"] in passed_ids, promoted


def test_release_does_not_run_after_a_failed_nightly_suite(batch: Batch) -> None:
    failing = batch.failing_nightly
    assert batch.states[failing] == "failed"
    states = batch.deployment.task_states(NIGHTLY, failing)
    assert states == {"trigger_tests": "success", "wait_for_tests": "failed", "report": "upstream_failed"}
    sent = _emulator_run(batch, NIGHTLY, failing)
    assert sent["environment_slug"] == "development" and sent["failed_count"] > 0
    assert [e for e in batch.events if e["source_run_id"] == failing] == []
    # events come only from the nightly runs that passed, and each makes at most one release run
    passed = {batch.runs[NIGHTLY], batch.scheduled_nightly, batch.snoozed_nightly}
    assert {e["source_run_id"] for e in batch.events} == passed
    assert 1 <= len(batch.release_runs) <= len(batch.events)
    assert set(batch.release_runs.values()) == {"success"}


# -- cancelling a deferred task for real --


def _cancel_on_kill_supported() -> bool:
    from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger

    return "cancel_on_kill" in inspect.signature(EmpiricalTestRunTrigger.__init__).parameters


def test_marking_a_deferred_task_failed_cancels_its_run_once(batch: Batch) -> None:
    if not _cancel_on_kill_supported():
        _skip_loudly("cancel-on-kill not implemented yet (EmpiricalTestRunTrigger has no cancel_on_kill)")
    deployment, emulator = batch.deployment, batch.emulator
    emulator.control("POST", "/_emulator/runs/queue", {"queued_for": 0.5, "run_for": 300})
    run_id = deployment.trigger(SMOKE)
    helpers.wait_until(
        "smoke_tests to defer",
        lambda: deployment.task_states(SMOKE, run_id).get("smoke_tests") == "deferred",
        60,
    )
    test_run_id = deployment.xcoms(SMOKE, run_id, "smoke_tests")["test_run_id"]
    cancel_path = f"/api/test-runs/{test_run_id}/cancel"
    time.sleep(2)  # the triggerer picked the trigger up
    deployment.mark(SMOKE, run_id, "smoke_tests", "failed")

    def cancels() -> list[dict[str, Any]]:
        return [r for r in emulator.requests() if r["method"] == "POST" and r["path"] == cancel_path]

    helpers.wait_until(f"POST {cancel_path}", cancels, 30)
    time.sleep(3)  # a second cancel would show up by now
    assert len(cancels()) == 1, cancels()
    assert deployment.task_states(SMOKE, run_id)["smoke_tests"] == "failed"
    (run,) = [r for r in emulator.runs() if r["id"] == test_run_id]
    assert run["state"] in ("cancelling", "cancelled"), run


def test_marking_a_polling_task_failed_cancels_its_run_once(batch: Batch) -> None:
    """Airflow kills the worker's task process (SIGTERM); the operator's on_kill cancels the run."""
    deployment, emulator = batch.deployment, batch.emulator
    emulator.control("POST", "/_emulator/runs/queue", {"queued_for": 0.5, "run_for": 300})
    deployment.unpause(POLLING)
    run_id = deployment.trigger(POLLING)

    def polling() -> bool:
        try:
            return "test_run_id" in deployment.xcoms(POLLING, run_id, "run_tests")
        except Exception:  # the task instance may not exist yet
            return False

    helpers.wait_until("run_tests to start polling", polling, 60)
    test_run_id = deployment.xcoms(POLLING, run_id, "run_tests")["test_run_id"]
    cancel_path = f"/api/test-runs/{test_run_id}/cancel"
    time.sleep(2)
    deployment.mark(POLLING, run_id, "run_tests", "failed")

    def cancels() -> list[dict[str, Any]]:
        return [r for r in emulator.requests() if r["method"] == "POST" and r["path"] == cancel_path]

    helpers.wait_until(f"POST {cancel_path}", cancels, 60)
    time.sleep(3)  # a second cancel would show up by now
    (cancel,) = cancels()
    assert "run_tests" in cancel["json"]["reason"] and "was killed" in cancel["json"]["reason"], cancel
    assert deployment.task_states(POLLING, run_id)["run_tests"] == "failed"


# -- the templates behind it, on every Airflow version --


@pytest.fixture(scope="module")
def nightly_dag() -> Any:
    from tests.airflow_helpers import load_dags

    bag = load_dags(str(ROOT / "example_dags"))
    assert bag.import_errors == {}
    return bag.get_dag(NIGHTLY)


def _render(dag: Any, task_id: str, field: str, context: dict[str, Any]) -> Any:
    task = dag.get_task(task_id)
    return task.render_template(getattr(task, field), context, dag.get_template_env())


MANUAL_AIRFLOW_3 = SimpleNamespace(
    run_after=datetime(2026, 11, 2, 14, 30, tzinfo=timezone.utc), logical_date=None
)
AIRFLOW_2 = SimpleNamespace(execution_date=datetime(2026, 11, 1, 1, 0, tzinfo=timezone.utc))


@pytest.mark.parametrize(
    ("dag_run", "version"),
    [(MANUAL_AIRFLOW_3, "nightly-20261102"), (AIRFLOW_2, "nightly-20261101")],
    ids=["airflow3-manual-run-no-logical-date", "airflow2-dagrun-without-run_after"],
)
def test_nightly_templates_render_without_a_logical_date(
    nightly_dag: Any, dag_run: Any, version: str
) -> None:
    """A manual Airflow 3 run has no ds/logical_date; an Airflow 2 DagRun has no run_after."""
    context = {"dag_run": dag_run, "params": {"environment": "production"}}
    assert _render(nightly_dag, "trigger_tests", "build", context) == {"version": version, "branch": "main"}
    metadata = _render(nightly_dag, "trigger_tests", "metadata", context)
    when = getattr(dag_run, "run_after", None) or dag_run.execution_date
    assert metadata == {"suite": "nightly", "run_after": when.isoformat()}
    import jinja2

    with pytest.raises(jinja2.UndefinedError):  # what the example used to render
        nightly_dag.get_task("trigger_tests").render_template(
            "{{ ds_nodash }}", context, nightly_dag.get_template_env()
        )


def test_examples_need_no_logical_date() -> None:
    for path in sorted((ROOT / "example_dags").glob("*.py")):
        source = path.read_text()
        found = re.findall(
            r"\{\{[^}]*\b(ds|ds_nodash|ts|ts_nodash|logical_date|execution_date)\b[^}]*\}\}", source
        )
        fallback = "dag_run.execution_date" in source and "dag_run.run_after" in source
        assert not found or fallback, f"{path.name}: {found}"
