"""OpenLineage: the facets a finished test run reports, and that nothing of OpenLineage is imported
without need.

Only the first test runs everywhere. The others need apache-airflow-providers-openlineage, which the
project never depends on: `scripts/test-matrix.sh openlineage` builds a separate venv with it and runs
this file there. The last test runs real DAGs (`dag.test()`) with the provider's listener and a file
transport in a child process (the provider caches its configuration per process) and reads the
emitted events back.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import ROOT, conn_json

OL_MODULES = ("openlineage", "airflow.providers.openlineage")
DISCOVERY = {"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}


def test_operator_and_sensor_modules_import_nothing_of_openlineage() -> None:
    """Holds with or without the provider installed: the operator and sensor import our lineage
    module only inside their `get_openlineage_facets_on_*` methods, and that module imports the
    OpenLineage packages only inside `facets_for`."""
    code = (
        "import sys\n"
        "import airflow_provider_empirical.operators.empirical\n"
        "import airflow_provider_empirical.sensors.empirical\n"
        "import airflow_provider_empirical.openlineage\n"
        f"prefixes = {OL_MODULES!r}\n"
        "print(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in prefixes)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    # Airflow's provider discovery (reading every installed provider's configuration defaults)
    # imports these two when the OpenLineage provider is installed; nothing of ours does
    assert imported - DISCOVERY == set()


# -- everything below needs the OpenLineage provider --


def _need_openlineage() -> None:
    pytest.importorskip(
        "airflow.providers.openlineage",
        reason="apache-airflow-providers-openlineage is not installed (it is optional): run "
        "`scripts/test-matrix.sh openlineage` for these tests",
    )


@pytest.fixture(autouse=True)
def _openlineage(request: pytest.FixtureRequest) -> None:
    if request.node.name != "test_operator_and_sensor_modules_import_nothing_of_openlineage":
        _need_openlineage()


URL = "https://dash.empirical.run/acme/test-runs/42"


def _summary(**overrides: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "id": 42,
        "state": "ended",
        "total_count": 10,
        "success_count": 7,
        "failed_count": 2,
        "skipped_count": 0,
        "flaky_count": 1,
        "duration": 61500,
        "url": URL,
        "outcome": "failed",
        "environment_slug": "production",
        "test_run_branch": "main",
        "error_code": None,
        "project_slug": "acme",
        "failed_tests": [
            {"name": "checkout \u203a pays with card", "status": "failed", "pw_test_id": "abc-1"},
            {"name": "login \u203a remembers me", "status": "timedOut", "pw_test_id": None},
        ],
        "flaky_tests": [{"name": "search \u203a suggests", "status": "flaky", "pw_test_id": "abc-3"}],
    }
    summary.update(overrides)
    return summary


def _operator(summary: dict[str, Any] | None, **attrs: Any) -> Any:
    base = {
        "environment": "production",
        "empirical_conn_id": "empirical_default",
        "fail_on_test_failure": True,
    }
    return SimpleNamespace(test_run_summary=summary, **{**base, **attrs})


def _json(obj: Any) -> Any:
    from openlineage.client.serde import Serde

    return json.loads(Serde.to_json(obj))


def _facets(operator: Any) -> Any:
    from airflow_provider_empirical.openlineage import facets_for

    return facets_for(operator, task_instance=None)


def test_no_finished_run_gives_empty_lineage() -> None:
    from airflow.providers.openlineage.extractors import OperatorLineage

    assert _facets(_operator(None)) == OperatorLineage()
    assert _facets(SimpleNamespace()) == OperatorLineage()  # an operator that never set the attribute


def test_run_facet_carries_id_url_state_outcome_and_counts() -> None:
    from airflow_provider_empirical.openlineage import PRODUCER, SCHEMA_URL

    lineage = _facets(_operator(_summary(rerun_of=41)))
    assert set(lineage.run_facets) == {"empiricalTestRun", "externalQuery", "test"}
    assert _json(lineage.run_facets["empiricalTestRun"]) == {
        "_producer": PRODUCER,
        "_schemaURL": SCHEMA_URL,
        "testRunId": 42,
        "url": URL,
        "state": "ended",
        "outcome": "failed",
        "environment": "production",
        "branch": "main",
        "totalCount": 10,
        "successCount": 7,
        "failedCount": 2,
        "skippedCount": 0,
        "flakyCount": 1,
        "durationMs": 61500,
        "rerunOf": 41,
    }
    external = _json(lineage.run_facets["externalQuery"])
    assert external["externalQueryId"] == "42" and external["source"] == "empirical://dash.empirical.run"
    assert lineage.outputs == [] and lineage.job_facets == {}


def test_failed_and_flaky_tests_become_data_quality_assertions_on_the_tested_environment() -> None:
    (dataset,) = _facets(_operator(_summary())).inputs
    assert (dataset.namespace, dataset.name) == ("empirical://dash.empirical.run", "acme/production")
    facet = _json(dataset.inputFacets["dataQualityAssertions"])
    assert facet["_schemaURL"].startswith("https://openlineage.io/spec/facets/")
    assert "DataQualityAssertionsDatasetFacet" in facet["_schemaURL"]
    assertions = [(a["assertion"], a["success"], a.get("column")) for a in facet["assertions"]]
    assert assertions == [
        ("checkout \u203a pays with card", False, None),
        ("login \u203a remembers me", False, None),
        ("search \u203a suggests", True, None),
    ]


def test_the_spec_test_run_facet_lists_the_same_tests_with_severity() -> None:
    from openlineage.client.facet_v2 import test_run

    if not hasattr(test_run, "TestRunFacet"):
        pytest.skip("this openlineage-python has no TestRunFacet")
    lenient = _facets(_operator(_summary(), fail_on_test_failure=False))
    tests = _json(lenient.run_facets["test"])["tests"]
    assert [(t["name"], t["status"], t["severity"]) for t in tests] == [
        ("checkout \u203a pays with card", "fail", "warn"),
        ("login \u203a remembers me", "fail", "warn"),
        ("search \u203a suggests", "pass", "warn"),
    ]
    assert tests[0]["params"] == {"status": "failed", "pw_test_id": "abc-1", "flaky": False}
    assert tests[1]["params"] == {"status": "timedOut", "flaky": False}


@pytest.mark.parametrize("rows", [None, []], ids=["no per-test rows", "no failed test"])
def test_without_named_tests_there_is_no_assertion_facet(rows: Any) -> None:
    lineage = _facets(
        _operator(_summary(outcome="success", failed_count=0, failed_tests=rows, flaky_tests=rows))
    )
    (dataset,) = lineage.inputs
    assert dataset.name == "acme/production" and dataset.inputFacets == {}
    assert "test" not in lineage.run_facets and "empiricalTestRun" in lineage.run_facets


@pytest.mark.parametrize(
    ("overrides", "environment", "name"),
    [
        ({"project_slug": None}, "production", "acme/production"),  # slug read from the URL
        ({"project_slug": None, "url": "https://dash.empirical.run/test-runs/42"}, None, "production"),
        ({"environment_slug": None}, "staging", "acme/staging"),  # the operator's (rendered) argument
        ({"environment_slug": None}, "{{ params.env }}", "acme/test-runs"),  # never a raw template
        ({"environment_slug": None}, None, "acme/test-runs"),  # the sensor has no environment
    ],
)
def test_dataset_name(overrides: dict[str, Any], environment: str | None, name: str) -> None:
    (dataset,) = _facets(_operator(_summary(**overrides), environment=environment)).inputs
    assert dataset.name == name


def test_namespace_without_a_run_url_is_the_connections_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "empirical",
        "host": "https://api.example.test",
        "password": "emp-test-key-ol",
        "extra": {"dashboard_url": "https://dash.example.test:8443"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", json.dumps(conn))
    (dataset,) = _facets(_operator(_summary(url=None))).inputs
    assert dataset.namespace == "empirical://dash.example.test:8443"
    # an unreadable connection never fails the task: Empirical's own dashboard
    (dataset,) = _facets(_operator(_summary(url=None), empirical_conn_id="no_such_connection")).inputs
    assert dataset.namespace == "empirical://dash.empirical.run"


def test_the_custom_facet_pickles_and_matches_its_documented_schema() -> None:
    import attr

    jsonschema = pytest.importorskip("jsonschema")
    facet = _facets(_operator(_summary())).run_facets["empiricalTestRun"]
    assert pickle.loads(pickle.dumps(facet)) == facet
    docs = (ROOT / "docs" / "openlineage.md").read_text()
    match = re.search(r"<!-- schema -->\s*```json\n(.*?)```", docs, re.S)
    assert match, "docs/openlineage.md lost its JSON Schema block"
    schema = json.loads(match.group(1))["$defs"]["EmpiricalTestRunFacet"]
    base, facet_schema = schema["allOf"]  # OpenLineage's RunFacet (online), then ours
    assert base == {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet"}
    fields = {f.name.lstrip("_") for f in attr.fields(type(facet))} - {"producer", "schemaURL"}
    assert set(facet_schema["properties"]) == fields  # every field documented, none invented
    jsonschema.validate(_json(facet), facet_schema)
    minimal = _facets(_operator({"id": 1, "outcome": "error"})).run_facets["empiricalTestRun"]
    jsonschema.validate(_json(minimal), facet_schema)


def test_the_operator_and_sensor_hand_their_facets_to_the_providers_extractor() -> None:
    from airflow.providers.openlineage.extractors.base import DefaultExtractor

    from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
    from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor

    operator = EmpiricalTriggerTestRunOperator(task_id="run_tests", environment="production")
    sensor = EmpiricalTestRunSensor(task_id="wait_for_tests", test_run_id=42)
    for task in (operator, sensor):
        assert DefaultExtractor(task).extract_on_complete(None).run_facets == {}  # nothing finished yet
        task.test_run_summary = _summary()
        for lineage in (
            DefaultExtractor(task).extract_on_complete(None),
            DefaultExtractor(task).extract_on_failure(None),
        ):
            assert lineage is not None  # None: the provider caught an exception
            assert lineage.run_facets["empiricalTestRun"].testRunId == 42
            assert lineage.inputs[0].name == "acme/production"


# -- real DAG runs with the provider's listener --

CHILD = """
import json, sys
from tests.airflow_helpers import load_dags, task_states
bag = load_dags(sys.argv[1])
assert not bag.import_errors, bag.import_errors
states = {dag_id: task_states(bag.get_dag(dag_id).test()) for dag_id in sys.argv[2:]}
print("STATES " + json.dumps(states))
"""


@pytest.mark.e2e
def test_dag_runs_emit_the_facets_through_the_listener(emulator: Any, tmp_path: Path) -> None:
    from airflow_provider_empirical.emulator import RunScript

    quick = {"queued_for": 0.1, "run_for": 0.5}
    emulator.queue_runs(
        RunScript(
            outcome="failed",
            tests=["cart \u203a adds", "cart \u203a removes"],
            failed_tests=["cart \u203a removes"],
            **quick,
        ),
        RunScript(outcome="passed", **quick),
    )
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "empirical_e2e_dags.py").symlink_to(ROOT / "tests" / "dags" / "empirical_e2e_dags.py")
    events_file = tmp_path / "events.jsonl"
    home = Path(tempfile.mkdtemp(prefix="empirical-ol-home-", dir=tmp_path))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW_CONN_EMPIRICAL_DEFAULT": conn_json(emulator),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "empirical-ol-test",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(dags), "e2e_operator_sync", "e2e_sensor_deferrable"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=400,
    )
    states_line = [line for line in done.stdout.splitlines() if line.startswith("STATES ")]
    assert done.returncode == 0 and states_line, (done.stdout[-3000:], done.stderr[-5000:])
    states = json.loads(states_line[-1].removeprefix("STATES "))
    assert states["e2e_operator_sync"]["run_tests"] == "failed"
    assert states["e2e_sensor_deferrable"]["wait_for_tests"] == "success"

    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    by_task = {(e["job"]["name"], e["eventType"]): e for e in events if "job" in e}
    failed_run, passed_run = emulator.runs

    failed = by_task[("e2e_operator_sync.run_tests", "FAIL")]
    facet = failed["run"]["facets"]["empiricalTestRun"]
    assert facet["testRunId"] == failed_run["id"] and facet["outcome"] == "failed"
    assert facet["url"] == f"{emulator.url}/demo/test-runs/{failed_run['id']}"
    assert (facet["failedCount"], facet["totalCount"]) == (1, 2)
    (dataset,) = failed["inputs"]
    host = emulator.url.split("://", 1)[1]
    assert (dataset["namespace"], dataset["name"]) == (f"empirical://{host}", "demo/production")
    assertions = dataset["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a["success"]) for a in assertions] == [("cart \u203a removes", False)]

    passed = by_task[("e2e_sensor_deferrable.wait_for_tests", "COMPLETE")]
    facet = passed["run"]["facets"]["empiricalTestRun"]
    assert facet["testRunId"] == passed_run["id"] and facet["outcome"] == "success"
    assert facet["failedCount"] == 0 and passed["inputs"][0]["name"] == "demo/production"
    # the trigger task without waiting has no finished run to report
    trigger = by_task[("e2e_sensor_deferrable.trigger_tests", "COMPLETE")]
    assert "empiricalTestRun" not in trigger["run"]["facets"]
