"""Registration as Airflow itself reports it: its own CLI, run from this venv in a fresh AIRFLOW_HOME.

Every command starts a new Airflow process (2-5 s each), so they are all launched at once
by one module fixture and the tests only read their results. No command here needs the
metadata DB: `connections test` finds the connection in an AIRFLOW_CONN_* variable.

`airflow providers behaviours` / `widgets` list names and field types only, so the labels
Airflow puts on the form (relabeling, placeholders, field titles) are read from Airflow's
ProvidersManager in one more process of the same kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_empirical import __version__
from airflow_provider_empirical.emulator import Emulator

KEY = "emp-cli-key-5d21c8-not-for-logs"
WRONG_KEY = "emp-cli-wrong-key-0a9e77"
PACKAGE = "airflow-provider-empirical"
HOOK = "airflow_provider_empirical.hooks.empirical.EmpiricalHook"
FIELDS = ("project_id", "timeout", "dashboard_url")

# What Airflow's ProvidersManager makes of our connection type: the behaviour the form
# applies and each extra field's label, on every version (3.2+: provider info; older: hook).
FORM_PROBE = """
import json
from airflow.providers_manager import ProvidersManager

manager = ProvidersManager()
labels = {}
for name, info in manager.connection_form_widgets.items():
    if name.startswith("extra__empirical__"):
        field = info.field
        if isinstance(field, dict):  # Airflow 3.2+: conn-fields from provider info
            labels[name] = field.get("schema", {}).get("title") or field.get("label")
        else:  # wtforms UnboundField from the hook's get_connection_form_widgets
            labels[name] = str(field.args[0] if field.args else field.kwargs.get("label"))
print(json.dumps({"behaviour": manager.field_behaviours.get("empirical"), "labels": labels}))
"""


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """stdout with line wrapping undone (the CLI prints through rich)."""
        return " ".join(self.stdout.split())

    def json(self) -> Any:
        for line in self.stdout.splitlines():  # the JSON document is one line; skip any chatter
            if line.startswith(("[", "{")):
                return json.loads(line)
        raise AssertionError(f"no JSON in output of {self.argv}:\n{self.stdout}\n{self.stderr[-2000:]}")

    def check(self) -> Result:
        if self.returncode == 2 and "invalid choice" in self.stderr:
            pytest.skip(f"this Airflow has no `{' '.join(self.argv[3:5])}` command")
        assert self.returncode == 0, f"{self.argv} exited {self.returncode}:\n{self.stdout}\n{self.stderr[-3000:]}"
        return self


def _airflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


COMMANDS: dict[str, list[str]] = {
    "list": _airflow("providers", "list", "--output", "json"),
    "hooks": _airflow("providers", "hooks", "--output", "json"),
    "links": _airflow("providers", "links", "--output", "json"),
    "triggers": _airflow("providers", "triggers", "--output", "json"),
    "behaviours": _airflow("providers", "behaviours", "--output", "json"),
    "widgets": _airflow("providers", "widgets", "--output", "json"),
    "form": [sys.executable, "-c", FORM_PROBE],
    "test_ok": _airflow("connections", "test", "empirical_default"),
    "test_wrong_key": _airflow("connections", "test", "empirical_default"),
}


def _env(home: Path, emulator: Emulator, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "EMPIRICAL_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW_CONN_EMPIRICAL_DEFAULT": json.dumps(
                {"conn_type": "empirical", "host": emulator.url, "password": key}
            ),
            "COLUMNS": "500",  # rich wraps at 80 columns without a terminal
            "NO_COLOR": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def cli() -> Iterator[tuple[dict[str, Result], Emulator]]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="empirical-cli-home-") as tmp, Emulator(api_keys={KEY: 1}) as emulator:
        home = Path(tmp)
        (home / "dags").mkdir()
        procs = {
            name: subprocess.Popen(
                argv,
                env=_env(home, emulator, WRONG_KEY if name == "test_wrong_key" else KEY),
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, argv in COMMANDS.items()
        }
        results = {}
        for name, proc in procs.items():
            try:
                stdout, stderr = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            results[name] = Result(COMMANDS[name], proc.returncode, stdout, stderr)
        print(f"\n[cli] {len(procs)} Airflow processes in {time.monotonic() - started:.1f} s")
        yield results, emulator


def _rows(cli: tuple[dict[str, Result], Emulator], name: str) -> list[dict[str, Any]]:
    rows = cli[0][name].check().json()
    assert isinstance(rows, list) and rows, f"empty listing from {name}"
    return rows


def test_providers_list_shows_our_distribution_and_version(cli: Any) -> None:
    ours = [row for row in _rows(cli, "list") if row["package_name"] == PACKAGE]
    assert len(ours) == 1, ours
    assert ours[0]["version"] == __version__


def test_providers_hooks_maps_empirical_to_our_hook(cli: Any) -> None:
    ours = [row for row in _rows(cli, "hooks") if row["connection_type"] == "empirical"]
    assert len(ours) == 1, ours
    assert ours[0]["class"] == HOOK
    assert ours[0]["package_name"] == PACKAGE
    assert ours[0]["conn_id_attribute_name"] == "empirical_conn_id"
    assert ours[0]["hook_name"] == "Empirical"


def test_providers_links_lists_our_extra_link(cli: Any) -> None:
    links = [row["extra_link_class_name"] for row in _rows(cli, "links")]
    assert "airflow_provider_empirical.links.EmpiricalTestRunLink" in links


def test_providers_triggers_lists_our_trigger_module(cli: Any) -> None:
    ours = [row for row in _rows(cli, "triggers") if row["package_name"] == PACKAGE]
    assert [row["class"] for row in ours] == ["airflow_provider_empirical.triggers.empirical"]
    assert ours[0]["integration_name"] == "Empirical"


def test_providers_behaviours_lists_our_connection_type(cli: Any) -> None:
    assert {"field_behaviours": "empirical"} in _rows(cli, "behaviours")


def test_providers_widgets_lists_our_extra_fields(cli: Any) -> None:
    ours = {row["connection_parameter_name"]: row for row in _rows(cli, "widgets") if row["package_name"] == PACKAGE}
    assert set(ours) == {f"extra__empirical__{name}" for name in FIELDS}
    for row in ours.values():  # 2.11-3.1 print the class name, 3.2+ the dotted path
        assert row["class"] in (HOOK, "EmpiricalHook")
    types = {name.removeprefix("extra__empirical__"): row["field_type"] for name, row in ours.items()}
    if isinstance(types["dashboard_url"], list):  # 3.2+: JSON schema types from conn-fields
        assert types == {
            "project_id": ["integer", "null"],
            "timeout": ["number", "null"],
            "dashboard_url": ["string", "null"],
        }
    else:  # wtforms fields from the hook
        assert types["project_id"] == "IntegerField" and types["dashboard_url"] == "StringField"
        assert types["timeout"] in ("IntegerField", "FloatField", "DecimalField")


def test_connection_form_relabels_and_labels_our_fields(cli: Any) -> None:
    form = cli[0]["form"].check().json()
    behaviour = form["behaviour"]
    assert behaviour is not None, "Airflow has no field behaviour for conn type 'empirical'"
    assert behaviour["relabeling"] == {"password": "API key", "host": "API URL"}
    assert {"login", "schema", "port"} <= set(behaviour["hidden_fields"])
    assert behaviour["placeholders"]["host"] == "https://api.empirical.run"
    assert form["labels"] == {
        "extra__empirical__project_id": "Project ID",
        "extra__empirical__timeout": "Timeout (seconds)",
        "extra__empirical__dashboard_url": "Dashboard URL",
    }


def test_connections_test_succeeds_against_the_emulator(cli: Any) -> None:
    results, emulator = cli
    result = results["test_ok"].check()
    assert "Connection success!" in result.text
    assert KEY not in result.stdout + result.stderr
    authenticated = [r for r in emulator.requests if r.headers.get("authorization") == f"Bearer {KEY}"]
    assert authenticated and all(r.method == "GET" and r.path == "/api/test-runs" for r in authenticated)


def test_connections_test_fails_clearly_for_a_wrong_key(cli: Any) -> None:
    results, emulator = cli
    result = results["test_wrong_key"]
    if result.returncode == 2 and "invalid choice" in result.stderr:
        pytest.skip("this Airflow has no `connections test` command")
    assert result.returncode == 1, f"{result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    assert "Connection failed!" in result.text
    assert "401" in result.text and "API key" in result.text
    assert WRONG_KEY not in result.stdout + result.stderr
    assert any(r.headers.get("authorization") == f"Bearer {WRONG_KEY}" for r in emulator.requests)
