"""The plugin on every supported Airflow: loaded by Airflow's own plugin manager without an import
error, with its views on 3.1+ and inert (no app, no view) on 2.11 and 3.0; and cheap to load,
since every Airflow process (scheduler, workers, DAG processor) loads plugins.

Run by `scripts/test-matrix.sh` on 2.11.2 and 3.1.8 too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pytest

VERSION = tuple(int(part) for part in metadata.version("apache-airflow").split(".")[:2])
VIEWS = VERSION >= (3, 1)


def _loaded_plugins() -> tuple[list[object], dict[str, str]]:
    """Airflow's plugin manager, as each version exposes it."""
    from airflow import plugins_manager

    if hasattr(plugins_manager, "_get_plugins"):  # 3.2+
        return plugins_manager._get_plugins()
    plugins_manager.ensure_plugins_loaded()
    return list(plugins_manager.plugins or []), dict(plugins_manager.import_errors)


def test_the_entry_point_names_the_plugin() -> None:
    (entry,) = [ep for ep in metadata.entry_points(group="airflow.plugins") if ep.name == "empirical"]
    assert entry.value == "airflow_provider_empirical.plugins.empirical:EmpiricalPlugin"
    assert entry.load().name == "empirical"


# An editable install in compat mode (the Makefile's) puts the source tree on sys.path, so the
# package's metadata is found twice (site-packages' dist-info and the tree's egg-info) and Airflow
# loads the plugin twice, skipping the second copy; a wheel install has one copy.
DUPLICATE = "Plugin 'empirical' already registered, skipping"
COPIES = sum(
    (dist.metadata["Name"] or "").lower() == "airflow-provider-empirical" for dist in metadata.distributions()
)


def test_airflow_loads_it_without_an_import_error() -> None:
    plugins, errors = _loaded_plugins()
    ours = [plugin for plugin in plugins if getattr(plugin, "name", None) == "empirical"]
    assert len(ours) == 1, [getattr(plugin, "name", plugin) for plugin in plugins]
    allowed = {DUPLICATE} if COPIES > 1 else set()
    assert not [msg for source, msg in errors.items() if "empirical" in source and msg not in allowed], errors
    plugin = ours[0]
    if VIEWS:
        assert [view["destination"] for view in plugin.external_views] == ["task_instance", "nav"]
    else:
        assert getattr(plugin, "external_views", []) == []
        assert getattr(plugin, "fastapi_apps", []) == []  # inert: no app is even built


@pytest.mark.skipif(not VIEWS, reason="Airflow < 3.1 has no FastAPI plugin apps")
def test_the_app_is_built_on_3_1_and_later() -> None:
    plugins, _ = _loaded_plugins()
    (plugin,) = [p for p in plugins if getattr(p, "name", None) == "empirical"]
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/empirical"
    paths = sorted(route.path for route in app["app"].routes)
    assert paths == ["/project", "/ti/{dag_id}/{run_id}/{task_id}"]


def test_loading_the_plugin_imports_no_app_and_no_http_driver() -> None:
    """What any Airflow process pays: the plugin base class, nothing of the views."""
    code = (
        "import json, sys\n"
        "import airflow.plugins_manager  # what loads plugins: already there when ours is imported\n"
        "before = set(sys.modules)\n"
        "from airflow_provider_empirical.plugins.empirical import EmpiricalPlugin\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    ours = {name for name in loaded if name.startswith("airflow_provider_empirical")}
    assert "airflow_provider_empirical.plugins.empirical" in ours
    assert ours <= {
        "airflow_provider_empirical",
        "airflow_provider_empirical.plugins",
        "airflow_provider_empirical.plugins.empirical",
    }, sorted(ours)
    for heavy in ("fastapi", "httpx", "aiohttp"):
        assert heavy not in loaded


@pytest.mark.skipif(not VIEWS, reason="Airflow < 3.1 has no FastAPI plugin apps")
def test_building_the_app_loads_no_view_code() -> None:
    """The API server's start builds the app; the hook, the HTTP drivers and the rest wait for a view."""
    code = (
        "import json, sys\n"
        "import airflow.api_fastapi.app, airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        "from airflow_provider_empirical.plugins.empirical import EmpiricalPlugin\n"
        "assert len(EmpiricalPlugin().fastapi_apps) == 1\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    ours = {name for name in loaded if name.startswith("airflow_provider_empirical")}
    assert ours == {
        "airflow_provider_empirical.plugins",
        "airflow_provider_empirical.plugins.empirical",
        "airflow_provider_empirical.plugins.app",
    } | ({"airflow_provider_empirical"} & loaded), sorted(ours)
