"""docs/emulator.md stays exact: its switch table, control routes, methods, CLI options and the
nested answer example are checked against the emulator itself (the example over real HTTP)."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.emulator.routes import App
from airflow_provider_empirical.emulator.state import SWITCHES
from tests.integration.test_emulator_support import DETAIL_KEYS, ROW_KEYS, new_client, put, rows_of, run_id_of

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "emulator.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return DOC.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("|")
    ]
    return rows[2:]  # without the header and the rule


def test_switch_table_is_the_switches_with_their_defaults() -> None:
    documented = {row[0].strip("`"): json.loads(row[1].strip("`")) for row in table_rows(section("Switches"))}
    assert documented == {name: default for name, (default, _) in SWITCHES.items()}
    for row in table_rows(section("Switches")):
        others = {json.loads(v.strip()) for v in row[2].replace("`", "").split(",")}
        assert others | {json.loads(row[1].strip("`"))} == set(SWITCHES[row[0].strip("`")][1]), row[0]


def test_control_table_lists_every_control_route() -> None:
    documented = set()
    for row in table_rows(section("Control API (no auth)")):
        method, path = row[0].strip("`").split(" ", 1)
        documented.add((method, path))
    expected = {(method, path) for path, methods in App.CONTROL_ROUTES.items() for method in methods}
    expected |= {("POST", "/_emulator/runs/{id}/finish"), ("POST", "/_emulator/runs/{id}/age")}
    assert documented == expected


def test_methods_table_names_every_public_member() -> None:
    text = section("Methods")
    public = {name for name, _ in inspect.getmembers(Emulator) if not name.startswith("_")}
    missing = sorted(name for name in public if not re.search(rf"`{name}\b", text))
    assert missing == []


def test_cli_usage_names_every_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "airflow_provider_empirical.emulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    options = set(re.findall(r"(--[a-z][a-z-]+)", out)) - {"--help"}
    usage = section("Starting it")
    assert sorted(o for o in options if o not in usage) == []


def test_run_script_table_lists_every_field() -> None:
    documented = {row[0].strip("`").split("`, `")[0] for row in table_rows(section("Scripts: `RunScript`"))}
    documented |= {
        name.strip("`") for row in table_rows(section("Scripts: `RunScript`")) for name in row[0].split(", ")
    }
    assert set(RunScript().to_dict()) <= documented


def test_nested_example_is_what_the_emulator_answers() -> None:
    block = (
        DOC.split("### `GET /api/test-runs/{id}`: two shapes", 1)[1]
        .split("```json\n", 1)[1]
        .split("```", 1)[0]
    )
    example = json.loads(block)["data"]
    assert set(example) == {"test_run", "project"} and set(example["test_run"]) == {
        "testRun",
        "flattenedSummaryDetails",
    }
    assert set(example["test_run"]["testRun"]) == DETAIL_KEYS
    with Emulator(api_keys={"k": 1}) as emu, new_client(emu.url, "k") as client:
        emu.queue_runs(RunScript(queued_for=0, run_for=0, outcome="failed"))
        run_id = run_id_of(put(client))
        emu.add_snooze(["c314b057bcab0f75fa00-50ab22adaa91e1555558"])
        real = {row["pw_test_id"]: row for row in rows_of(client, run_id)}
        for row in example["test_run"]["flattenedSummaryDetails"]:
            assert set(row) == ROW_KEYS and real[row["pw_test_id"]] == row
        run = client.get(f"/api/test-runs/{run_id}").json()["data"]["test_run"]["testRun"]
        counts = (
            "total_count",
            "success_count",
            "failed_count",
            "failed_count_after_snoozing",
            "skipped_count",
        )
        assert {k: run[k] for k in counts} == {k: example["test_run"]["testRun"][k] for k in counts}
        assert example["project"] == run["project"] == example["test_run"]["testRun"]["project"]
