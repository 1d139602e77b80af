"""OpenLineage facets for the operator and the sensor (only with apache-airflow-providers-openlineage).

The operator and the sensor import this module inside their ``get_openlineage_facets_on_*``
methods, which only the OpenLineage provider calls, and this module imports the OpenLineage
packages only inside ``facets_for``: without the provider, nothing of OpenLineage is imported.

What one finished test run reports (docs/openlineage.md has the full description):

* run facet ``empiricalTestRun``: id, URL, state, outcome, environment, branch and counts;
* run facet ``externalQuery``: the test run id, so lineage tools can link to Empirical;
* run facet ``test`` (OpenLineage clients that have ``TestRunFacet``): failed and flaky tests;
* one input dataset, namespace ``empirical://<dashboard host>``, name ``<project>/<environment>``
  (the environment under test), with the input facet ``dataQualityAssertions``: one assertion per
  failed test (``success=False``) and per flaky test (``success=True``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_empirical import __version__

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

PRODUCER = f"https://pypi.org/project/airflow-provider-empirical/{__version__}/"
FACET_NAME = "empiricalTestRun"
# The JSON Schema is in docs/openlineage.md; the URL names the release that emitted the facet.
SCHEMA_URL = f"{PRODUCER}#/$defs/EmpiricalTestRunFacet"
FAILED = "failed"
FLAKY = "flaky"


def facets_for(operator: Any, task_instance: Any) -> OperatorLineage:
    """Lineage of the test run the task waited for; empty when no run finished."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    summary = getattr(operator, "test_run_summary", None)
    if not isinstance(summary, dict) or summary.get("id") is None:
        return OperatorLineage()
    from openlineage.client.facet_v2 import external_query_run

    namespace = _namespace(operator, summary)
    run_facets: dict[str, Any] = {
        FACET_NAME: run_facet(summary),
        "externalQuery": external_query_run.ExternalQueryRunFacet(
            externalQueryId=str(summary["id"]), source=namespace, producer=PRODUCER
        ),
    }
    severity = "error" if getattr(operator, "fail_on_test_failure", True) else "warn"
    tests = _test_run_facet(summary, severity)
    if tests is not None:
        run_facets["test"] = tests
    tested = _tested_environment(operator, summary, namespace, severity)
    return OperatorLineage(inputs=[tested], run_facets=run_facets)


# -- the custom run facet --


def __getattr__(name: str) -> Any:
    """``EmpiricalTestRunFacet`` is built on first use, so that importing this module imports no
    OpenLineage package; it is then a module attribute (pickle finds it by name)."""
    if name == "EmpiricalTestRunFacet":
        cls = _build_facet_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build_facet_class() -> type[Any]:
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class EmpiricalTestRunFacet(RunFacet):  # type: ignore[misc,unused-ignore]
        """One Empirical test run: where to see it, how it ended and its counts."""

        testRunId: int  # camelCase, as OpenLineage facets spell fields
        url: str | None = attr.field(default=None)
        state: str | None = attr.field(default=None)
        outcome: str | None = attr.field(default=None)
        environment: str | None = attr.field(default=None)
        branch: str | None = attr.field(default=None)
        totalCount: int | None = attr.field(default=None)
        successCount: int | None = attr.field(default=None)
        failedCount: int | None = attr.field(default=None)
        skippedCount: int | None = attr.field(default=None)
        flakyCount: int | None = attr.field(default=None)
        failedCountAfterSnoozing: int | None = attr.field(default=None)
        durationMs: int | None = attr.field(default=None)
        errorCode: str | None = attr.field(default=None)
        rerunOf: int | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL

    EmpiricalTestRunFacet.__module__ = __name__
    EmpiricalTestRunFacet.__qualname__ = "EmpiricalTestRunFacet"
    return EmpiricalTestRunFacet


def run_facet(summary: dict[str, Any]) -> Any:
    """The ``empiricalTestRun`` facet of a task's ``test_run_summary``."""
    from airflow_provider_empirical.api.test_runs import COUNTS

    counts = {_camel(key): _int(summary.get(key)) for key in COUNTS}
    facet_class = __getattr__("EmpiricalTestRunFacet")
    return facet_class(
        testRunId=summary["id"],
        url=_str(summary.get("url")),
        state=_str(summary.get("state")),
        outcome=_str(summary.get("outcome")),
        environment=_str(summary.get("environment_slug")),
        branch=_str(summary.get("test_run_branch")),
        durationMs=_int(summary.get("duration")),
        errorCode=_str(summary.get("error_code")),
        rerunOf=_int(summary.get("rerun_of")),
        producer=PRODUCER,
        **counts,
    )


# -- per-test results --


def _cases(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(failed|flaky, test case) for the tests the API named; empty when it named none."""
    cases: list[tuple[str, dict[str, Any]]] = []
    for kind, key in ((FAILED, "failed_tests"), (FLAKY, "flaky_tests")):
        for case in summary.get(key) or []:
            if isinstance(case, dict) and isinstance(case.get("name"), str) and case["name"]:
                cases.append((kind, case))
    return cases


def _optional(kind: str, case: dict[str, Any], severity: str) -> dict[str, Any]:
    """Fields of newer OpenLineage clients: severity, kind of test, Playwright's status and id."""
    params = {"status": case.get("status"), "pw_test_id": case.get("pw_test_id"), "flaky": kind == FLAKY}
    params = {key: value for key, value in params.items() if value is not None}
    return {"severity": severity, "type": "playwright", "params": params}


def _supported(cls: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """Only the optional fields this client's facet class has (older clients lack severity etc.)."""
    import attr

    known = attr.fields_dict(cls)
    return {key: value for key, value in fields.items() if key in known}


def _assertions_facet(summary: dict[str, Any], severity: str) -> Any | None:
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dq

    cases = _cases(summary)
    if not cases:
        return None
    assertions = [
        dq.Assertion(
            assertion=case["name"],
            success=kind == FLAKY,
            column=None,
            **_supported(dq.Assertion, {"name": case["name"], **_optional(kind, case, severity)}),
        )
        for kind, case in cases
    ]
    return dq.DataQualityAssertionsDatasetFacet(assertions=assertions, producer=PRODUCER)


def _test_run_facet(summary: dict[str, Any], severity: str) -> Any | None:
    """The spec's ``test`` run facet (OpenLineage 1.4x+; its item class was renamed once)."""
    try:
        from openlineage.client.facet_v2 import test_run
    except ImportError:
        return None
    item = getattr(test_run, "TestExecution", None) or getattr(test_run, "Test", None)
    cases = _cases(summary)
    if item is None or not cases:
        return None
    tests = [
        item(
            name=case["name"],
            status="pass" if kind == FLAKY else "fail",
            **_supported(item, _optional(kind, case, severity)),
        )
        for kind, case in cases
    ]
    return test_run.TestRunFacet(tests=tests, producer=PRODUCER)


# -- the dataset the tests assert on: the environment under test --


def _tested_environment(operator: Any, summary: dict[str, Any], namespace: str, severity: str) -> Any:
    from openlineage.client.event_v2 import InputDataset

    facets = {}
    assertions = _assertions_facet(summary, severity)
    if assertions is not None:
        facets["dataQualityAssertions"] = assertions
    return InputDataset(namespace=namespace, name=dataset_name(operator, summary), inputFacets=facets)


def dataset_name(operator: Any, summary: dict[str, Any]) -> str:
    """``<project>/<environment>``; ``<project>/test-runs`` when the environment is not known.

    The project slug comes from the run (or from its dashboard URL, ``.../<slug>/test-runs/<id>``)
    and is left out when neither names it.
    """
    project = _str(summary.get("project_slug")) or _project_from_url(_str(summary.get("url")))
    environment = _str(summary.get("environment_slug"))
    if environment is None:
        configured = getattr(operator, "environment", None)  # rendered once the task ran
        if isinstance(configured, str) and configured.strip() and "{" not in configured:
            environment = configured.strip()
    last = environment or "test-runs"
    return f"{project}/{last}" if project else last


def _project_from_url(url: str | None) -> str | None:
    if not url:
        return None
    parts = [part for part in urlsplit(url).path.split("/") if part]
    if len(parts) >= 3 and parts[-2] == "test-runs":
        return parts[-3]
    return None


def _namespace(operator: Any, summary: dict[str, Any]) -> str:
    """``empirical://<host[:port]>`` of the dashboard that shows the run (the run's URL), else of the
    connection's dashboard, else of Empirical's default dashboard."""
    host = urlsplit(_str(summary.get("url")) or "").netloc
    if not host:
        host = _connection_dashboard_host(getattr(operator, "empirical_conn_id", None))
    return f"empirical://{host}"


def _connection_dashboard_host(conn_id: Any) -> str:
    from airflow_provider_empirical.get_provider_info import DASHBOARD_URL

    default = urlsplit(DASHBOARD_URL).netloc
    if not isinstance(conn_id, str):
        return default
    try:
        from airflow_provider_empirical.hooks.empirical import EmpiricalHook

        return urlsplit(EmpiricalHook(conn_id).config.dashboard_url).netloc or default
    except Exception:  # lineage never fails a task: fall back to the default dashboard
        return default


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
