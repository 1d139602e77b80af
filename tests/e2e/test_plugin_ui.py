"""The UI plugin in a real Airflow 3.3 deployment, and in a real browser.

Airflow's own processes (scheduler, dag-processor, triggerer, API server; tests/deployment_helpers.py)
run two DAGs against the emulator (another process): a nightly whose run has failed, snoozed and
flaky tests (a trigger operator, then a deferrable sensor), and a smoke DAG that passes. Then:

1. the API server (everyone admin, as a local deployment is) answers the plugin's routes: the
   tab's JSON names the failed, snoozed and flaky tests of each task's run; the API key appears
   in no response;
2. Debian's chromium (Playwright, as tests/e2e/test_ui_connection_form.py) opens the sensor's
   task instance, its "Empirical tests" tab, finds the test names in the iframe, filters them,
   opens a test's page in a new tab, and opens the project page from the Browse menu; each page
   is photographed (.artifacts/; docs/ui-plugin-*.png with UPDATE_DOCS_SCREENSHOT=1);
3. the API server is restarted with logins (Airflow's simple auth manager, narrowed per DAG):
   anonymous is 401, a user without access to the nightly DAG is 403 there (and on the project
   page), a forged path (a DAG the user may read, with the nightly's run and task) finds nothing.

Airflow 3.3 only (its UI's layout); skipped, with the reason, elsewhere or without chromium.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests import deployment_helpers as helpers
from tests.deployment_helpers import API_KEY, Deployment, EmulatorProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts"
NIGHTLY, OTHER = "empirical_plugin_nightly", "empirical_plugin_smoke"
FAILED, SNOOZED, FLAKY = "signs in with email", "pays with card", "removes an item"
RUN_FOR = 12.0  # a deferred wait resumes >= 10 s after deferring (apache/airflow #71580)
SHOTS = {"task": "ui-plugin-task.png", "project": "ui-plugin-project.png"}

DAGS = textwrap.dedent(
    '''
    """DAGs of tests/e2e/test_plugin_ui.py."""
    import pendulum
    from airflow.providers.common.compat.sdk import DAG

    from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
    from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

    START = pendulum.datetime(2026, 1, 1, tz="UTC")

    with DAG("empirical_plugin_nightly", schedule=None, start_date=START, catchup=False):
        trigger = EmpiricalTriggerTestRunOperator(task_id="trigger_tests", environment="production")
        EmpiricalTestRunSensor(
            task_id="wait_for_tests",
            test_run_id=trigger.output,
            deferrable=True,
            poke_interval=2,
            timeout=300,
        )

    with DAG("empirical_plugin_smoke", schedule=None, start_date=START, catchup=False):
        EmpiricalTriggerTestRunOperator(
            task_id="smoke_tests", environment="staging", wait_for_completion=True, poll_interval=2
        )
    '''
)


def _version() -> tuple[int, int]:
    major, minor = metadata.version("apache-airflow").split(".")[:2]
    return int(major), int(minor)


def _skip_loudly(why: str) -> None:
    print(f"\nPLUGIN DEPLOYMENT TIER NOT RUN: {why}", file=sys.stderr)
    pytest.skip(f"PLUGIN DEPLOYMENT TIER NOT RUN: {why}")


class Stack:
    def __init__(self, deployment: Deployment, emulator: EmulatorProcess) -> None:
        self.deployment, self.emulator = deployment, emulator
        self.runs: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.tokens: dict[str, str] = {}

    def path(self, dag_id: str, task_id: str, run_of: str | None = None) -> str:
        run_id = urllib.parse.quote(self.runs[run_of or dag_id], safe="")
        return f"/empirical/ti/{dag_id}/{run_id}/{task_id}"

    def get(self, path: str, token: str | None = None, accept: str = "application/json") -> tuple[int, Any]:
        headers = {"Accept": accept}
        if token is None and not self.tokens:
            token = self.deployment.token()  # everyone is admin until the restart with logins
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return helpers.http("GET", f"{self.deployment.url}{path}", headers=headers, timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if _version() < (3, 3):
        _skip_loudly(
            f"written for the Airflow 3.3 deployment and UI, this is {'.'.join(map(str, _version()))}"
        )
    workdir = tmp_path_factory.mktemp("plugin-deployment")
    dag_file = workdir / "empirical_plugin_dags.py"
    dag_file.write_text(DAGS)
    emulator = EmulatorProcess(workdir)
    deployment: Deployment | None = None
    try:
        started = time.monotonic()
        emulator.start()
        script = {"queued_for": 0.5, "run_for": RUN_FOR}
        emulator.control(
            "POST",
            "/_emulator/default-script",
            {
                **script,
                "environment": "production",
                "outcome": "failed",
                "total": 24,
                "failed_tests": [FAILED, SNOOZED],
                "snoozed_tests": [SNOOZED],
                "flaky_tests": [FLAKY],
            },
        )
        emulator.control("POST", "/_emulator/default-script", {**script, "environment": "staging"})
        emulator.control("POST", "/_emulator/switches", {"snooze_info_details": True})
        _history(emulator)
        deployment = Deployment(workdir / "airflow", emulator.url, dags=[dag_file])
        deployment.start()
        deployment.wait_for_dags([NIGHTLY, OTHER])
        result = Stack(deployment, emulator)
        for dag_id in (NIGHTLY, OTHER):
            deployment.unpause(dag_id)
            result.runs[dag_id] = deployment.trigger(dag_id)
        for dag_id in (NIGHTLY, OTHER):
            result.states[dag_id] = deployment.wait_for_run(dag_id, result.runs[dag_id], 180)
        print(f"\n[plugin] deployment up and both DAG runs finished in {time.monotonic() - started:.1f} s")
        yield result
    except BaseException:
        if deployment is not None:
            print(deployment.logs(), file=sys.stderr)
        raise
    finally:
        if deployment is not None:
            deployment.stop()
        emulator.stop()


def _history(emulator: EmulatorProcess, days: int = 14) -> None:
    """Runs of the last two weeks, started outside Airflow (Empirical's schedule), for the project page."""
    for day in range(days, 0, -1):
        for environment, failing in (("production", day % 4 == 0), ("staging", day % 6 == 0)):
            script: dict[str, Any] = {"queued_for": 0, "run_for": 0}
            if failing:
                script |= {"outcome": "failed", "total": 24, "failed_tests": [FAILED]}
            body = {"environment": environment, "script": script, "build": {"commit": f"{day:02d}c0ffee"}}
            run = emulator.control("POST", "/_emulator/runs/start", body)["test_run"]
            emulator.control("POST", f"/_emulator/runs/{run['id']}/age", {"seconds": day * 86400})


def test_the_runs_ended_as_scripted(stack: Stack) -> None:
    states = stack.deployment.task_states(NIGHTLY, stack.runs[NIGHTLY])
    assert states == {"trigger_tests": "success", "wait_for_tests": "failed"}, states  # a test failed
    assert stack.states[OTHER] == "success"


def test_the_tab_s_json_names_the_tests_of_each_task_s_run(stack: Stack) -> None:
    runs = []
    for task_id in ("trigger_tests", "wait_for_tests"):
        status, data = stack.get(stack.path(NIGHTLY, task_id))
        assert status == 200, data
        assert [t["name"] for t in data["tests"]["failed"]] == [FAILED]
        assert [t["name"] for t in data["tests"]["snoozed"]] == [SNOOZED]
        assert [t["name"] for t in data["tests"]["flaky"]] == [FLAKY]
        snooze = data["tests"]["snoozed"][0]["snooze"]
        assert snooze["until"] and snooze["description"].startswith("Scripted for test run")
        assert data["verdict"]["outcome"] == "failed"
        runs.append(data["test_run"]["id"])
    assert runs[0] == runs[1]
    status, data = stack.get(stack.path(OTHER, "smoke_tests"))
    assert status == 200 and data["verdict"]["passes"] is True and data["tests"]["failed"] == []


def test_the_api_key_is_in_no_response(stack: Stack) -> None:
    for path in (stack.path(NIGHTLY, "wait_for_tests") + "?status=all", "/empirical/project"):
        for accept in ("application/json", "text/html"):
            status, body = stack.get(path, accept=accept)
            assert status == 200, body
            assert API_KEY not in json.dumps(body)


# -- the browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from tests.e2e.test_ui_connection_form import CHROMIUM, CHROMIUM_ARGS, _ensure_chromium

    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _skip_loudly(f"the Python package `playwright` is not installed ({exc})")
    _ensure_chromium()
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except PlaywrightError as exc:
            _skip_loudly(f"{CHROMIUM} cannot be launched: {str(exc)[:1500]}")
        try:
            yield launched
        finally:
            launched.close()


def _shot(page: Any, name: str) -> None:
    picture = page.screenshot()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / SHOTS[name]).write_bytes(picture)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # refresh the README's pictures on purpose only
        (ROOT / "docs" / SHOTS[name]).write_bytes(picture)


@pytest.mark.browser
def test_a_user_opens_the_tab_and_finds_the_tests(stack: Stack, browser: Any) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        run_id = urllib.parse.quote(stack.runs[NIGHTLY], safe="")
        page.goto(f"{stack.deployment.url}/dags/{NIGHTLY}/runs/{run_id}/tasks/wait_for_tests")
        page.get_by_role("link", name="Empirical tests").click()
        frame = page.frame_locator("iframe[title='Empirical tests']")
        expect(frame.get_by_role("heading", name="Empirical test run")).to_be_visible()
        expect(frame.get_by_text("the task's pass policy fails")).to_be_visible()
        frame.get_by_role("link", name="All 3").click()
        for name in (FAILED, SNOOZED, FLAKY):
            expect(frame.get_by_role("link", name=name, exact=True)).to_be_visible()
        expect(frame.get_by_text("Scripted for test run", exact=False)).to_be_visible()
        _shot(page, "task")
        assert API_KEY not in page.content() and API_KEY not in frame.locator("html").inner_html()

        frame.get_by_role("link", name="Snoozed 1").click()
        expect(frame.get_by_role("link", name=SNOOZED, exact=True)).to_be_visible()
        expect(frame.get_by_role("link", name=FAILED, exact=True)).to_have_count(0)

        # Airflow's iframe has no allow-popups: the page opens Empirical's test page in a new tab itself
        with context.expect_page() as opened:
            frame.get_by_role("link", name=SNOOZED, exact=True).click()
        test_page = opened.value
        test_page.wait_for_load_state()
        assert test_page.url.startswith(stack.emulator.url) and "?test_id=" in test_page.url, test_page.url
        test_page.close()

        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Empirical").click()
        project = page.frame_locator("iframe[title='Empirical']")
        expect(project.get_by_role("heading", name="Empirical tests")).to_be_visible()
        expect(project.get_by_text("Pass rate, last 30 days")).to_be_visible()
        expect(project.get_by_role("heading", name="Production (production)")).to_be_visible()
        _shot(page, "project")
    except BaseException:
        if not page.is_closed():
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "ui-plugin-failure.png"), full_page=True)
        raise
    finally:
        context.close()


# -- logins: who may see what (last: the API server is restarted without everyone-is-admin) ----------

USERS = {"viewer": ("viewer", "viewer-pass-1d8e"), "outsider": ("viewer", "outsider-pass-7c2a")}


@pytest.fixture(scope="module")
def logins(stack: Stack) -> Stack:
    deployment = stack.deployment
    for component in ("scheduler", "dag-processor", "triggerer", "api-server"):
        deployment.stop_component(component)
    helpers.use_users(deployment.env, deployment.home, USERS, denied={"outsider": [NIGHTLY]})
    deployment.start(components=["api-server"], migrate=False)
    stack.tokens = {
        name: helpers.login(deployment.url, name, password) for name, (_, password) in USERS.items()
    }
    return stack


def test_anonymous_gets_401(logins: Stack) -> None:
    for path in (logins.path(NIGHTLY, "wait_for_tests"), "/empirical/project"):
        for accept in ("application/json", "text/html"):
            status, body = logins.get(path, token="", accept=accept)
            assert status == 401, (path, body)
            assert SNOOZED not in json.dumps(body)


def test_a_user_without_access_to_the_dag_gets_403(logins: Stack) -> None:
    outsider = logins.tokens["outsider"]
    status, body = logins.get(logins.path(NIGHTLY, "wait_for_tests"), token=outsider)
    assert status == 403 and SNOOZED not in json.dumps(body), body
    assert logins.get("/empirical/project", token=outsider)[0] == 403
    status, data = logins.get(logins.path(OTHER, "smoke_tests"), token=outsider)  # a DAG they may read
    assert status == 200 and data["verdict"]["passes"] is True
    status, data = logins.get(logins.path(NIGHTLY, "wait_for_tests"), token=logins.tokens["viewer"])
    assert status == 200 and [t["name"] for t in data["tests"]["snoozed"]] == [SNOOZED]


def test_a_forged_task_path_finds_nothing(logins: Stack) -> None:
    """The DAG in the path is what is authorized and what is read: another DAG's run and task under
    a DAG the user may read is no task instance."""
    forged = logins.path(OTHER, "wait_for_tests", run_of=NIGHTLY)
    for user in ("outsider", "viewer"):
        status, body = logins.get(forged, token=logins.tokens[user])
        assert status == 404 and "test_run" not in body, body
    status, body = logins.get(
        f"/empirical/ti/{OTHER}/..%2F{NIGHTLY}/wait_for_tests", token=logins.tokens["outsider"]
    )
    assert status == 404, body
