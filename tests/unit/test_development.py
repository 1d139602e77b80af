"""docs/development.md stays true: every file it names exists, and its recipes stay short."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    return PAGE.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_every_file_the_page_names_exists() -> None:
    named = set(re.findall(r"`((?:airflow_provider_empirical|docs|tests)/[\w./-]+\.(?:py|md))`", PAGE))
    named |= {"README.md"}
    assert len(named) >= 12
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert not missing, missing


def test_a_wait_condition_takes_at_most_three_files() -> None:
    steps = re.findall(r"^\d\. `([^`]+)`", _section("Adding a wait condition"), re.M)
    assert len(steps) <= 3 and len(set(steps)) == len(steps), steps


def test_the_pass_policy_is_written_once_for_the_operator_and_the_sensor() -> None:
    """Its parameters are on the base class only: neither subclass repeats them in its signature."""
    from airflow_provider_empirical.api.verdict import Policy
    from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
    from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
    from airflow_provider_empirical.waiting import BaseEmpiricalWaitOperator

    fields = set(Policy.__dataclass_fields__)
    assert set(BaseEmpiricalWaitOperator.policy_fields) == fields
    for cls in (EmpiricalTriggerTestRunOperator, EmpiricalTestRunSensor):
        own = set(inspect.signature(cls.__init__).parameters)
        assert not fields & own, (cls.__name__, fields & own)
        assert set(cls.template_fields) >= fields


def test_the_api_layer_imports_neither_airflow_nor_the_http_layer() -> None:
    for path in sorted((ROOT / "airflow_provider_empirical" / "api").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        bad = sorted(
            name for name in imported if name.startswith(("airflow.", "airflow_provider_empirical.http"))
        )
        assert not bad, (path.name, bad)


def test_the_http_core_and_parsers_do_not_load_airflow() -> None:
    import subprocess
    import sys

    modules = ("http.protocol", "http.operations", "api.verdict", "api.snoozes", "api.test_cases")
    code = (
        f"import sys; import {', '.join('airflow_provider_empirical.' + m for m in modules)}; "
        "sys.exit(any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
