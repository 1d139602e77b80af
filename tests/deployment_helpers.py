"""A real Airflow 3 deployment for tests, and the Empirical emulator beside it.

`Deployment` runs Airflow's own processes (`airflow scheduler`, `dag-processor`,
`triggerer`, `api-server`; LocalExecutor, SQLite) in a throwaway AIRFLOW_HOME on a free
loopback port, with the example DAGs copied into its dags folder. `EmulatorProcess` is
`python -m airflow_provider_empirical.emulator` on another free port, driven through its
control API; `AIRFLOW_CONN_EMPIRICAL_DEFAULT` points at it (dashboard URL = emulator URL).

Every process gets its own process group; `stop()` SIGTERMs each group and SIGKILLs what
lingers, and is safe to call twice and from any path (fixtures call it in `finally`).
Only the standard library: the REST API is spoken with urllib.

Used by tests/e2e/test_deployment.py and tests/e2e/test_ui_connection_form.py. Manual use::

    python -m tests.deployment_helpers    # start everything, print the URLs, Ctrl-C stops
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_dags"
API_KEY = "emp-deploy-key-3b7e1d-do-not-leak"
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
# Seconds between two status checks in the examples (read from the env at parse time).
POLL_INTERVAL = "2"


# A home with a finished run of the smoke example, left by tests/e2e/test_deployment.py (its
# processes stopped) for the browser test to serve with just an API server: home, emulator_url,
# dag_id, run_id, task_id, url (the run's dashboard URL, as the extra link must show it).
FINISHED_SMOKE: dict[str, Any] = {}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> tuple[int, Any]:
    """(status, parsed JSON or text); HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s (last error: {last_error!r})")
        time.sleep(interval)


def stop_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a process's whole group (its children too), SIGKILL whatever lingers."""
    if process is None:
        return
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        break
    with contextlib.suppress(ProcessLookupError):  # the leader is gone; so must be its group
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=5)


def _spawn(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop_group() reaches its children
        )


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class EmulatorProcess:
    """The emulator as a separate process, as another machine's API would be."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "emulator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> EmulatorProcess:
        port_file = self.workdir / "emulator.port"
        port_file.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        argv = [sys.executable, "-m", "airflow_provider_empirical.emulator"]
        argv += ["--port-file", str(port_file), "--api-key", API_KEY]
        self.process = _spawn(argv, env, self.workdir, self.log)

        def port() -> str:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the emulator exited with {self.process.returncode}:\n{tail(self.log)}")
            return port_file.read_text().strip() if port_file.exists() else ""

        self.url = f"http://127.0.0.1:{wait_until('emulator port file', port, 30, 0.1)}"
        wait_until("emulator health", lambda: self.control("GET", "/_emulator/health")["ok"], 15, 0.1)
        return self

    def control(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = http(method, f"{self.url}{path}", body)
        if status != 200:
            raise RuntimeError(f"emulator {method} {path}: {status} {payload}")
        return payload

    def requests(self) -> list[dict[str, Any]]:
        return list(self.control("GET", "/_emulator/requests"))

    def runs(self) -> list[dict[str, Any]]:
        return list(self.control("GET", "/_emulator/runs"))

    def create_run(self, **body: Any) -> dict[str, Any]:
        """Start a run through the API itself, as another team or CI would."""
        status, payload = http(
            "PUT", f"{self.url}/api/test-runs", body, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        if status not in (200, 201):
            raise RuntimeError(f"emulator PUT /api/test-runs: {status} {payload}")
        data = payload.get("data", payload)
        return dict(data.get("test_run", data))

    def stop(self) -> None:
        stop_group(self.process)
        self.process = None


class Deployment:
    """Airflow's own processes on one throwaway AIRFLOW_HOME, spoken to over its REST API."""

    def __init__(self, home: Path, emulator_url: str, dags: Iterable[Path] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: tuple[str, float] | None = None
        dags_folder = home / "dags"
        dags_folder.mkdir(parents=True, exist_ok=True)
        for source in dags if dags is not None else sorted(EXAMPLES.glob("*.py")):
            shutil.copy(source, dags_folder / source.name)
        venv_bin = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        conn = {"conn_type": "empirical", "host": emulator_url, "password": API_KEY}
        conn["extra"] = {"dashboard_url": emulator_url}  # type: ignore[assignment]
        secret = secrets.token_urlsafe(32)
        env.update(
            {
                "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(home),
                # WAL mode is set after migrate. No longer lock timeout than sqlite3's 5 s: the API
                # server blocks its event loop while it waits (60 s stalled every request here).
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                # every process signs and checks the same task tokens
                "AIRFLOW__API_AUTH__JWT_SECRET": secret,
                "AIRFLOW__API__SECRET_KEY": secret,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW_CONN_EMPIRICAL_DEFAULT": json.dumps(conn),
                "EMPIRICAL_POLL_INTERVAL": POLL_INTERVAL,  # read by the examples at parse time
            }
        )
        self.env = env
        self.airflow = shutil.which("airflow", path=env["PATH"]) or "airflow"

    # -- processes --

    COMPONENTS: tuple[str, ...] = COMPONENTS
    START_TIMEOUT = 120.0
    MIGRATE_TIMEOUT = 300.0

    def start(
        self, components: Iterable[str] | None = None, timeout: float | None = None, migrate: bool = True
    ) -> Deployment:
        """Start the components; `migrate=False` reuses a home an earlier deployment migrated."""
        if migrate:
            self.migrate()
        for component in self.COMPONENTS if components is None else components:
            self.start_component(component)
        wait_until("the API server to be healthy", self._healthy, timeout or self.START_TIMEOUT)
        return self

    def start_component(self, name: str) -> subprocess.Popen[bytes]:
        process = _spawn([self.airflow, name], self.env, self.home, self.home / f"{name}.log")
        self.processes[name] = process
        return process

    def migrate(self) -> None:
        migrate = subprocess.run(
            [self.airflow, "db", "migrate"],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=self.MIGRATE_TIMEOUT,
            check=False,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{(migrate.stdout + migrate.stderr)[-3000:]}")
        self.tune_database()

    def tune_database(self) -> None:
        """Four processes and the task workers share one SQLite file: in WAL mode readers do not
        block the writer ("database is locked" otherwise, under a burst of concurrent runs)."""
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")

    def _healthy(self) -> bool:
        self.check_alive()
        status, health = http("GET", f"{self.url}/api/v2/monitor/health", timeout=5)
        return status == 200 and health["metadatabase"]["status"] == "healthy"

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {process.returncode}:\n{tail(self.home / f'{name}.log')}"
                )

    def stop_component(self, name: str) -> None:
        stop_group(self.processes.pop(name, None))

    def stop(self) -> None:
        # api-server last: the others may still report to it while shutting down
        for name in sorted(self.processes, key=lambda n: n == "api-server"):
            stop_group(self.processes[name])
        self.processes.clear()

    def logs(self, chars: int = 2500) -> str:
        return "\n".join(
            f"----- {log.name} (last {chars} chars) -----\n{tail(log, chars)}"
            for log in sorted(self.home.glob("*.log"))
        )

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{try_number}?full_content=true",
        )
        content = path.get("content") if isinstance(path, dict) else path
        return json.dumps(content) if not isinstance(content, str) else content

    # -- REST API --

    def token(self) -> str:
        """A JWT from the simple auth manager (with all-admins on, GET /auth/token hands one out)."""
        if self._token is None or time.monotonic() - self._token[1] > 300:
            status, payload = http("GET", f"{self.url}/auth/token")
            if status not in (200, 201):
                raise RuntimeError(f"GET /auth/token: {status} {payload}")
            self._token = (str(payload["access_token"]), time.monotonic())
        return self._token[0]

    def api(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201)) -> Any:
        """One REST call; retried when SQLite was locked (a 500 "Database error", rolled back)."""
        for attempt in range(4):
            status, payload = http(
                method,
                f"{self.url}/api/v2{path}",
                body,
                headers={"Authorization": f"Bearer {self.token()}"},
                timeout=60,
            )
            if status != 500 or "Database error" not in str(payload) or attempt == 3:
                break
            time.sleep(1 + attempt)
        if status not in tuple(ok):
            raise RuntimeError(f"{method} /api/v2{path}: {status} {payload}")
        return payload

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 90.0) -> None:
        wanted = set(dag_ids)

        def parsed() -> bool:
            self.check_alive()
            errors = self.api("GET", "/importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"import errors: {json.dumps(errors, indent=1)[:3000]}")
            found = {d["dag_id"] for d in self.api("GET", "/dags?limit=100")["dags"]}
            return wanted <= found

        wait_until(f"DAGs {sorted(wanted)} parsed", parsed, timeout)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A manual run with no logical date, as the UI's Trigger button makes on Airflow 3."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}"))

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """The final state of a DAG run; fails fast, with the task's log, if a task is retried."""

        def finished() -> str | None:
            self.check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            if state in ("success", "failed"):
                return str(state)
            for task_id, task_state in self.task_states(dag_id, run_id).items():
                if task_state == "up_for_retry":
                    raise AssertionError(
                        f"{dag_id} {run_id}: {task_id} is up for retry; its log:\n"
                        f"{self.task_log(dag_id, run_id, task_id)[-4000:]}"
                    )
            return None

        try:
            return str(wait_until(f"{dag_id} run {run_id} to finish", finished, timeout))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; task states: {self.task_states(dag_id, run_id)}") from None

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        payload = self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances")
        return {ti["task_id"]: ti for ti in payload["task_instances"]}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {task: ti["state"] for task, ti in self.task_instances(dag_id, run_id).items()}

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        payload = self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/links")
        return dict(payload.get("extra_links", payload))

    def xcoms(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """Every XCom of a task instance, by key, values deserialized."""
        base = f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries"
        keys = [entry["key"] for entry in self.api("GET", base)["xcom_entries"]]
        return {key: self.api("GET", f"{base}/{_q(key)}?deserialize=true")["value"] for key in keys}

    def mark(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        return self.api(
            "PATCH", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}", {"new_state": state}
        )

    def kill_component(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a component's whole process group at once (no graceful shutdown), as a crash would."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        """The human-in-the-loop request of a task (Airflow 3.1+): subject, body, options..."""
        return dict(
            self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/-1/hitlDetails")
        )

    def answer_hitl(self, dag_id: str, run_id: str, task_id: str, *options: str) -> dict[str, Any]:
        """Answer a human-in-the-loop request, as a person in the UI would."""
        path = f"/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/-1/hitlDetails"
        return dict(self.api("PATCH", path, {"chosen_options": list(options), "params_input": {}}))

    def upstream_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The asset events that triggered a DAG run."""
        payload = self.api("GET", f"/dags/{dag_id}/dagRuns/{_q(run_id)}/upstreamAssetEvents")
        return list(payload["asset_events"])

    def db_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the metadata database directly (SQLite), for what the REST API does not show."""
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db", timeout=30)) as db:
            return list(db.execute(sql, args).fetchall())

    def asset_events(self, uri: str) -> list[dict[str, Any]]:
        assets = self.api("GET", f"/assets?uri_pattern={_q(uri)}")["assets"]
        ids = [a["id"] for a in assets if a["uri"] == uri]
        if not ids:
            return []
        return list(self.api("GET", f"/assets/events?asset_id={ids[0]}&limit=100")["asset_events"])


# -- users and per-DAG access, for the UI plugin's access tests (tests/e2e/test_plugin_*.py) --

DENIED_DAGS_ENV = "EMPIRICAL_TEST_DENIED_DAGS"
DAG_DENYING_AUTH_MANAGER = "tests.deployment_helpers.DagDenyingAuthManager"


def use_users(
    env: dict[str, str],
    home: Path,
    users: dict[str, tuple[str, str]],
    denied: dict[str, list[str]] | None = None,
) -> None:
    """Set `env` (e.g. a Deployment's, before an API server starts) for logins instead of
    everyone-is-admin: `users` maps a username to (role, password) of Airflow's simple auth
    manager; with `denied`, `DagDenyingAuthManager` also keeps each named user from the listed
    DAGs (the simple auth manager alone grants a role on every DAG). Passwords are written to
    the simple auth manager's passwords file, as `airflow api-server` would generate them.
    """
    passwords = home / "plugin-test-passwords.json"
    passwords.write_text(json.dumps({name: password for name, (_, password) in users.items()}))
    env.update(
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{role}" for name, (role, _) in users.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        }
    )
    if denied is not None:
        env["AIRFLOW__CORE__AUTH_MANAGER"] = DAG_DENYING_AUTH_MANAGER
        env[DENIED_DAGS_ENV] = json.dumps(denied)


def login(url: str, username: str, password: str) -> str:
    """A JWT from the simple auth manager's login endpoint (``POST /auth/token``)."""
    status, payload = http("POST", f"{url}/auth/token", {"username": username, "password": password})
    if status not in (200, 201):
        raise RuntimeError(f"POST /auth/token as {username}: {status} {payload}")
    return str(payload["access_token"])


def _dag_denying_auth_manager() -> type:
    """Airflow's simple auth manager, except for the DAGs `EMPIRICAL_TEST_DENIED_DAGS` (JSON
    ``{"username": ["dag_id", ...]}``) denies a user: those DAGs, and "every DAG" (a check
    without a DAG id). Built on first use so that this module stays standard-library only."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    class DagDenyingAuthManager(SimpleAuthManager):
        def is_authorized_dag(
            self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
        ) -> bool:
            denied = json.loads(os.environ.get(DENIED_DAGS_ENV) or "{}").get(user.username)
            if denied and (details is None or not details.id or details.id in denied):
                return False
            return super().is_authorized_dag(
                method=method, user=user, access_entity=access_entity, details=details
            )

    DagDenyingAuthManager.__module__ = __name__
    return DagDenyingAuthManager


_BUILT: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """`DagDenyingAuthManager` (``[core] auth_manager = tests.deployment_helpers.DagDenyingAuthManager``)."""
    if name == "DagDenyingAuthManager":
        if name not in _BUILT:
            _BUILT[name] = _dag_denying_auth_manager()
        return _BUILT[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def main() -> int:  # pragma: no cover - manual use
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="empirical-deployment-"))
    emulator = EmulatorProcess(home).start()
    deployment = Deployment(home / "airflow", emulator.url)
    try:
        deployment.start()
        print(f"Airflow UI/API: {deployment.url}   emulator: {emulator.url}   home: {home}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        deployment.stop()
        emulator.stop()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
