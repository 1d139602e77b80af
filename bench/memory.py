"""Figure 5: peak RSS of a worker process running our operator vs a bare sleeping @task.

Two fresh processes (`dag_runs.py`), each with its own AIRFLOW_HOME whose dags folder holds only
the DAG file it runs, so neither imports the other's code:

- the operator with ``wait_for_completion=True`` (sync, polling every P s) on a D-second run
  served by the emulator (in its own process, so its memory is not counted);
- a bare ``@task`` that sleeps D seconds.

`dag.test()` runs the task inside the calling process, so its peak RSS (VmHWM via
``getrusage``) covers Airflow start-up, DAG parsing and the task itself. The difference is what
the operator adds (HTTP client, hook, connection, polling).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common import API_KEY, BENCH, Figure, Row, child_env, fmt, make_home, run_child

DURATION = 4.0
QUEUED = 0.5
POLL = 1.0


def run_dag(dag_id: str, dag_file: str, emulator_url: str | None = None) -> dict[str, Any]:
    """Run one DAG in a fresh process; returns the child's report."""
    home = make_home(f"memory-{dag_id}")
    (home / "dags" / dag_file).symlink_to(BENCH / "dags" / dag_file)
    extra = {"BENCH_POLL_INTERVAL": str(POLL), "BENCH_SLEEP": str(DURATION)}
    args = [str(BENCH / "dag_runs.py"), "--dags", dag_id]
    if emulator_url:
        conn = {"conn_type": "empirical", "host": emulator_url, "password": API_KEY}
        extra["AIRFLOW_CONN_EMPIRICAL_DEFAULT"] = json.dumps(conn)
        args += ["--emulator", emulator_url, "--queued", str(QUEUED), "--run-for", str(DURATION - QUEUED)]
    return run_child(args, child_env(home, **extra), timeout=120, log=Path(home / "dag-run.log"))


def run() -> Figure:
    from servers import Server

    home = make_home("memory-emulator")
    with (
        open(home / "server.log", "w") as server_log,
        Server("empirical", child_env(home), server_log) as server,
    ):
        ours = run_dag("bench_operator_sync", "bench_empirical_dags.py", server.url)
    bare = run_dag("bench_bare_sleep", "bench_sleep_dag.py")
    fig = f"5. Worker memory ({DURATION:g} s task)"
    states = {report["runs"][0]["dag_id"]: report["runs"][0]["state"] for report in (ours, bare)}
    ok_runs = all(state == "success" for state in states.values())
    ours_mib, bare_mib = ours["peak_rss_kb"] / 1024, bare["peak_rss_kb"] / 1024
    metric = "peak RSS, operator sync wait vs bare @task sleep"
    if not ok_runs:
        metric += f" (DAG runs: {states})"
    return Figure(
        [
            Row(
                fig,
                metric,
                fmt(ours_mib, "MiB"),
                f"@task sleep {fmt(bare_mib, 'MiB')}",
                "- (no target set)",
                None if ok_runs else False,
            ),
            Row(fig, "extra memory of the operator", fmt(ours_mib - bare_mib, "MiB"), "-", "-", None),
        ]
    )


if __name__ == "__main__":
    from run_all import main

    raise SystemExit(main(["--only", "5"]))
