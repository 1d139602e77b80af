"""Asset events (Datasets on Airflow 2) that say which Empirical run passed.

`emit_outlet_events(context, self.outlets, summary)`, called by a task that succeeded,
puts what a downstream DAG needs to know into the `extra` of the event Airflow emits for
each of the task's outlets: the run id, URL, state, outcome and counts, and the commit and
build version when the run's summary has them. A DAG scheduled on that asset reads it from
`triggering_asset_events` (Airflow 3) or `triggering_dataset_events` (Airflow 2).

Works on Airflow 3 (`Asset`) and on Airflow 2.10+/2.11 (`Dataset`, where
`context["outlet_events"]` exists). Without `outlet_events` in the context (older
Airflow) it does nothing. Aliases (`AssetAlias`/`DatasetAlias`) are skipped: an alias
needs an explicit asset to attach an event to. Never fails the task: a problem with one
outlet is logged and the others still get their extra.

Imports nothing from Airflow until there is an outlet to look at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_empirical.api.test_runs import COUNTS

log = logging.getLogger(__name__)


def outlet_extra(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The plain-JSON `extra` for a run summary (what the operator and the sensor return)."""
    raw_build = summary.get("build")
    build: Mapping[str, Any] = raw_build if isinstance(raw_build, Mapping) else {}
    extra: dict[str, Any] = {
        "test_run_id": summary.get("id", summary.get("test_run_id")),
        "url": summary.get("url"),
        "state": summary.get("state"),
        "outcome": summary.get("outcome"),
    }
    extra.update({key: summary.get(key) for key in COUNTS})
    optional = {
        "commit": summary.get("commit") or build.get("commit"),
        "build_version": summary.get("build_version") or build.get("version"),
        "build_url": summary.get("build_url") or build.get("url"),
        "branch": summary.get("test_run_branch") or build.get("branch"),
        "environment": summary.get("environment_slug"),
    }
    extra.update({key: value for key, value in optional.items() if value is not None})
    # plain JSON whatever the summary held (datetimes, tuples...): what the metadata DB stores
    return dict(json.loads(json.dumps(extra, default=str)))


def emit_outlet_events(context: Any, outlets: Iterable[Any], summary: Mapping[str, Any]) -> None:
    """Set the extra of each Asset/Dataset outlet's event to `outlet_extra(summary)`.

    Keys the DAG author already put in the event's extra are kept unless ours replace them.
    """
    outlets = list(outlets or ())
    if not outlets:
        return
    try:
        accessors = context["outlet_events"]
    except (KeyError, TypeError):
        return  # Airflow < 2.10: no outlet events in the context
    from airflow.providers.common.compat.sdk import Asset  # Dataset on Airflow 2

    extra = outlet_extra(summary)
    for outlet in outlets:
        if not isinstance(outlet, Asset):
            continue
        try:
            accessor = accessors[outlet]
            accessor.extra = {**dict(accessor.extra or {}), **extra}
        except Exception:  # the run passed: a missing extra must not fail the task
            log.warning("Could not set the asset event extra for %r", outlet, exc_info=True)
