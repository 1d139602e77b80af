"""The FastAPI app Airflow's API server mounts under ``/empirical`` (Airflow 3.1+).

Routes, all GET, all read-only, none forwarding anything to Empirical:

- ``/empirical/ti/{dag_id}/{run_id}/{task_id}?map_index=N``: the "Empirical tests" tab of a task
  instance; HTML, or JSON with ``Accept: application/json``. Needs an authenticated user who may
  read that DAG's task instances and XComs (Airflow's own `requires_access_dag`).
- ``/empirical/project``: the project page (nav entry); needs a user who may read every DAG
  (``is_authorized_dag`` without a DAG id), since runs of any DAG's tasks appear there.

Authentication and authorization run as FastAPI dependencies before the handler, so an
anonymous request is a 401 and a user without access a 403 before anything is looked up.
Empirical is only called from the handlers, through `fetch`. What a view needs (the lookup, the
pages, the parser, the hook, httpx) is imported on the first view, not at API-server start.

No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations at
runtime, and they name classes imported inside `create_app`.
"""

import secrets
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

# Headers of every page: no framing but by Airflow itself, nothing loaded from elsewhere, no
# caching of what a user may see, no referrer to Empirical.
_HEADERS = {
    "Cache-Control": "no-store",
    "Vary": "Accept, Cookie, Authorization",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _csp(nonce: str) -> str:
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'nonce-{nonce}'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    )


def wants_json(accept: str | None) -> bool:
    """Whether the client prefers ``application/json`` to HTML (``*/*`` and browsers get HTML)."""
    best = {"json": 0.0, "html": 0.0}
    for part in (accept or "").split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = {"application/json": "json", "text/html": "html", "application/xhtml+xml": "html"}.get(
            media.lower()
        )
        if kind:
            best[kind] = max(best[kind], quality)
    return best["json"] > 0 and best["json"] > best["html"]


def create_app() -> "FastAPI":
    """The plugin's app. Imports FastAPI and Airflow's API-server security here, not at plugin load."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException, Request, status
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="Empirical tests", docs_url=None, redoc_url=None, openapi_url=None)

    def respond(request: Request, data: dict[str, Any], html: Any, code: int = 200) -> Response:
        if wants_json(request.headers.get("accept")):
            return JSONResponse(data, status_code=code, headers=_HEADERS)
        nonce = secrets.token_urlsafe(16)
        return HTMLResponse(
            html(nonce), status_code=code, headers={**_HEADERS, "Content-Security-Policy": _csp(nonce)}
        )

    def problem(request: Request, title: str, message: str, code: int, **extra: Any) -> Response:
        from airflow_provider_empirical.plugins import pages

        return respond(
            request,
            {"error": message, **extra},
            lambda nonce: pages.message_page(title, message, nonce),
            code,
        )

    def may_read_every_dag(user: GetUserDep) -> None:
        if not get_auth_manager().is_authorized_dag(method="GET", user=user):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")

    @app.get(
        "/ti/{dag_id}/{run_id}/{task_id}",
        dependencies=[
            Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.TASK_INSTANCE)),
            Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.XCOM)),
        ],
    )
    def task_tests(
        dag_id: str,
        run_id: str,
        task_id: str,
        request: Request,
        session: SessionDep,
        map_index: str | None = None,
        status: str | None = None,
        q: str | None = None,
        page: str | None = None,
    ) -> Response:
        from airflow_provider_empirical.plugins import lookup, pages, views

        title = "Empirical tests"
        try:
            index = lookup.map_index_of(map_index)
            task = lookup.find(session, dag_id, run_id, task_id, index)
        except lookup.NotFound as exc:
            return problem(request, title, exc.message, exc.status)
        finally:
            session.close()  # no database connection held while Empirical answers
        if task.test_run_id is None:
            message = "This task has not started or found an Empirical test run yet."
            return respond(
                request,
                {"task": task.identity(), "test_run": None, "message": message},
                lambda nonce: pages.message_page(title, message, nonce),
            )
        from airflow_provider_empirical.plugins import fetch

        try:
            found = fetch.source(task.conn_id)
            run, fetched = found.run(task.test_run_id, task.url)
            data = views.task_run_data(
                run,
                task.policy,
                run_url=found.run_url(run, task.url),
                snoozes_url=found.snoozes_url(run, task.url),
            )
        except fetch.PluginError as exc:
            return problem(request, title, exc.message, exc.status, task=task.identity())
        data["task"] = task.identity()
        data["policy_note"] = task.policy_note
        data["cached"] = fetched is not None
        data["fetched_at"] = (
            time.time() - (time.monotonic() - fetched) if fetched is not None else time.time()
        )
        choice, query, number = (
            views.status_filter(status),
            (q or "")[: views.MAX_QUERY],
            views.page_number(page),
        )
        return respond(
            request,
            data,
            lambda nonce: pages.task_page(
                data, status=choice, query=query, page=number, map_index=index, nonce=nonce
            ),
        )

    @app.get("/project", dependencies=[Depends(may_read_every_dag)])
    def project(request: Request) -> Response:
        from airflow_provider_empirical.links import DEFAULT_CONN_ID
        from airflow_provider_empirical.plugins import fetch, pages

        data, cached = fetch.source(project_conn_id(DEFAULT_CONN_ID)).project()
        data = {**data, "cached": cached}
        code = 502 if data.get("error") else 200
        return respond(request, data, lambda nonce: pages.project_page(data, nonce), code)

    return app


def project_conn_id(default: str) -> str:
    """The project page's connection: ``[empirical] ui_conn_id`` in Airflow's configuration, or `default`."""
    try:
        from airflow.configuration import conf

        value = conf.get("empirical", "ui_conn_id", fallback=default)
    except Exception:
        return default
    return value.strip() if isinstance(value, str) and value.strip() else default
