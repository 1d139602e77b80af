"""Figure 1: what a DAG file pays to import each provider's operator, in fresh processes.

Each sample is a new interpreter that first imports ``from airflow.sdk import DAG, BaseOperator``
(what any DAG file already has) and then times only the provider import. Targets are sampled
round-robin, median of `RUNS`. A ``gc.collect()`` just before the clock starts keeps a garbage
collection owed by the airflow.sdk import from landing at random in one target's time.

All children share one throwaway PYTHONPYCACHEPREFIX, filled by an untimed warm-up run, so every
module loads from bytecode as in a deployed install (this environment sets
PYTHONDONTWRITEBYTECODE, which would otherwise make our editable package recompile on every
import while Airflow's own modules load from their installed .pyc files).

If ours misses a target, ``python -X importtime`` names the imports that cost the most.
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict

from common import PYTHON, ROOT, Figure, Row, child_env, fmt, make_home, median

RUNS = 9
TARGET_MS = 10.0
TARGET_RATIO = 30.0
OURS = ("airflow_provider_empirical.operators.empirical", "airflow_provider_empirical.sensors.empirical")
DBT = ("airflow.providers.dbt.cloud.operators.dbt",)
PYTHON_OP = ("airflow.providers.standard.operators.python",)
MARK = "@@bench-mark@@"

SAMPLE = """
import gc, importlib, json, sys, time
from airflow.sdk import DAG, BaseOperator
gc.collect()  # a collection owed by the airflow.sdk import must not be billed to the provider
started = time.perf_counter()
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"ms": (time.perf_counter() - started) * 1000}))
"""


def _env() -> dict[str, str]:
    """Child environment with bytecode caching on, in a throwaway cache directory."""
    env = child_env(make_home("import"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(make_home("pycache"))
    return env


def sample(modules: tuple[str, ...], env: dict[str, str]) -> float:
    """Milliseconds to import `modules` in a fresh interpreter, after airflow.sdk."""
    out = subprocess.run(
        [PYTHON, "-c", SAMPLE, *modules],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ms: float = json.loads(out.stdout.strip().splitlines()[-1])["ms"]
    return ms


def importtime(modules: tuple[str, ...], env: dict[str, str], runs: int = 3) -> list[str]:
    """Our costliest imports by `-X importtime` (median of `runs`): self and cumulative ms."""
    code = (
        f"from airflow.sdk import DAG, BaseOperator\nimport sys\nsys.stderr.write('{MARK}\\n')\n"
        + "".join(f"import {name}\n" for name in modules)
    )
    selfs: dict[str, list[float]] = defaultdict(list)
    cumulative: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        out = subprocess.run(
            [PYTHON, "-X", "importtime", "-c", code],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        lines = out.stderr.split(MARK, 1)[-1].splitlines()
        for line in lines:
            if not line.startswith("import time:"):
                continue
            own, cum, name = (part for part in line.split(":", 1)[1].split("|"))
            selfs[name.strip()].append(int(own) / 1000)
            cumulative[name.strip()].append(int(cum) / 1000)
    ranked = sorted(selfs, key=lambda name: -median(selfs[name]))[:8]
    total = sum(median(cumulative[name]) for name in modules if name in cumulative)
    notes = [
        f"`python -X importtime`, after airflow.sdk (median of {runs}; importtime itself adds overhead): "
        f"our two modules cost {total:.1f} ms cumulative. Costliest by self time:"
    ]
    notes += [
        f"  - {name}: self {median(selfs[name]):.2f} ms, cumulative {median(cumulative[name]):.2f} ms"
        for name in ranked
    ]
    return notes


def run() -> Figure:
    env = _env()
    targets = {"ours": OURS, "dbt": DBT, "python": PYTHON_OP}
    for modules in targets.values():  # untimed: fills the bytecode cache
        sample(modules, env)
    times: dict[str, list[float]] = {key: [] for key in targets}
    for _ in range(RUNS):
        for key, modules in targets.items():
            times[key].append(sample(modules, env))
    ours, dbt, python = (median(times[key]) for key in targets)
    spread = {key: f"{min(values):.1f}-{max(values):.1f}" for key, values in times.items()}
    ratio = dbt / ours if ours else float("inf")
    fig = "1. DAG-parse import cost"
    rows = [
        Row(
            fig,
            f"import operator + sensor (median of {RUNS} fresh processes)",
            f"{fmt(ours, 'ms', 2)} (range {spread['ours']})",
            f"dbt Cloud operator {fmt(dbt, 'ms', 1)} (range {spread['dbt']})",
            f"<= {TARGET_MS:g} ms",
            ours <= TARGET_MS,
        ),
        Row(
            fig,
            "how much cheaper than dbt Cloud",
            f"{ratio:.0f}x",
            "1x",
            f">= {TARGET_RATIO:g}x",
            ratio >= TARGET_RATIO,
        ),
        Row(
            fig,
            "reference: PythonOperator import",
            fmt(ours, "ms", 2),
            f"PythonOperator {fmt(python, 'ms', 1)}",
            "-",
            None,
        ),
    ]
    notes = []
    if ours > TARGET_MS or ratio < TARGET_RATIO:
        notes = importtime(OURS, env)
    return Figure(rows, notes)


if __name__ == "__main__":
    from run_all import main

    raise SystemExit(main(["--only", "1"]))
