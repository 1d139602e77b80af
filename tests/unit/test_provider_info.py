"""Registration: the provider info is import-free, schema-valid and names our distribution."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_empirical.get_provider_info import get_provider_info
from airflow_provider_empirical.hooks.empirical import EmpiricalHook


def test_provider_info_is_valid_against_airflows_schema() -> None:
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_package_name_is_the_distribution_name_and_entry_point_is_registered() -> None:
    info = get_provider_info()
    dist = metadata.distribution("airflow-provider-empirical")
    assert info["package-name"] == dist.metadata["Name"] == "airflow-provider-empirical"
    entry_points = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert [ep.value for ep in entry_points] == [
        "airflow_provider_empirical.get_provider_info:get_provider_info"
    ]
    assert entry_points[0].load()() == info


def test_get_provider_info_imports_nothing_heavy() -> None:
    code = (
        "import sys; from airflow_provider_empirical.get_provider_info import get_provider_info; "
        "get_provider_info(); print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('airflow', 'httpx', 'pendulum', 'tenacity')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_connection_type_declares_the_form_for_the_3_2_plus_ui() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "empirical"
    assert conn_type["hook-name"] == "Empirical"
    assert conn_type["hook-class-name"] == "airflow_provider_empirical.hooks.empirical.EmpiricalHook"
    assert set(conn_type["conn-fields"]) == {
        "project_id",
        "timeout",
        "dashboard_url",
        "project_slug",
        "ca_bundle",
    }
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["relabeling"] == {"password": "API key", "host": "API URL"}
    assert {"login", "schema", "port"} <= set(behaviour["hidden-fields"])


def test_legacy_hook_form_methods_match_provider_info() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    legacy = EmpiricalHook.get_ui_field_behaviour()
    assert legacy["hidden_fields"] == conn_type["ui-field-behaviour"]["hidden-fields"]
    assert legacy["relabeling"] == conn_type["ui-field-behaviour"]["relabeling"]
    assert legacy["placeholders"]["host"] == "https://api.empirical.run"
    pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    widgets = EmpiricalHook.get_connection_form_widgets()
    assert set(widgets) == {"project_id", "timeout", "dashboard_url", "project_slug", "ca_bundle"}


def test_every_module_named_in_provider_info_imports() -> None:
    import importlib

    info = get_provider_info()
    modules = [
        m
        for key in ("operators", "sensors", "hooks", "triggers")
        for e in info[key]
        for m in e["python-modules"]
    ]
    for module in modules:
        importlib.import_module(module)
    for path in info["extra-links"]:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name)
    hook_path = info["connection-types"][0]["hook-class-name"]
    module, _, name = hook_path.rpartition(".")
    assert getattr(importlib.import_module(module), name) is EmpiricalHook


def test_airflow_providers_manager_sees_our_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-empirical" in manager.providers
    try:  # 3.3+: hooks come from the task SDK's manager (ProvidersManager.hooks warns there)
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hooks = ProvidersManagerTaskRuntime().hooks
    except ImportError:
        hooks = manager.hooks
    assert hooks["empirical"].hook_class_name.endswith("EmpiricalHook")
    airflow_version = tuple(int(part) for part in metadata.version("apache-airflow").split(".")[:2])
    if airflow_version < (3, 2) and importlib.util.find_spec("wtforms") is None:
        # Below 3.2 the manager builds hook-method forms with wtforms, which only the FAB provider
        # brings; the 3.0/3.1 UI mocks it instead (checked through HookMetaService in test_airflow_cli).
        pytest.skip("Airflow < 3.2 without wtforms: ProvidersManager sees no hook-method form")
    behaviour = manager.field_behaviours["empirical"]
    assert behaviour["relabeling"]["password"] == "API key"
    widgets = manager.connection_form_widgets
    assert "extra__empirical__project_id" in widgets


def test_each_how_to_guide_is_a_page_in_this_repository() -> None:
    from tests.conftest import ROOT

    (integration,) = get_provider_info()["integrations"]
    assert integration["how-to-guide"]
    for path in integration["how-to-guide"]:
        assert (ROOT / path.lstrip("/")).is_file(), path
