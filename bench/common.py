"""Helpers shared by the benchmarks: result rows, throwaway Airflow homes, child processes.

Every figure module exposes `run() -> list[Row]`; `run_all.py` prints the rows as one table.
Child processes get a clean environment (no inherited AIRFLOW_*), a throwaway AIRFLOW_HOME,
and hand their result back as a JSON file, so their logs never mix with the table.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
API_KEY = "bench-key-4c1d9e7a"
TEMP_DIRS: list[Path] = []  # removed by cleanup()


@dataclass
class Row:
    """One line of the final table. `ok` is None when there is no target (context only)."""

    figure: str
    metric: str
    ours: str
    baseline: str
    target: str
    ok: bool | None

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "MISS", None: "-"}[self.ok]


@dataclass
class Figure:
    """What a figure module returns: table rows, and notes printed under the table."""

    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def rss_kb() -> int:
    """Current resident set size of this process, in KiB (Linux)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_kb() -> int:
    """Peak RSS of this process since start or since `reset_peak_rss()`, in KiB (Linux VmHWM)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def make_home(prefix: str) -> Path:
    """A throwaway AIRFLOW_HOME with a dags folder."""
    home = Path(tempfile.mkdtemp(prefix=f"empirical-bench-{prefix}-"))
    (home / "dags").mkdir()
    TEMP_DIRS.append(home)
    return home


def cleanup() -> None:
    """Remove the throwaway directories made by this process."""
    while TEMP_DIRS:
        shutil.rmtree(TEMP_DIRS.pop(), ignore_errors=True)


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a child process: ours, not the caller's AIRFLOW_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "PYTHONPATH": str(BENCH),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update(extra)
    return env


def run_child(args: list[str], env: dict[str, str], timeout: float, log: Path) -> dict[str, Any]:
    """Run `python <args> --result FILE`, return the JSON it wrote; raise with the log tail on failure."""
    result = log.with_suffix(".json")
    with open(log, "ab") as out:
        proc = subprocess.run(
            [PYTHON, *args, "--result", str(result)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    if proc.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{args[0]} exited {proc.returncode}; log {log}:\n{tail}")
    data: dict[str, Any] = json.loads(result.read_text())
    return data


def write_result(path: str, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data))


def fmt(value: float, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{(' ' + unit) if unit else ''}"
