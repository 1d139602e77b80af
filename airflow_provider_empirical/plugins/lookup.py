"""Which Empirical run a task instance is about, read from Airflow's own records of that task.

Never from the URL beyond the task's identity (DAG, DAG run, task, map index), which the route
authorizes first. In order:

1. the run id: the task's XCom ``test_run_id`` (the trigger operator; the sensor when it chose a
   run by filters), else the ``id`` of its ``return_value`` summary (or the run id the operator
   returned when it did not wait), else its rendered ``test_run_id`` field (a sensor given an id);
2. the run's link: the task's XCom ``test_run_url`` (what the "Empirical test run" button opens);
3. the connection: the task's XCom ``empirical_conn_id`` when it pushed one, else
   ``empirical_default``. The operators keep their connection id out of the serialized DAG, so
   the API server cannot read it from there; the run link is checked against the connection
   before anything is shown (`fetch.same_run_link`);
4. the pass policy of the verdict: the task's rendered ``fail_on_test_failure``,
   ``fail_on_empty_run``, ``honor_snoozes``, ``max_failed_tests``, ``fail_on_flaky``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_empirical.api.errors import EmpiricalValidationError
from airflow_provider_empirical.api.test_runs import int_or_none
from airflow_provider_empirical.api.verdict import Policy
from airflow_provider_empirical.links import CONN_ID_KEY, DEFAULT_CONN_ID, TEST_RUN_ID_KEY, TEST_RUN_URL_KEY
from airflow_provider_empirical.validation import boolean, non_negative_int

OPERATORS = frozenset(
    {"EmpiricalTriggerTestRunOperator", "EmpiricalTestRunSensor", "EmpiricalCancelTestRunOperator"}
)
RETURN_KEY = "return_value"
POLICY_FIELDS = (
    "fail_on_test_failure",
    "fail_on_empty_run",
    "honor_snoozes",
    "max_failed_tests",
    "fail_on_flaky",
)
MAX_CONN_ID = 250  # Airflow's conn_id column


class NotFound(Exception):
    """No view for this path: `message` is safe to show."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class TaskRun:
    """A task instance of ours and what it says of its Empirical run."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    operator: str | None
    state: str | None
    test_run_id: int | None
    found_by: str | None  # where the run id came from, for the page
    url: str | None
    conn_id: str
    policy: Policy
    policy_note: str | None  # why the default policy is used, when it is

    def identity(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "operator": self.operator,
            "state": self.state,
            "connection": self.conn_id,
            "test_run_found_by": self.found_by,
        }


def map_index_of(value: str | None) -> int:
    """The `map_index` query parameter: an integer >= -1; absent, empty, or the UI's unfilled
    ``{MAP_INDEX}`` placeholder (an unmapped task) is -1. NotFound for anything else."""
    if value is None or value.strip() in ("", "-1", "{MAP_INDEX}"):
        return -1
    number = int_or_none(value)
    if number is None or number > 1_000_000:
        raise NotFound("map_index must be an integer >= -1", status=400)
    return number


def describe(
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int,
    operator: str | None,
    state: str | None,
    xcoms: Mapping[str, Any],
    rendered: Mapping[str, Any],
) -> TaskRun:
    """What a task instance's own records say of its run. NotFound when it is no Empirical task."""
    if operator not in OPERATORS and not isinstance(xcoms.get(TEST_RUN_URL_KEY), str):
        raise NotFound(
            f"Task {task_id!r} ({operator or 'unknown operator'}) does not run Empirical tests: this tab "
            "shows the test runs of EmpiricalTriggerTestRunOperator, EmpiricalTestRunSensor and "
            "EmpiricalCancelTestRunOperator tasks."
        )
    test_run_id, found_by = _run_id(xcoms, rendered)
    url = xcoms.get(TEST_RUN_URL_KEY)
    conn_id = xcoms.get(CONN_ID_KEY)
    if not (isinstance(conn_id, str) and 0 < len(conn_id) <= MAX_CONN_ID):
        conn_id = DEFAULT_CONN_ID
    policy, note = _policy(rendered)
    return TaskRun(
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        operator=operator,
        state=state,
        test_run_id=test_run_id,
        found_by=found_by,
        url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
        conn_id=conn_id,
        policy=policy,
        policy_note=note,
    )


def _run_id(xcoms: Mapping[str, Any], rendered: Mapping[str, Any]) -> tuple[int | None, str | None]:
    candidates = (
        (xcoms.get(TEST_RUN_ID_KEY), f"XCom {TEST_RUN_ID_KEY}"),
        (_summary_id(xcoms.get(RETURN_KEY)), f"XCom {RETURN_KEY}"),
        (rendered.get("test_run_id"), "rendered field test_run_id"),
    )
    for value, where in candidates:
        number = int_or_none(value)
        if number:
            return number, where
    return None, None


def _summary_id(value: Any) -> Any:
    """The run id in a `return_value`: the summary's `id`, or the id the operator returned bare."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _policy(rendered: Mapping[str, Any]) -> tuple[Policy, str | None]:
    present = {name: rendered[name] for name in POLICY_FIELDS if rendered.get(name) is not None}
    if not present:
        return Policy(), "the task's pass policy is not rendered yet: the default one is applied"
    try:
        values: dict[str, Any] = {
            name: (non_negative_int if name == "max_failed_tests" else boolean)(value, name)
            for name, value in present.items()
        }
    except EmpiricalValidationError as exc:
        return Policy(), f"the task's pass policy cannot be read ({exc.message}): the default one is applied"
    return Policy(**values), None


def find(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskRun:
    """Read the task instance, its XComs and rendered fields from Airflow's database (API server)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    ti = session.scalar(
        select(TaskInstance).where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == map_index,
        )
    )
    if ti is None:
        raise NotFound("No such task instance")

    def read(keys: tuple[str, ...]) -> dict[str, Any]:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
                XComModel.key.in_(keys),
            )
        ).all()
        values: dict[str, Any] = {}
        for row in rows:
            try:
                values[row.key] = XComModel.deserialize_value(row)
            except Exception:  # an XCom written by something else: not ours to read
                continue
        return values

    xcoms = read((TEST_RUN_ID_KEY, TEST_RUN_URL_KEY, CONN_ID_KEY))
    if TEST_RUN_ID_KEY not in xcoms:  # the summary can be large (up to 1,000 tests): only when needed
        xcoms.update(read((RETURN_KEY,)))
    rendered = RenderedTaskInstanceFields.get_templated_fields(ti, session=session) or {}
    state = ti.state
    return describe(
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        operator=ti.operator,
        state=str(state.value if hasattr(state, "value") else state) if state is not None else None,
        xcoms=xcoms,
        rendered=rendered if isinstance(rendered, Mapping) else {},
    )
