"""Reading a finished DAG run back from Airflow's database, on Airflow 2.11 and 3.x."""

from __future__ import annotations

from typing import Any

from airflow.utils.session import create_session


def load_dags(folder: str) -> Any:
    """A DagBag of `folder` on a migrated metadata database (Airflow 2.11 and 3.x)."""
    from airflow.utils import db

    db.initdb()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=folder)


def _xcom_model() -> Any:
    try:
        from airflow.models.xcom import XComModel

        return XComModel
    except ImportError:  # Airflow 2
        from airflow.models.xcom import BaseXCom

        return BaseXCom


def xcoms(dag_run: Any, task_id: str) -> dict[str, Any]:
    """Every XCom the task pushed, deserialized, by key."""
    model = _xcom_model()
    with create_session() as session:
        rows = (
            session.query(model)
            .filter(model.dag_id == dag_run.dag_id, model.run_id == dag_run.run_id, model.task_id == task_id)
            .all()
        )
        return {row.key: _xcom_value(model, row) for row in rows}


def _xcom_value(model: Any, row: Any) -> Any:
    if hasattr(model, "init_on_load"):  # Airflow 2: rows are deserialized as they load
        return row.value
    return model.deserialize_value(row)


def task_states(dag_run: Any) -> dict[str, str]:
    """Task id -> state, in the order the tasks started."""
    with create_session() as session:
        tis = sorted(dag_run.get_task_instances(session=session), key=lambda ti: str(ti.start_date or "~"))
        return {ti.task_id: str(ti.state) for ti in tis}


def task_instance(dag_run: Any, task_id: str) -> Any:
    with create_session() as session:
        (ti,) = [ti for ti in dag_run.get_task_instances(session=session) if ti.task_id == task_id]
        session.expunge(ti)
        return ti


def rendered_fields(dag_run: Any, task_id: str) -> dict[str, Any]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields

    with create_session() as session:
        ti = next(ti for ti in dag_run.get_task_instances(session=session) if ti.task_id == task_id)
        return RenderedTaskInstanceFields.get_templated_fields(ti, session=session) or {}
