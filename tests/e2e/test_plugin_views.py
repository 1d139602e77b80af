"""The UI plugin's routes in Airflow's own API app, on task instances of real DAG runs (dag.test()).

Airflow's `create_app()` builds the API server's app in this process: it finds the plugin
through its `airflow.plugins` entry point and mounts its app under /empirical, with Airflow's
simple auth manager (logins, no everyone-is-admin) narrowed per DAG by
`tests.deployment_helpers.DagDenyingAuthManager`. The DAG runs are real `dag.test()` runs
against the emulator over HTTP; the routes read their task instances, XComs and rendered fields
from the metadata database. The deployment tier and the browser: tests/e2e/test_plugin_ui.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from tests.conftest import API_KEY, conn_json
from tests.deployment_helpers import DAG_DENYING_AUTH_MANAGER, DENIED_DAGS_ENV

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        tuple(int(part) for part in metadata.version("apache-airflow").split(".")[:2]) < (3, 1),
        reason="the plugin's views need Airflow 3.1+ (external views); older versions: test_plugin_versions",
    ),
]

OPERATOR_DAG = "e2e_operator_sync"  # trigger operator that waits (tests/dags/empirical_e2e_dags.py)
SENSOR_DAG = "e2e_sensor_poke"  # trigger operator + sensor given the run id
FAILED, SNOOZED, FLAKY = "signs in with email", "pays with card", "removes an item"
SCRIPT = RunScript(
    queued_for=0.1,
    run_for=0.5,
    outcome="failed",
    total=24,
    failed_tests=[FAILED, SNOOZED],
    snoozed_tests=[SNOOZED],
    flaky_tests=[FLAKY],
)


class Scene:
    def __init__(self, client: Any, emulator: Emulator, runs: dict[str, Any], tokens: dict[str, str]) -> None:
        self.client, self.emulator, self.runs, self.tokens = client, emulator, runs, tokens

    def get(self, path: str, user: str | None = "viewer", accept: str = "application/json") -> Any:
        headers = {"Accept": accept}
        if user is not None:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        return self.client.get(path, headers=headers)

    def ti_path(self, dag_id: str, task_id: str, run_dag: str | None = None) -> str:
        return f"/empirical/ti/{dag_id}/{self.runs[run_dag or dag_id].run_id}/{task_id}"


@pytest.fixture(scope="module")
def scene(dagbag: Any, _emulator: Emulator) -> Iterator[Scene]:
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    from airflow_provider_empirical.plugins import fetch

    saved = dict(os.environ)
    _emulator.reset()
    os.environ.update(
        {
            "AIRFLOW_CONN_EMPIRICAL_DEFAULT": conn_json(_emulator),
            "AIRFLOW__CORE__AUTH_MANAGER": DAG_DENYING_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "viewer:viewer,outsider:viewer",
            "AIRFLOW__API_AUTH__JWT_SECRET": "plugin-views-test-secret-" + "0123456789abcdef" * 4,
            DENIED_DAGS_ENV: json.dumps({"outsider": [OPERATOR_DAG]}),
        }
    )
    fetch.forget()
    try:
        runs = {}
        for dag_id in (OPERATOR_DAG, SENSOR_DAG):
            _emulator.queue_runs(SCRIPT)
            runs[dag_id] = dagbag.get_dag(dag_id).test()
        purge_cached_app()
        app = create_app(apps="core")
        manager = get_auth_manager()
        tokens = {
            name: manager.generate_jwt(SimpleAuthManagerUser(username=name, role="viewer"))
            for name in ("viewer", "outsider")
        }
        with TestClient(app) as client:
            yield Scene(client, _emulator, runs, tokens)
    finally:
        purge_cached_app()
        fetch.forget()
        os.environ.clear()
        os.environ.update(saved)
        _emulator.reset()


def test_the_plugin_is_registered_by_its_entry_point(scene: Scene) -> None:
    status = scene.client.get(
        "/api/v2/plugins", headers={"Authorization": f"Bearer {scene.tokens['viewer']}"}
    )
    assert status.status_code == 200, status.text
    (plugin,) = [p for p in status.json()["plugins"] if p["name"] == "empirical"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/empirical"]
    views = {view["name"]: view for view in plugin["external_views"]}
    assert views["Empirical tests"]["destination"] == "task_instance"
    assert views["Empirical"]["destination"] == "nav"


def test_the_operator_task_shows_its_failed_snoozed_and_flaky_tests(scene: Scene) -> None:
    answer = scene.get(scene.ti_path(OPERATOR_DAG, "run_tests"))
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["task"]["test_run_found_by"] == "XCom test_run_id"
    assert data["test_run"]["state"] == "ended"
    assert [t["name"] for t in data["tests"]["failed"]] == [FAILED]
    assert [t["name"] for t in data["tests"]["snoozed"]] == [SNOOZED]
    assert [t["name"] for t in data["tests"]["flaky"]] == [FLAKY]
    assert data["counts"] | {"counting_basis": None} == {
        "total": 24,
        "passed": 21,
        "failed": 2,
        "failed_counting": 1,
        "counting_basis": None,
        "snoozed": 1,
        "flaky": 1,
        "skipped": 0,
    }
    assert data["verdict"]["outcome"] == "failed" and data["verdict"]["passes"] is False
    assert "1 test(s) failed" in data["verdict"]["reason"]
    run_url = data["links"]["run"]
    assert run_url.endswith(f"/test-runs/{data['test_run']['id']}")
    assert all(t["url"].startswith(run_url + "?test_id=") for kind in data["tests"].values() for t in kind)


def test_the_sensor_task_finds_its_run_through_its_rendered_test_run_id(scene: Scene) -> None:
    data = scene.get(scene.ti_path(SENSOR_DAG, "wait_for_tests")).json()
    trigger = scene.get(scene.ti_path(SENSOR_DAG, "trigger_tests")).json()
    assert data["test_run"]["id"] == trigger["test_run"]["id"]
    assert data["task"]["operator"] == "EmpiricalTestRunSensor"
    assert data["task"]["test_run_found_by"] == "rendered field test_run_id"  # it failed: no return_value
    assert [t["name"] for t in data["tests"]["snoozed"]] == [SNOOZED]


def test_html_is_the_default_and_names_every_test(scene: Scene) -> None:
    path = scene.ti_path(OPERATOR_DAG, "run_tests")
    page = scene.get(path + "?status=all", accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    for name in (FAILED, SNOOZED, FLAKY):
        assert name in page.text
    snoozed = scene.get(path + "?status=snoozed", accept="text/html").text
    assert SNOOZED in snoozed and FAILED not in snoozed.split("<h2>Tests</h2>")[1]


def test_a_finished_run_costs_one_call_then_comes_from_memory(scene: Scene) -> None:
    from airflow_provider_empirical.plugins import fetch

    fetch.forget()
    before = scene.emulator.count("GET", "/api/test-runs/")
    path = scene.ti_path(OPERATOR_DAG, "run_tests")
    first = scene.get(path).json()
    for _ in range(5):
        again = scene.get(path).json()
    assert scene.emulator.count("GET", "/api/test-runs/") - before == 1
    assert first["cached"] is False and again["cached"] is True
    assert again["tests"] == first["tests"]


def test_nobody_anonymous(scene: Scene) -> None:
    for path in (scene.ti_path(OPERATOR_DAG, "run_tests"), "/empirical/project"):
        answer = scene.get(path, user=None)
        assert answer.status_code == 401, (path, answer.text)
        assert "signs in" not in answer.text


def test_a_user_without_access_to_the_dag_gets_403(scene: Scene) -> None:
    before = scene.emulator.count()
    answer = scene.get(scene.ti_path(OPERATOR_DAG, "run_tests"), user="outsider")
    assert answer.status_code == 403, answer.text
    assert scene.get("/empirical/project", user="outsider").status_code == 403
    # the same user reads the other DAG
    assert scene.get(scene.ti_path(SENSOR_DAG, "wait_for_tests"), user="outsider").status_code == 200
    assert scene.emulator.count() - before <= 1  # only the allowed view may have asked Empirical


def test_a_forged_task_path_finds_nothing(scene: Scene) -> None:
    """A DAG the user may read, with the run and task of one they may not: 404, nothing shown."""
    forged = f"/empirical/ti/{SENSOR_DAG}/{scene.runs[OPERATOR_DAG].run_id}/run_tests"
    for user in ("outsider", "viewer"):
        answer = scene.get(forged, user=user)
        assert answer.status_code == 404, answer.text
        assert "test_run" not in answer.json()
    assert scene.get(f"/empirical/ti/{SENSOR_DAG}/no-such-run/wait_for_tests").status_code == 404
    assert scene.get(scene.ti_path(SENSOR_DAG, "wait_for_tests") + "?map_index=x").status_code == 400
    # no route takes a run id or a connection id, and nothing else is served
    for path in ("/empirical/api/test-runs/1", "/empirical/ti/1", "/empirical/test-runs/1?conn_id=x"):
        assert scene.get(path).status_code == 404


def test_the_project_page(scene: Scene) -> None:
    data = scene.get("/empirical/project").json()
    production = next(env for env in data["environments"] if env["slug"] == "production")
    assert {run["outcome"] for run in production["runs"]} == {"failed"}
    assert data["pass_rate"]["source"] == "analytics"
    assert len(data["pass_rate"]["days"]) == 30
    html = scene.get("/empirical/project", accept="text/html").text
    assert "<svg" in html and "Production" in html


def test_the_api_key_reaches_no_response(scene: Scene) -> None:
    paths = [
        scene.ti_path(OPERATOR_DAG, "run_tests"),
        scene.ti_path(SENSOR_DAG, "wait_for_tests"),
        scene.ti_path(OPERATOR_DAG, "run_tests") + "?status=all",
        "/empirical/project",
    ]
    for path in paths:
        for accept in ("application/json", "text/html"):
            answer = scene.get(path, accept=accept)
            assert API_KEY not in answer.text
            assert API_KEY not in json.dumps(dict(answer.headers))
