"""The demo: a real Airflow DAG run of `empirical_nightly_regression` against Empirical.

By default it starts the local emulator on a free loopback port and points
`empirical_default` at it. With EMPIRICAL_API_KEY set it uses the real service instead
(EMPIRICAL_API_URL, EMPIRICAL_PROJECT_ID optional), and first prints the contract probe's
report (docs/contract-probe.md): whether the real answers match what the provider reads.
Airflow runs on a throwaway AIRFLOW_HOME (SQLite); its own log goes to a file, and a short
result is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "empirical_nightly_regression"


def start_emulator(home: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    key = "demo-key-" + os.urandom(6).hex()
    port_file = home / "emulator.port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_empirical.emulator",
            "--port",
            "0",
            "--api-key",
            key,
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.time() + 15
    while not port_file.exists():
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise SystemExit("the emulator did not start")
        time.sleep(0.05)
    return process, f"http://127.0.0.1:{port_file.read_text().strip()}", key


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="empirical-demo-"))
    emulator = None
    if os.environ.get("EMPIRICAL_API_KEY"):
        url = os.environ.get("EMPIRICAL_API_URL", "https://api.empirical.run")
        project_id = os.environ.get("EMPIRICAL_PROJECT_ID")
        extra = {"project_id": project_id} if project_id else {}
        key = os.environ["EMPIRICAL_API_KEY"]
        conn = {"conn_type": "empirical", "host": url, "password": key, "extra": extra}
        target = f"the Empirical service at {url}"
    else:
        emulator, url, key = start_emulator(home)
        conn = {"conn_type": "empirical", "host": url, "password": key, "extra": {"dashboard_url": url}}
        target = f"the local emulator at {url}"
    try:
        os.environ.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW_CONN_EMPIRICAL_DEFAULT": json.dumps(conn),
                "EMPIRICAL_POLL_INTERVAL": os.environ.get("EMPIRICAL_POLL_INTERVAL", "1"),
            }
        )
        if emulator is None:
            print_probe_report()
        print(f"Running DAG {DAG_ID!r} in Airflow against {target} ...", flush=True)
        return run_dag(home)
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(timeout=10)


def print_probe_report() -> None:
    """Against the real service, show first whether its answers match what the provider reads."""
    print("Checking the Empirical API contract (read-only, see docs/contract-probe.md) ...", flush=True)
    code = subprocess.call([sys.executable, "-m", "airflow_provider_empirical.probe"])
    print(f"Contract probe exit code {code}; continuing with the DAG run.\n", flush=True)


def run_dag(home: Path) -> int:
    import contextlib
    import logging

    sys.path.insert(0, str(ROOT))
    from tests.airflow_helpers import load_dags, task_states, xcoms

    log_file = home / "airflow-demo.log"
    started = time.monotonic()
    with open(log_file, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        logging.basicConfig(stream=log, force=True)
        dag_run = load_dags(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag(DAG_ID).test()

    states = task_states(dag_run)
    summary = xcoms(dag_run, "wait_for_tests").get("return_value") or {}
    trigger = xcoms(dag_run, "trigger_tests")
    link = xcoms(dag_run, "wait_for_tests").get("_link_EmpiricalTestRunLink") or trigger.get("test_run_url")
    print(f"DAG run {dag_run.run_id}: {dag_run.state} in {time.monotonic() - started:.1f} s")
    for task_id, state in states.items():
        print(f"  {task_id:<16} {state}")
    if summary:
        print(
            f"Test run {summary['id']}: {summary['state']} - {summary.get('success_count')} passed, "
            f"{summary.get('failed_count')} failed, {summary.get('flaky_count')} flaky, "
            f"{summary.get('skipped_count')} skipped in {(summary.get('duration') or 0) / 1000:.1f} s"
        )
    else:
        print(f"Test run {trigger.get('test_run_id')}: no summary (see {log_file})")
    print(f"Extra link 'Empirical test run': {link}")
    print(f"Airflow log: {log_file}")
    return 0 if str(dag_run.state) == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
