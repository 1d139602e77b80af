"""Child process for figures 3 and 5: real DAG runs with `dag.test()`, reported as JSON.

    python bench/dag_runs.py --dags ID[,ID...] [--emulator URL --queued Q --run-for R] --result FILE

Expects AIRFLOW_HOME, AIRFLOW__CORE__DAGS_FOLDER (holding the bench DAG files) and the
connection in the environment, as set by the parent. Before each DAG run it scripts the next
emulator run (queued Q s, then running R s). Reports, per DAG, its state, task states and the
epoch window of the run, plus the peak RSS of this process and of its children.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any

from common import write_result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dags", required=True)
    parser.add_argument("--emulator")
    parser.add_argument("--queued", type=float, default=1.0)
    parser.add_argument("--run-for", type=float, default=5.0)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()

    import httpx
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db
    from airflow.utils.session import create_session

    db.initdb()
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    runs: list[dict[str, Any]] = []
    for dag_id in args.dags.split(","):
        if args.emulator:
            script = {"queued_for": args.queued, "run_for": args.run_for}
            httpx.post(f"{args.emulator}/_emulator/runs/queue", json=script, timeout=10).raise_for_status()
        started = time.time()
        dag_run = bag.get_dag(dag_id).test()
        ended = time.time()
        with create_session() as session:
            tasks = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances(session=session)}
        runs.append(
            {"dag_id": dag_id, "state": str(dag_run.state), "tasks": tasks, "start": started, "end": ended}
        )
    write_result(
        args.result,
        {
            "runs": runs,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "children_peak_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        },
    )


if __name__ == "__main__":
    main()
