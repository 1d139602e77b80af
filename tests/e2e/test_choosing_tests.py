"""Choosing what runs and where before a run exists, in real DAG runs against the emulator:
tests by file or name, the environment checked first, a commit already tested not tested again.

Every refusal happens before the trigger PUT: the emulator's request log proves no run started.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.airflow_helpers import task_states, xcoms
from tests.conftest import QUICK

pytestmark = pytest.mark.e2e


def _ids(
    emulator: Emulator, *, prefix: str = "", names: tuple[str, ...] = (), project: str | None = None
) -> set[str]:
    return {
        case["id"]
        for case in emulator.test_cases
        if case["last_seen_commit_sha"] == emulator.test_cases[0]["last_seen_commit_sha"]  # active ones
        and (not prefix or case["file_path"].startswith(prefix))
        and (not names or case["name"] in names)
        and (project is None or case["playwright_project"] == project)
    }


def _sent_ids(emulator: Emulator) -> list[str]:
    (put,) = [r for r in emulator.requests if r.method == "PUT"]
    return list(put.json["test_case_ids"])


def test_tests_by_folder_send_exactly_that_folders_active_cases(run_dag: Any, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("e2e_choose_by_file", {"folder": "checkout/"})  # conf given: dag.test() keeps the last
    assert task_states(dag_run)["run_tests"] == "success"
    sent = _sent_ids(emulator)
    expected = _ids(emulator, prefix="checkout/")
    assert set(sent) == expected and len(sent) == len(expected) == 11  # 9 chromium, 2 firefox
    assert xcoms(dag_run, "run_tests")["return_value"]["selected_test_count"] == 11
    catalogue = [r for r in emulator.requests if r.path == "/api/v2/test-cases"]
    assert len(catalogue) == 1 and catalogue[0].query["is_active"] == "true"  # one walk, not a call per file


def test_a_test_by_name_brings_the_serial_group_members_it_needs(
    run_dag: Any, emulator: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("e2e_choose_by_name", {"title": "places the order"})  # deferrable
    assert task_states(dag_run)["run_tests"] == "success"
    group = ("fills the shipping address", "chooses a delivery slot", "places the order")
    assert set(_sent_ids(emulator)) == _ids(emulator, names=group, project="chromium")
    out, err = capfd.readouterr()
    assert "Added 2 test(s) that the chosen ones need (Playwright serial groups)" in out + err


@pytest.mark.parametrize(
    ("dag_id", "conf", "words"),
    [
        (
            "e2e_choose_by_file",
            {"folder": "chekout/"},
            ["file 'chekout/' (closest: 'checkout/"],
        ),
        # the catalogue's one inactive test: only active tests can be chosen
        (
            "e2e_choose_by_name",
            {"title": "invites a teammate"},
            ["no active test case", "'invites a teammate'"],
        ),
    ],
)
def test_a_file_or_name_that_matches_nothing_fails_before_any_run(
    run_dag: Any,
    emulator: Emulator,
    capfd: pytest.CaptureFixture[str],
    dag_id: str,
    conf: dict[str, str],
    words: list[str],
) -> None:
    dag_run = run_dag(dag_id, conf)
    assert task_states(dag_run)["run_tests"] == "failed" and emulator.count("PUT") == 0
    out, err = capfd.readouterr()
    assert all(word in out + err for word in words), out + err


def test_a_sync_error_of_the_test_repository_fails_saying_what_empirical_said(
    run_dag: Any, emulator: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    emulator.set_switches(test_cases_sync_error=True)
    dag_run = run_dag("e2e_choose_by_file", {"folder": "checkout/"})
    assert task_states(dag_run)["run_tests"] == "failed" and emulator.count("PUT") == 0
    out, err = capfd.readouterr()
    assert "Empirical reports an error at its last sync of the test repository" in out + err


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ("prodution", ["'prodution' is not an environment", "valid: 'production', 'staging', 'development'"]),
        ("legacy", ["'legacy' is disabled in Empirical"]),
    ],
)
def test_an_unknown_or_disabled_environment_fails_before_any_run(
    run_dag: Any, emulator: Emulator, capfd: pytest.CaptureFixture[str], env: str, words: list[str]
) -> None:
    dag_run = run_dag("e2e_choose_environment", {"env": env})
    assert task_states(dag_run)["run_tests"] == "failed" and emulator.count("PUT") == 0
    out, err = capfd.readouterr()
    assert all(word in out + err for word in words), out + err


def test_without_an_environments_endpoint_the_run_still_starts(run_dag: Any, emulator: Emulator) -> None:
    emulator.set_switches(environments_endpoint=False)
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("e2e_choose_environment", {"env": "production"})
    assert task_states(dag_run)["run_tests"] == "success" and emulator.count("PUT") == 1
    assert emulator.count("GET", "/api/environments/list") == 1  # asked once, then not again


def _run_of_commit(
    emulator: Emulator, commit: str, script: RunScript, environment: str = "production"
) -> int:
    run = emulator.start_run(environment, build={"commit": commit}, script=script)
    return int(run["id"])


@pytest.mark.parametrize("dag_id", ["e2e_reuse_commit", "e2e_reuse_commit_deferrable"])
def test_a_commit_that_passed_is_not_tested_again(run_dag: Any, emulator: Emulator, dag_id: str) -> None:
    _run_of_commit(emulator, "other", RunScript(**QUICK))
    passed = _run_of_commit(emulator, "c0ffee1", RunScript(**QUICK))
    _run_of_commit(emulator, "c0ffee1", RunScript(**QUICK), environment="staging")  # another environment
    time.sleep(1.0)  # all three have ended
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)["run_tests"] == "success" and emulator.count("PUT") == 0
    summary = xcoms(dag_run, "run_tests")["return_value"]
    assert summary["id"] == passed and summary["reused_run"] is True and summary["commit"] == "c0ffee1"
    assert xcoms(dag_run, "run_tests")["test_run_id"] == passed


@pytest.mark.parametrize("dag_id", ["e2e_reuse_commit", "e2e_reuse_commit_deferrable"])
def test_a_run_of_the_commit_still_going_is_waited_for(run_dag: Any, emulator: Emulator, dag_id: str) -> None:
    going = _run_of_commit(emulator, "c0ffee1", RunScript(queued_for=0.2, run_for=2.0))
    dag_run = run_dag(dag_id)
    assert task_states(dag_run)["run_tests"] == "success" and emulator.count("PUT") == 0
    assert xcoms(dag_run, "run_tests")["return_value"]["id"] == going


def test_a_commit_whose_run_failed_is_tested_again(run_dag: Any, emulator: Emulator) -> None:
    _run_of_commit(emulator, "c0ffee1", RunScript(outcome="failed", **QUICK))
    time.sleep(1.0)
    emulator.queue_runs(RunScript(**QUICK))
    dag_run = run_dag("e2e_reuse_commit")
    assert task_states(dag_run)["run_tests"] == "success" and emulator.count("PUT") == 1
    assert xcoms(dag_run, "run_tests")["return_value"].get("reused_run") is None
