"""Registration as Airflow itself reports it: its own CLI, run from this venv in a fresh AIRFLOW_HOME.

Every command starts a new Airflow process (2-5 s each), so they are all launched at once
by one module fixture and the tests only read their results. No command here needs the
metadata DB: `connections test` finds the connection in an AIRFLOW_CONN_* variable.

`airflow providers behaviours` / `widgets` list names and field types only, so the form itself
(relabeling, placeholders, field titles) is read in one more process from what the UI builds it
from: on Airflow 3, the API server's HookMetaService; on Airflow 2, the ProvidersManager.
On Airflow 3.0/3.1 without the FAB provider (no wtforms) the ProvidersManager, and so those two
listings, cannot see any hook-method form at all: there they are skipped, while the UI (which
mocks wtforms) is still checked through HookMetaService.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_empirical
from airflow_provider_empirical import __version__
from airflow_provider_empirical.emulator import Emulator

KEY = "emp-cli-key-5d21c8-not-for-logs"
WRONG_KEY = "emp-cli-wrong-key-0a9e77"
PACKAGE = "airflow-provider-empirical"
HOOK = "airflow_provider_empirical.hooks.empirical.EmpiricalHook"
FIELDS = ("project_id", "timeout", "dashboard_url", "project_slug", "ca_bundle")

# The connection form as the UI gets it, reduced to the same shape on every version.
FORM_PROBE = """
import json

try:  # Airflow 3: what the API server sends the UI (3.0/3.1 mock wtforms to call the hook methods)
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
except ImportError:  # Airflow 2: the Flask form is built from the ProvidersManager
    HookMetaService = None

if HookMetaService is not None:
    metas = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "empirical"]
    meta = json.loads(metas[0].model_dump_json()) if metas else {}
    standard = {
        ("schema" if name == "url_schema" else name): field
        for name, field in (meta.get("standard_fields") or {}).items()
        if field
    }
    form = {
        "source": "HookMetaService",
        "relabeling": {name: f["title"] for name, f in standard.items() if f["title"]},
        "hidden": sorted(name for name, f in standard.items() if f["hidden"]),
        "placeholders": {name: f["placeholder"] for name, f in standard.items() if f["placeholder"]},
        "labels": {name: f["schema"].get("title") for name, f in (meta.get("extra_fields") or {}).items()},
    }
else:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    behaviour = manager.field_behaviours.get("empirical") or {}
    form = {
        "source": "ProvidersManager",
        "relabeling": behaviour.get("relabeling", {}),
        "hidden": sorted(behaviour.get("hidden_fields", [])),
        "placeholders": behaviour.get("placeholders", {}),
        "labels": {
            name.removeprefix("extra__empirical__"): str(info.field.args[0])  # wtforms UnboundField
            for name, info in manager.connection_form_widgets.items()
            if name.startswith("extra__empirical__")
        },
    }
print("FORM=" + json.dumps(form))
"""

AIRFLOW_VERSION = tuple(int(part) for part in metadata.version("apache-airflow").split(".")[:2])
# Below 3.2 the ProvidersManager builds hook forms with wtforms, which only the FAB provider brings.
NO_HOOK_FORMS = AIRFLOW_VERSION < (3, 2) and importlib.util.find_spec("wtforms") is None


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
        assert self.returncode == 0, (
            f"{self.argv} exited {self.returncode}:\n{self.stdout}\n{self.stderr[-3000:]}"
        )
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
            # the provider under test, even when this checkout is not the one installed editable
            "PYTHONPATH": os.pathsep.join(
                [
                    str(Path(airflow_provider_empirical.__file__).parent.parent),
                    os.environ.get("PYTHONPATH", ""),
                ]
            ).rstrip(os.pathsep),
        }
    )
    return env


@pytest.fixture(scope="module")
def cli() -> Iterator[tuple[dict[str, Result], Emulator]]:
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="empirical-cli-home-") as tmp,
        Emulator(api_keys={KEY: 1}) as emulator,
    ):
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


needs_hook_forms = pytest.mark.skipif(
    NO_HOOK_FORMS, reason="Airflow < 3.2 without wtforms (FAB provider): its CLI lists no hook-method form"
)


@needs_hook_forms
def test_providers_behaviours_lists_our_connection_type(cli: Any) -> None:
    assert {"field_behaviours": "empirical"} in _rows(cli, "behaviours")


@needs_hook_forms
def test_providers_widgets_lists_our_extra_fields(cli: Any) -> None:
    ours = {
        row["connection_parameter_name"]: row
        for row in _rows(cli, "widgets")
        if row["package_name"] == PACKAGE
    }
    assert set(ours) == {f"extra__empirical__{name}" for name in FIELDS}
    for row in ours.values():  # 2.11-3.1 print the class name, 3.2+ the dotted path
        assert row["class"] in (HOOK, "EmpiricalHook")
    types = {name.removeprefix("extra__empirical__"): row["field_type"] for name, row in ours.items()}
    if isinstance(types["dashboard_url"], list):  # 3.2+: JSON schema types from conn-fields
        assert types == {
            "project_id": ["integer", "null"],
            "timeout": ["number", "null"],
            "dashboard_url": ["string", "null"],
            "project_slug": ["string", "null"],
            "ca_bundle": ["string", "null"],
        }
    else:  # wtforms fields from the hook; Airflow < 3.2 accepts no FloatField there
        assert types == {
            "project_id": "IntegerField",
            "timeout": "IntegerField",
            "dashboard_url": "StringField",
            "project_slug": "StringField",
            "ca_bundle": "StringField",
        }


def test_connection_form_relabels_and_labels_our_fields(cli: Any) -> None:
    result = cli[0]["form"].check()
    lines = [line for line in result.stdout.splitlines() if line.startswith("FORM=")]
    assert lines, f"no form from the probe:\n{result.stdout}\n{result.stderr[-3000:]}"
    form = json.loads(lines[-1].removeprefix("FORM="))
    assert form["relabeling"] == {"password": "API key", "host": "API URL"}, form
    assert {"login", "schema", "port"} <= set(form["hidden"]), form
    assert form["placeholders"]["host"] == "https://api.empirical.run", form
    assert form["labels"] == {
        "project_id": "Project ID",
        "timeout": "Timeout (seconds)",
        "dashboard_url": "Dashboard URL",
        "project_slug": "Project slug",
        "ca_bundle": "CA bundle",
    }, form


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
    # Before 3.3 the command prints the failure but exits 0 (seen on 2.11.2 and 3.1.8); 3.3 exits 1.
    expected = (0, 1) if AIRFLOW_VERSION < (3, 3) else (1,)
    assert result.returncode in expected, f"{result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    assert "Connection failed!" in result.text
    assert "401" in result.text and "API key" in result.text
    assert WRONG_KEY not in result.stdout + result.stderr
    assert any(r.headers.get("authorization") == f"Bearer {WRONG_KEY}" for r in emulator.requests)
