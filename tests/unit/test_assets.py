"""emit_outlet_events: the asset (dataset) event extra that tells a downstream DAG which run passed.

A pure function of a context mapping: tested with fake contexts and, on Airflow 3, with the
task SDK's real OutletEventAccessors (what a worker puts in `context["outlet_events"]`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from airflow.providers.common.compat.sdk import Asset, AssetAlias

from airflow_provider_empirical.assets import emit_outlet_events, outlet_extra

SUMMARY: dict[str, Any] = {
    "id": 42,
    "state": "ended",
    "total_count": 10,
    "success_count": 8,
    "failed_count": 0,
    "skipped_count": 1,
    "flaky_count": 1,
    "failed_count_after_snoozing": 0,
    "duration": 12000,
    "error_code": None,
    "test_run_branch": "main",
    "environment_slug": "production",
    "created_at": "2026-11-02T02:00:00Z",
    "url": "https://dash.empirical.run/test-runs/42",
    "outcome": "success",
}
EXPECTED = {
    "test_run_id": 42,
    "url": "https://dash.empirical.run/test-runs/42",
    "state": "ended",
    "outcome": "success",
    "total_count": 10,
    "success_count": 8,
    "failed_count": 0,
    "skipped_count": 1,
    "flaky_count": 1,
    "failed_count_after_snoozing": 0,
    "branch": "main",
    "environment": "production",
}
NIGHTLY = Asset("empirical://demo/production/regression")


class _FakeAccessors(defaultdict[Any, Any]):
    """outlet_events as a dict of accessors keyed by URI (an Asset is not hashable on Airflow 3.1)."""

    def __init__(self) -> None:
        super().__init__(lambda: SimpleNamespace(extra={}))

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(getattr(key, "uri", key))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(getattr(key, "uri", key), value)


def _fake_context() -> tuple[dict[str, Any], Any]:
    accessors = _FakeAccessors()
    return {"outlet_events": accessors}, accessors


def test_extra_holds_run_id_url_state_outcome_and_counts() -> None:
    context, accessors = _fake_context()
    emit_outlet_events(context, [NIGHTLY], SUMMARY)
    assert accessors[NIGHTLY].extra == EXPECTED
    json.dumps(accessors[NIGHTLY].extra)  # plain JSON


def test_commit_and_build_version_when_the_summary_has_them() -> None:
    flat = outlet_extra({**SUMMARY, "commit": "3f2c1ab", "build_version": "nightly-20261102"})
    assert flat["commit"] == "3f2c1ab" and flat["build_version"] == "nightly-20261102"
    nested = outlet_extra({**SUMMARY, "build": {"commit": "c0ffee", "version": "v9", "url": "https://ci/1"}})
    assert (
        nested["commit"] == "c0ffee"
        and nested["build_version"] == "v9"
        and nested["build_url"] == "https://ci/1"
    )


def test_missing_fields_are_tolerated() -> None:
    extra = outlet_extra({"test_run_id": 7, "outcome": "success"})
    assert extra["test_run_id"] == 7 and extra["outcome"] == "success"
    assert extra["url"] is None and extra["failed_count"] is None
    assert "commit" not in extra and "build_version" not in extra


def test_non_json_values_become_strings() -> None:
    import datetime

    when = datetime.datetime(2026, 11, 2, 2, 0, tzinfo=datetime.timezone.utc)
    extra = outlet_extra({**SUMMARY, "commit": when})
    assert extra["commit"] == str(when)


def test_keeps_keys_the_author_set_and_skips_aliases_and_non_assets() -> None:
    context, accessors = _fake_context()
    accessors[NIGHTLY].extra = {"team": "qa", "state": "mine"}
    alias = AssetAlias("empirical-runs")
    emit_outlet_events(context, [alias, "not-an-asset", NIGHTLY], SUMMARY)
    assert accessors[NIGHTLY].extra == {"team": "qa", **EXPECTED}
    assert set(accessors) == {NIGHTLY.uri}


def test_every_asset_outlet_gets_the_extra() -> None:
    context, accessors = _fake_context()
    other = Asset("empirical://demo/staging/smoke")
    emit_outlet_events(context, (NIGHTLY, other), SUMMARY)
    assert accessors[NIGHTLY].extra == accessors[other].extra == EXPECTED


def test_without_outlet_events_or_outlets_it_does_nothing() -> None:
    emit_outlet_events({}, [NIGHTLY], SUMMARY)  # Airflow < 2.10: no outlet_events in the context
    emit_outlet_events({"outlet_events": None}, [NIGHTLY], SUMMARY)
    emit_outlet_events(None, [NIGHTLY], SUMMARY)
    context, accessors = _fake_context()
    emit_outlet_events(context, [], SUMMARY)
    emit_outlet_events(context, None, SUMMARY)  # type: ignore[arg-type]
    assert not accessors


def test_a_broken_accessor_does_not_fail_the_task(caplog: Any) -> None:
    class Broken(dict[Any, Any]):
        def __getitem__(self, key: Any) -> Any:
            raise RuntimeError("boom")

    emit_outlet_events({"outlet_events": Broken()}, [NIGHTLY], SUMMARY)
    assert "Could not set the asset event extra" in caplog.text


def test_with_the_task_sdks_real_outlet_event_accessors() -> None:
    try:
        from airflow.sdk.execution_time.context import OutletEventAccessors
    except ImportError:  # Airflow 2: outlet_events is airflow.utils.context.OutletEventAccessors
        from airflow.utils.context import OutletEventAccessors
    accessors = OutletEventAccessors()
    emit_outlet_events({"outlet_events": accessors}, [NIGHTLY], SUMMARY)
    assert accessors[NIGHTLY].extra == EXPECTED


def test_import_is_cheap() -> None:
    code = (
        "import sys, airflow_provider_empirical.assets; "
        "print(any(m.startswith('airflow.') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
