"""The ``empirical`` Airflow plugin, registered by the ``airflow.plugins`` entry point.

On Airflow 3.1+ it adds, on the API server:

- a FastAPI app under ``/empirical`` (`plugins.app`);
- an "Empirical tests" tab on every task instance page (an external view in an iframe; it
  shows the run of our operators' and sensor's tasks and says so for any other task: Airflow
  offers no per-operator tab);
- an "Empirical" entry in the Browse menu: the project page.

On Airflow 2.11 and 3.0 (no external views) the plugin is registered but inert: no app, no view.

Every Airflow process loads plugins (scheduler, workers, DAG processor), so importing this
module costs only Airflow's plugin base class: the app, FastAPI and Airflow's API-server
modules are imported when the API server first reads `fastapi_apps`, and the hook, httpx and
the HTTP drivers only when a view is first requested.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import AirflowPlugin
else:  # the base class of whichever plugin manager is loading us (no second one imported)
    _manager = sys.modules.get("airflow.plugins_manager") or sys.modules.get("airflow.sdk.plugins_manager")
    if _manager is not None and hasattr(_manager, "AirflowPlugin"):
        AirflowPlugin = _manager.AirflowPlugin
    else:
        from airflow.providers.common.compat.sdk import AirflowPlugin

log = logging.getLogger(__name__)

URL_PREFIX = "/empirical"
MIN_AIRFLOW = (3, 1)  # external views and React apps came with Airflow 3.1

# Hrefs are relative to the UI's base URL (no leading slash: it keeps working under a
# `[api] base_url` sub-path). Airflow fills {DAG_ID}, {RUN_ID}, {TASK_ID} and, for a mapped
# task instance, {MAP_INDEX} (left as is otherwise, which the app reads as -1).
TASK_VIEW = {
    "name": "Empirical tests",
    "href": "empirical/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}",
    "destination": "task_instance",
    "url_route": "empirical-tests",
}
PROJECT_VIEW = {
    "name": "Empirical",
    "href": "empirical/project",
    "destination": "nav",
    "url_route": "empirical",
    "category": "browse",
}


def airflow_version() -> tuple[int, int] | None:
    """Airflow's (major, minor), or None when it cannot be told (e.g. a worker with only the task SDK)."""
    try:
        from airflow import __version__
    except ImportError:
        return None
    try:
        major, minor = (int(part) for part in str(__version__).split(".")[:2])
    except ValueError:
        return None
    return major, minor


def views_supported(version: tuple[int, int] | None = None) -> bool:
    version = version if version is not None else airflow_version()
    return version is not None and version >= MIN_AIRFLOW


class _FastApiApps:
    """`fastapi_apps`, built on first read (only the API server reads it) and kept."""

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def __get__(self, instance: Any, owner: Any) -> list[dict[str, Any]]:
        if self._apps is None:
            with self._lock:
                if self._apps is None:
                    self._apps = self._build()
        return self._apps

    @staticmethod
    def _build() -> list[dict[str, Any]]:
        if not views_supported():
            return []
        try:
            from airflow_provider_empirical.plugins.app import create_app

            app = create_app()
        except Exception:  # never keep the API server from starting
            log.exception("The Empirical plugin's app could not be built; its views are off")
            return []
        return [{"app": app, "url_prefix": URL_PREFIX, "name": "Empirical tests"}]


class EmpiricalPlugin(AirflowPlugin):
    """Empirical test runs in Airflow's UI (docs/ui-plugin.md)."""

    name = "empirical"
    fastapi_apps = _FastApiApps()
    external_views = [dict(TASK_VIEW), dict(PROJECT_VIEW)] if views_supported() else []
