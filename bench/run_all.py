"""Run every benchmark figure and print one markdown table (exit status 0 even on a miss).

    .venv/bin/python bench/run_all.py [--only 1,3] [--keep]

Figures: 1 DAG-parse import cost, 2 triggerer density (ours vs dbt Cloud, over TLS and plain
HTTP), 3 API economy, 4 hook overhead, 5 worker memory, 6 the UI plugin (API-server start, a
view first and from memory), 7 the event-driven watcher (API calls per hour, lag to the DAG run).
A figure that fails to run is reported as an ERROR row with the reason, and the others still
run. `--keep` leaves the throwaway directories (logs) in /tmp.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
import traceback

from common import Figure, Row, cleanup

FIGURES = {
    "1": "import_cost",
    "2": "trigger_density",
    "3": "api_economy",
    "4": "hook_overhead",
    "5": "memory",
    "6": "plugin_views",
    "7": "watcher",
}


def run_figure(number: str) -> tuple[Figure, float]:
    """Run one figure module; any failure becomes an ERROR row."""
    started = time.monotonic()
    try:
        figure: Figure = importlib.import_module(FIGURES[number]).run()
    except Exception as exc:  # report and go on: one broken figure must not hide the others
        detail = traceback.format_exception_only(exc)[-1].strip().splitlines()[0][:200]
        figure = Figure(
            [Row(f"{number}. {FIGURES[number]}", "ERROR: figure did not run", detail, "-", "-", False)],
            [f"Figure {number} traceback:\n{traceback.format_exc()}"],
        )
    return figure, time.monotonic() - started


def table(rows: list[Row]) -> str:
    lines = [
        "| Figure | Metric | Empirical provider | Baseline | Target | Result |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.figure} | {r.metric} | {r.ours} | {r.baseline} | {r.target} | {r.verdict} |" for r in rows
    ]
    return "\n".join(lines)


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"Python {platform.python_version()}"]
    for name in (
        "apache-airflow",
        "airflow-provider-empirical",
        "apache-airflow-providers-dbt-cloud",
        "httpx",
        "aiohttp",
    ):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(FIGURES), help="comma-separated figure numbers")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway directories and logs")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows: list[Row] = []
    notes: list[str] = []
    for number in args.only.split(","):
        print(f"figure {number} ({FIGURES[number]}) ...", file=sys.stderr, flush=True)
        figure, seconds = run_figure(number)
        print(f"figure {number} done in {seconds:.0f} s", file=sys.stderr, flush=True)
        rows += figure.rows
        notes += figure.notes
    if not args.keep:
        cleanup()
    print(table(rows))
    misses = sum(row.ok is False for row in rows)
    print(
        f"\n{len(rows)} rows, {sum(row.ok is True for row in rows)} pass, {misses} miss; "
        f"total wall time {time.monotonic() - started:.0f} s; {versions()}"
    )
    if notes:
        print("\nNotes:\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
