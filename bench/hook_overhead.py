"""Figure 4: what EmpiricalHook adds over a bare httpx.Client, per status read.

A child process (Airflow imported, connection from AIRFLOW_CONN_EMPIRICAL_DEFAULT) makes
`CALLS` sequential ``EmpiricalHook().get_test_run(id)`` calls on one hook instance and `CALLS`
``client.get(...)`` calls on one bare ``httpx.Client`` with the same headers, against the
emulator in its own process. The two alternate in blocks of `BLOCK` so drift hits both alike.
Wall time is the target figure; client-side CPU per call is shown for context (the hook also
validates the id, parses the JSON and shapes the run, which a bare GET does not).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from common import API_KEY, BENCH, Figure, Row, child_env, fmt, make_home, run_child, write_result

CALLS = 2000
BLOCK = 200
TARGET_RATIO = 1.3


def child(url: str, result: str) -> None:
    import httpx

    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    bare = httpx.Client(base_url=url, headers=headers)
    bare.post("/_emulator/runs/queue", json={"queued_for": 0, "run_for": 3600}).raise_for_status()
    run_id = bare.put("/api/test-runs", json={"environment": "production"}).json()["data"]["test_run"]["id"]
    hook = EmpiricalHook()
    path = f"/api/test-runs/{run_id}"
    calls: dict[str, Callable[[], object]] = {
        "hook": lambda: hook.get_test_run(run_id),
        "bare": lambda: bare.get(path),
    }
    totals = {name: {"wall": 0.0, "cpu": 0.0, "calls": 0} for name in calls}
    for call in calls.values():  # warm-up: connections, first-call lookups
        for _ in range(50):
            call()
    for _ in range(CALLS // BLOCK):
        for name, call in calls.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(BLOCK):
                call()
            totals[name]["wall"] += time.perf_counter() - wall
            totals[name]["cpu"] += time.process_time() - cpu
            totals[name]["calls"] += BLOCK
    write_result(result, totals)


def run() -> Figure:
    from servers import Server

    home = make_home("hook-overhead")
    with (
        open(home / "server.log", "w") as server_log,
        Server("empirical", child_env(home), server_log) as server,
    ):
        conn = {"conn_type": "empirical", "host": server.url, "password": API_KEY}
        env = child_env(home, AIRFLOW_CONN_EMPIRICAL_DEFAULT=json.dumps(conn))
        data = run_child(
            [str(BENCH / "hook_overhead.py"), "child", "--url", server.url],
            env,
            timeout=180,
            log=home / "hook.log",
        )
    hook, bare = data["hook"], data["bare"]
    ratio = hook["wall"] / bare["wall"]
    fig = f"4. Hook overhead ({CALLS:,} sequential GETs)"
    per_call = {
        name: {key: value / totals["calls"] * 1e6 for key, value in totals.items() if key != "calls"}
        for name, totals in data.items()
    }
    return Figure(
        [
            Row(
                fig,
                "wall time per status read (ratio to bare)",
                f"{fmt(per_call['hook']['wall'], 'µs', 0)} ({ratio:.2f}x)",
                f"bare httpx.Client {fmt(per_call['bare']['wall'], 'µs', 0)}",
                f"<= {TARGET_RATIO:g}x bare",
                ratio <= TARGET_RATIO,
            ),
            Row(
                fig,
                "client-side CPU per status read",
                fmt(per_call["hook"]["cpu"], "µs", 0),
                f"bare httpx.Client {fmt(per_call['bare']['cpu'], 'µs', 0)}",
                "-",
                None,
            ),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["child", "parent"], nargs="?", default="parent")
    parser.add_argument("--url")
    parser.add_argument("--result")
    args = parser.parse_args()
    if args.mode == "child":
        child(args.url, args.result)
    else:
        from run_all import main as run_all

        raise SystemExit(run_all(["--only", "4"]))


if __name__ == "__main__":
    main()
