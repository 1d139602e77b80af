"""Figure 3: API requests for one run of D seconds polled every P seconds, in real DAG runs.

One child process (`dag_runs.py`) runs three bench DAGs with `dag.test()` against the
emulator (its own process): the operator waiting in the worker, the operator deferring to a
trigger, and trigger-then-sensor (deferrable). The emulator counts the requests of each DAG
run by time window. Budget: 1 PUT + ceil(D/P) + 2 GETs of the run, plus at most one list GET
per DAG run: the project's slug for dashboard links, learned once per task when the run answers
do not name it (the trigger-only task, which never reads the run).
"""

from __future__ import annotations

import json
import math

from common import API_KEY, BENCH, Figure, Row, child_env, make_home, run_child

DURATION = 6.0  # D: the run is queued 1 s, then runs 5 s
QUEUED = 1.0
POLL = 1.0  # P
DAGS = {
    "bench_operator_sync": "operator, wait_for_completion (sync)",
    "bench_operator_deferrable": "operator, wait_for_completion, deferrable",
    "bench_trigger_then_sensor": "trigger operator + deferrable sensor",
}


def run() -> Figure:
    from servers import Server

    home = make_home("api-economy")
    (home / "dags" / "bench_empirical_dags.py").symlink_to(BENCH / "dags" / "bench_empirical_dags.py")
    with (
        open(home / "server.log", "w") as server_log,
        Server("empirical", child_env(home), server_log) as server,
    ):
        conn = {
            "conn_type": "empirical",
            "host": server.url,
            "password": API_KEY,
            "extra": {"dashboard_url": server.url},
        }
        env = child_env(home, AIRFLOW_CONN_EMPIRICAL_DEFAULT=json.dumps(conn), BENCH_POLL_INTERVAL=str(POLL))
        args = [
            str(BENCH / "dag_runs.py"),
            "--dags",
            ",".join(DAGS),
            "--emulator",
            server.url,
            "--queued",
            str(QUEUED),
            "--run-for",
            str(DURATION - QUEUED),
        ]
        data = run_child(args, env, timeout=180, log=home / "dag-runs.log")
        counts = [server.stats(run["start"], run["end"]) for run in data["runs"]]
    budget_gets = math.ceil(DURATION / POLL) + 2
    fig = f"3. API economy (D={DURATION:g} s, P={POLL:g} s)"
    rows = []
    for run, count in zip(data["runs"], counts, strict=True):
        others = count["requests"] - count["puts"] - count["polls"]
        used = f"{count['puts']} PUT + {count['polls']} GET" + (f" + {others} other" if others else "")
        ok = (
            run["state"] == "success" and count["puts"] <= 1 and count["polls"] <= budget_gets and others <= 1
        )
        state = "" if run["state"] == "success" else f" (DAG run {run['state']}: {run['tasks']})"
        rows.append(
            Row(fig, DAGS[run["dag_id"]] + state, used, "-", f"<= 1 PUT + {budget_gets} GET + 1 list", ok)
        )
    return Figure(rows)


if __name__ == "__main__":
    from run_all import main

    raise SystemExit(main(["--only", "3"]))
