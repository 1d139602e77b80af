"""Figure 3: API requests for one run of D seconds polled every P seconds, in real DAG runs.

One child process (`dag_runs.py`) runs three bench DAGs with `dag.test()` against the
emulator (its own process): the operator waiting in the worker, the operator deferring to a
trigger, and trigger-then-sensor (deferrable). The emulator counts the requests of each DAG
run by time window. Budget: 1 PUT + ceil(D/P) + 2 GETs of the run, plus at most two other
GETs per DAG run: the project (its slug for dashboard links, learned once per task when the run
answers do not name it) and the environment check before the trigger (one list per task).

A second child resolves 200 test files (prefixes of the emulator catalogue's files) into
test ids the way the operator does: one walk of the active test cases, not a call per file
(target: at most ceil(cases / 100) calls).
"""

from __future__ import annotations

import argparse
import json
import math

from common import API_KEY, BENCH, Figure, Row, child_env, make_home, run_child, write_result

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
        choice = run_child(
            [str(BENCH / "api_economy.py"), "choose", "--url", server.url],
            env,
            timeout=120,
            log=home / "choose.log",
        )
    budget_gets = math.ceil(DURATION / POLL) + 2
    fig = f"3. API economy (D={DURATION:g} s, P={POLL:g} s)"
    rows = []
    for run, count in zip(data["runs"], counts, strict=True):
        others = count["requests"] - count["puts"] - count["polls"]
        used = f"{count['puts']} PUT + {count['polls']} GET" + (f" + {others} other" if others else "")
        ok = (
            run["state"] == "success" and count["puts"] <= 1 and count["polls"] <= budget_gets and others <= 2
        )
        state = "" if run["state"] == "success" else f" (DAG run {run['state']}: {run['tasks']})"
        rows.append(
            Row(fig, DAGS[run["dag_id"]] + state, used, "-", f"<= 1 PUT + {budget_gets} GET + 2 other", ok)
        )
    budget = math.ceil(choice["cases"] / 100)
    rows.append(
        Row(
            fig,
            f"choosing {choice['files']} test files ({choice['cases']} active cases, {choice['ids']} ids)",
            f"{choice['calls']} test-case call(s)",
            f"a call per file: {choice['files']}",
            f"<= ceil(cases / 100) = {budget}",
            choice["calls"] <= budget and choice["ids"] > 0,
        )
    )
    return Figure(rows)


def choose(url: str, result: str) -> None:
    """Child: resolve 200 file prefixes of the catalogue, counting the test-case requests it took."""
    import logging

    import httpx

    from airflow_provider_empirical import choosing
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

    def calls() -> int:
        requests = httpx.get(f"{url}/_emulator/requests").json()
        return sum(1 for r in requests if r["path"] == "/api/v2/test-cases")

    paths = sorted({case["file_path"] for case in EmpiricalHook().test_case_catalogue().cases})
    prefixes = sorted({path[:n] for path in paths for n in range(1, len(path) + 1)})
    files = (prefixes * (200 // len(prefixes) + 1))[:200]  # 200 names, every one matching
    before = calls()
    hook = EmpiricalHook()
    ids = choosing.resolve_tests(
        hook, files=files, names=(), project=None, given_ids=(), log=logging.getLogger("bench")
    )
    active = len(hook.test_case_catalogue().cases)
    write_result(
        result, {"files": len(files), "calls": calls() - before - 1, "cases": active, "ids": len(ids)}
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["choose", "parent"], nargs="?", default="parent")
    parser.add_argument("--url")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.mode == "choose":
        choose(args.url, args.result)
    else:
        from run_all import main

        raise SystemExit(main(["--only", "3"]))
