"""What users see of the provider in the Airflow 3 UI, in a real browser.

1. The Empirical connection form: drives Debian's chromium with Playwright through Admin ->
   Connections -> Add, checks the labels, placeholders, extra fields and hidden fields that
   `get_provider_info()` declares, saves a connection and reads it back through the REST API
   and the metadata database. Screenshot of the filled form: .artifacts/connection-form.png.
2. The "Empirical test run" extra link on a finished task instance of the smoke example
   (`empirical_post_deploy_smoke`, run by a real scheduler and triggerer): opens the task,
   its Details tab, and finds the link with the run's dashboard URL. Screenshot:
   .artifacts/extra-link.png.

Both are served by one `airflow api-server` (simple auth manager, everyone admin) on a
throwaway AIRFLOW_HOME (tests/deployment_helpers.py): the home tests/e2e/test_deployment.py left
when it ran in the same session, else a deployment started here to run the smoke example.
docs/connection-form.png and docs/extra-link.png are refreshed only when
UPDATE_DOCS_SCREENSHOT=1.

Needs: `pip install playwright` (no browser download) and Debian's chromium
(`scripts/install-browser.sh`). Skipped, with the reason, only when those cannot be had.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.deployment_helpers import FINISHED_SMOKE, Deployment, EmulatorProcess

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        int(metadata.version("apache-airflow").split(".")[0]) < 3,
        reason="the Airflow 3 UI (airflow api-server); Airflow 2 has the Flask webserver instead",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / ".artifacts"
SCREENSHOT = ARTIFACTS / "connection-form.png"
DOCS_SCREENSHOT = ROOT / "docs" / "connection-form.png"

CONN_ID = "empirical_ui"
API_URL = "https://api.empirical.run"
API_KEY = "emp-ui-form-key-5d81e0-do-not-leak"
SERVER_START_TIMEOUT = 120.0  # seconds; healthy after ~8-10 s here
SMOKE = "empirical_post_deploy_smoke"
EXTRA_LINK_SHOT = ARTIFACTS / "extra-link.png"
DOCS_EXTRA_LINK_SHOT = ROOT / "docs" / "extra-link.png"


def _skip_loudly(why: str) -> None:
    message = f"BROWSER TEST NOT RUN: {why}"
    print(f"\n{message}", file=sys.stderr)
    pytest.skip(message)


def _ensure_chromium() -> None:
    """Debian's chromium, installed by scripts/install-browser.sh when it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        script = ROOT / "scripts" / "install-browser.sh"
        if os.geteuid() != 0:  # never wait on a sudo prompt from inside a test
            _skip_loudly(f"{CHROMIUM} is missing; install it with `sudo bash {script}`")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            done = subprocess.run(
                ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _skip_loudly(f"{CHROMIUM} is missing and {script} could not install it: {exc!r}")
        if done.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
            tail = (done.stdout + done.stderr)[-1500:]
            _skip_loudly(f"{CHROMIUM} is still missing after {script} (exit {done.returncode}):\n{tail}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _skip_loudly(f"the Python package `playwright` is not installed ({exc}): `pip install playwright`")
    _ensure_chromium()
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except PlaywrightError as exc:
            _skip_loudly(f"{CHROMIUM} is installed but Playwright cannot launch it: {str(exc)[:1500]}")
        try:
            yield launched
        finally:
            launched.close()


def _get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return json.load(response)


class ApiServer:
    def __init__(self, home: Path, env: dict[str, str], url: str, smoke: dict[str, Any]) -> None:
        self.home, self.env, self.url = home, env, url
        self.smoke = smoke  # a finished run of the smoke example: dag_id, run_id, task_id, url

    def token(self) -> str:
        """A JWT from the simple auth manager (with all-admins on, GET /auth/token hands one out)."""
        return str(_get_json(f"{self.url}/auth/token")["access_token"])

    def python(self, code: str) -> str:
        """Run Python in the server's environment (its AIRFLOW_HOME and database)."""
        done = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", code],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout


@pytest.fixture(scope="module")
def api_server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """`airflow api-server` on a home holding a finished run of the smoke example.

    After tests/e2e/test_deployment.py (same session) that is its home, served by a fresh API
    server alone. Otherwise a whole deployment (scheduler, dag-processor, triggerer, API
    server, emulator) runs the smoke example once, then all but the API server stop.
    """
    started = time.monotonic()
    emulator: EmulatorProcess | None = None
    deployment: Deployment | None = None
    try:
        if FINISHED_SMOKE:
            smoke = dict(FINISHED_SMOKE)
            deployment = Deployment(smoke["home"], smoke["emulator_url"])
            deployment.start(components=["api-server"], timeout=SERVER_START_TIMEOUT, migrate=False)
        else:
            workdir = tmp_path_factory.mktemp("ui-deployment")
            emulator = EmulatorProcess(workdir).start()
            emulator.control("POST", "/_emulator/default-script", {"queued_for": 0.5, "run_for": 12})
            deployment = Deployment(workdir / "airflow", emulator.url)
            deployment.start(timeout=SERVER_START_TIMEOUT)
            deployment.wait_for_dags([SMOKE])
            deployment.unpause(SMOKE)
            run_id = deployment.trigger(SMOKE)
            state = deployment.wait_for_run(SMOKE, run_id, 120)
            assert state == "success", deployment.task_states(SMOKE, run_id)
            url = deployment.xcoms(SMOKE, run_id, "smoke_tests")["test_run_url"]
            smoke = {"dag_id": SMOKE, "run_id": run_id, "task_id": "smoke_tests", "url": url}
            for component in ("scheduler", "dag-processor", "triggerer"):
                deployment.stop_component(component)
        print(f"\n[ui] api-server ready on {deployment.url} after {time.monotonic() - started:.1f} s")
        yield ApiServer(deployment.home, deployment.env, deployment.url, smoke)
    except BaseException:
        if deployment is not None:
            print(deployment.logs(), file=sys.stderr)
        raise
    finally:
        if deployment is not None:
            deployment.stop()
        if emulator is not None:
            emulator.stop()


@pytest.fixture
def page(browser: Any, api_server: ApiServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()


def _side_by_side(page: Any, shots: list[tuple[str, bytes]]) -> bytes:
    """One picture of both sections of the dialog (the form opens one section at a time)."""
    cells = "".join(
        "<figure style='margin:0'>"
        f"<figcaption style='margin:0 0 6px 2px;color:#1a202c'>{caption}</figcaption>"
        f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}'></figure>"
        for caption, png in shots
    )
    page.set_content(
        "<html><body style='margin:0;background:#e2e8f0;font:15px sans-serif'>"
        "<div id=grid style='display:inline-flex;gap:16px;padding:16px;align-items:flex-start'>"
        f"{cells}</div></body></html>"
    )
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    return bytes(page.locator("#grid").screenshot())


def test_connection_form_shows_empirical_fields_and_saves_them(page: Any, api_server: ApiServer) -> None:
    started = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "connection-form-failure.png").unlink(missing_ok=True)
    try:
        _drive_form(page, api_server)
    except BaseException:
        if not page.is_closed():
            page.screenshot(path=str(ARTIFACTS / "connection-form-failure.png"), full_page=True)
        raise
    print(f"[ui] browser part took {time.monotonic() - started:.1f} s")


def _section(dialog: Any, title: str) -> Any:
    """The body of one of the form's accordion sections (one is open at a time).

    Found through its trigger button, not its role: Airflow 3.3 puts the title in the
    element ids, and "Extra Fields" has a space, which breaks the region's aria-labelledby.
    """
    item = dialog.locator("[data-part='item']").filter(
        has=dialog.page.get_by_role("button", name=title, exact=True)
    )
    return item.locator("[data-part='item-content']")


def _drive_form(page: Any, server: ApiServer) -> None:
    from playwright.sync_api import expect

    # Admin -> Connections -> Add Connection, as a user clicks through.
    page.goto(f"{server.url}/")
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name="Add Connection")).to_be_visible()

    dialog.get_by_label("Connection ID").fill(CONN_ID)
    dialog.get_by_role("combobox", name="Connection Type").fill("Empirical")
    page.get_by_role("option", name="Empirical", exact=True).click()

    # Standard fields: host and password relabelled with placeholders; login/schema/port hidden.
    standard = _section(dialog, "Standard Fields")
    expect(standard).to_be_visible()
    labels = [text.strip() for text in standard.locator("label").all_inner_texts()]
    assert labels == ["Description", "API URL", "API key"], labels
    host = standard.get_by_label("API URL")
    key = standard.get_by_label("API key")
    expect(host).to_have_attribute("placeholder", "https://api.empirical.run")
    expect(key).to_have_attribute("placeholder", "API key from the Empirical dashboard")
    expect(key).to_have_attribute("type", "password")
    for hidden in ("login", "schema", "port"):
        expect(dialog.locator(f"[name='{hidden}']")).to_have_count(0)
    for label in ("Host", "Password", "Login", "Schema", "Port"):
        expect(dialog.get_by_text(label, exact=True)).to_have_count(0)
    host.fill(API_URL)
    key.fill(API_KEY)
    expect(key).to_have_value(API_KEY)
    key.blur()  # no focus ring in the picture
    standard_png = dialog.screenshot()

    # Extra fields from conn-fields: labels, descriptions, number inputs, the timeout default.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    extra = _section(dialog, "Extra Fields")
    expect(extra).to_be_visible()
    labels = [text.strip() for text in extra.locator("label").all_inner_texts()]
    assert labels == ["Project ID", "Timeout (seconds)", "Dashboard URL", "Project slug", "CA bundle"], labels
    expect(extra).to_contain_text("Empirical project to act on, sent as the x-project-id header.")
    expect(extra).to_contain_text("Timeout of each HTTP request to the Empirical API.")
    expect(extra).to_contain_text("Base of the links to test runs (default https://dash.empirical.run).")
    project_id = extra.get_by_label("Project ID")
    timeout = extra.get_by_label("Timeout (seconds)")
    expect(project_id).to_have_attribute("role", "spinbutton")
    expect(timeout).to_have_attribute("role", "spinbutton")
    expect(project_id).to_have_value("")
    expect(timeout).to_have_value("30")  # schema default
    # Airflow 3.3 renders no placeholders for extra fields (hook_meta drops them), and its
    # Dashboard URL <label> is not tied to the input (for= != id): find that input by name.
    dashboard = extra.locator("input[name='element_dashboard_url']")
    expect(dashboard).to_be_visible()
    project_id.fill("7")
    timeout.fill("20")
    expect(project_id).to_have_value("7")
    expect(timeout).to_have_value("20")
    timeout.blur()
    extra_png = dialog.screenshot()

    # What the form will store, as its JSON view shows it.
    dialog.get_by_role("button", name="Extra Fields JSON").click()
    expect(_section(dialog, "Extra Fields JSON")).to_contain_text('"project_id": 7')

    picture = _side_by_side(
        page.context.new_page(), [("Standard fields", standard_png), ("Extra fields", extra_png)]
    )
    SCREENSHOT.write_bytes(picture)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # refresh the README's picture on purpose only
        DOCS_SCREENSHOT.write_bytes(picture)

    dialog.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Connection has been successfully created.")).to_be_visible()
    expect(page.get_by_role("cell", name=CONN_ID, exact=True)).to_be_visible()

    # Read back through the REST API: the key is redacted there, the extras keep their types.
    stored = _get_json(f"{server.url}/api/v2/connections/{CONN_ID}", token=server.token())
    assert stored["conn_type"] == "empirical"
    assert stored["host"] == API_URL
    assert stored["login"] is None and stored["schema"] is None and stored["port"] is None
    assert stored["password"] == "***"
    assert API_KEY not in json.dumps(stored)
    extra_json = json.loads(stored["extra"])
    # Numbers stay JSON numbers; an extra field left empty is stored as null (the hook's default applies).
    assert extra_json == {
        "project_id": 7,
        "timeout": 20,
        "dashboard_url": None,
        "project_slug": None,
        "ca_bundle": None,
    }, extra_json
    assert type(extra_json["project_id"]) is int and type(extra_json["timeout"]) is int

    # And from the metadata database: encrypted at rest, and the provider's own parsing of it.
    code = f"""
import json
from sqlalchemy import select
from airflow.models.connection import Connection
from airflow.utils.session import create_session
from airflow_provider_empirical.config import ApiConfig
with create_session() as session:
    conn = session.scalar(select(Connection).where(Connection.conn_id == {CONN_ID!r}))
    cfg = ApiConfig.from_connection(conn.conn_id, conn.host, conn.port, conn.password, conn.extra_dejson)
    print(json.dumps({{
        "is_encrypted": conn.is_encrypted,
        "raw_password_is_plain": conn._password == {API_KEY!r},
        "api_key_matches": cfg.api_key == {API_KEY!r},
        "base_url": cfg.base_url, "project_id": cfg.project_id, "timeout": cfg.timeout,
        "dashboard_url": cfg.dashboard_url,
    }}))
"""
    parsed = json.loads(server.python(code).strip().splitlines()[-1])
    assert parsed == {
        "is_encrypted": True,
        "raw_password_is_plain": False,
        "api_key_matches": True,
        "base_url": API_URL,
        "project_id": 7,
        "timeout": 20.0,
        "dashboard_url": "https://dash.empirical.run",
    }, parsed


def test_finished_smoke_task_shows_the_empirical_test_run_link(page: Any, api_server: ApiServer) -> None:
    """A user opens the task of a finished smoke run, then its Details tab, and clicks the link."""
    from playwright.sync_api import expect

    if tuple(int(part) for part in metadata.version("apache-airflow").split(".")[:2]) < (3, 3):
        _skip_loudly("the extra-link walk-through is written for the Airflow 3.3 UI (its task page layout)")

    smoke = api_server.smoke
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.goto(f"{api_server.url}/dags/{smoke['dag_id']}/runs/{smoke['run_id']}/tasks/{smoke['task_id']}")
        page.get_by_role("link", name="Details", exact=True).click()
        expect(page.get_by_text("Extra Links", exact=True)).to_be_visible()
        link = page.get_by_role("link", name="Empirical test run", exact=True)
        expect(link).to_be_visible()
        expect(link).to_have_attribute("href", smoke["url"])
        assert smoke["url"].rstrip("/").split("/")[-1].isdigit(), smoke["url"]  # .../test-runs/<id>
        picture = page.screenshot()
    except BaseException:
        if not page.is_closed():
            page.screenshot(path=str(ARTIFACTS / "extra-link-failure.png"), full_page=True)
        raise
    EXTRA_LINK_SHOT.write_bytes(picture)
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        DOCS_EXTRA_LINK_SHOT.write_bytes(picture)
