"""Routes: the only place that turns requests into responses.

Status codes, JSON bodies, error wording and request validation live here: the public API
(/api/...), the control API (/_emulator/...) and the dashboard pages. The state module answers
in plain data and exceptions; the HTTP server module only moves bytes and injects faults.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .models import STATES, Fault, RunScript
from .state import NotCompleted, RunNotFound, SourceNotFound, State, UnknownEnvironment

RUNS_PATH = "/api/test-runs"
BUILD_KEYS = ("url", "branch", "commit", "commit_url", "version")


@dataclass(frozen=True)
class Request:
    """A parsed request: lower-case header names, the query as a flat dict, the raw body.

    ``connection`` is the socket it arrived on (the outage route keeps it open to answer).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    connection: Any = None


@dataclass(frozen=True)
class Response:
    """Status, headers and body bytes of a reply."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise a JSON reply."""
    body = json.dumps(payload).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The error shape used for every 4xx: {"error": {"message": ...}}."""
    return json_response({"error": {"message": message}}, status, headers)


def unreadable_body() -> Response:
    """The 400 for a body that could not be read (bad Content-Length or chunking)."""
    return error(400, "body: could not read the request body")


def internal_error() -> Response:
    """The 500 sent when the emulator itself fails."""
    return error(500, "emulator internal error")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: NaN and Infinity are rejected like a JavaScript server would."""
    return json.loads(raw, parse_constant=_reject_constant)


def lenient_json(raw: bytes) -> Any:
    """The body as JSON for the request log, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


# --- validation ---------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """JSON type name of a value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Each check returns None when valid, else the rest of the message after the field name,
# e.g. ": must be a string" or ".url: must be a string" or "[0].name: ...".
Check = Callable[[Any], "str | None"]


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f": must be a string, got {_kind(value)}"


def _non_empty_string(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    return f": must be a non-empty string, got {json.dumps(value)}"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f": must be a boolean, got {_kind(value)}"


def _positive_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 1 else f": must be an integer >= 1, got {json.dumps(value)}"


def _build(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f": must be an object, got {_kind(value)}"
    for key, item in value.items():
        if key not in BUILD_KEYS:
            return f".{key}: unknown key (allowed: {', '.join(BUILD_KEYS)})"
        if not isinstance(item, str):
            return f".{key}: must be a string, got {_kind(item)}"
    return None


def _metadata(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f": must be an object, got {_kind(value)}"
    for key, item in value.items():
        if _kind(item) not in ("string", "number"):
            return f".{key}: must be a string or a number, got {_kind(item)}"
    return None


def _overrides(value: Any) -> str | None:
    if not isinstance(value, list):
        return f": must be an array, got {_kind(value)}"
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            return f"[{index}]: must be an object with name and value, got {_kind(item)}"
        if not isinstance(item.get("name"), str) or not item["name"]:
            return f"[{index}].name: must be a non-empty string"
        if not isinstance(item.get("value"), str):
            return f"[{index}].value: must be a string, got {_kind(item.get('value'))}"
    return None


def _strings(value: Any) -> str | None:
    if not isinstance(value, list):
        return f": must be an array of strings, got {_kind(value)}"
    for index, item in enumerate(value):
        if not isinstance(item, str):
            return f"[{index}]: must be a string, got {_kind(item)}"
    return None


TRIGGER_CHECKS: tuple[tuple[str, Check], ...] = (
    ("environment", _non_empty_string),
    ("build", _build),
    ("metadata", _metadata),
    ("environment_variables_overrides", _overrides),
    ("tags", _strings),
    ("branch", _string),
    ("project_id", _positive_int),
    ("send_notifications", _bool),
    ("total_shards", _positive_int),
    ("rerun_source_id", _positive_int),
    ("rerun_only_failed", _bool),
    ("github_actor", _string),
    ("test_case_ids", _strings),
)


def validate_trigger(body: Any) -> str | None:
    """The first problem with a trigger body as "<field>: <what is wrong>", or None."""
    if not isinstance(body, dict):
        return f"body: must be a JSON object, got {_kind(body)}"
    if "environment" not in body:
        return "environment: is required"
    for name, check in TRIGGER_CHECKS:
        if name in body:
            problem = check(body[name])
            if problem:
                return name + problem
    if "branch" in body and "build" in body:
        return "branch: cannot be combined with build, pick one"
    if body.get("rerun_only_failed") is True and "rerun_source_id" not in body:
        return "rerun_only_failed: requires rerun_source_id"
    return None


def _object_body(raw: bytes) -> dict[str, Any] | Response:
    """An optional JSON object body (empty means {}), or the 400."""
    try:
        body = parse_json(raw) if raw.strip() else {}
    except ValueError as exc:
        return error(400, f"body: invalid JSON ({exc})")
    if not isinstance(body, dict):
        return error(400, f"body: must be a JSON object, got {_kind(body)}")
    return body


def _int_param(query: dict[str, str], name: str, low: int, high: int | None = None) -> int | None:
    """An integer query parameter within bounds; ValueError names the parameter."""
    raw = query.get(name)
    if raw is None:
        return None
    bounds = f">= {low}" if high is None else f"between {low} and {high}"
    if not re.fullmatch(r"-?[0-9]{1,18}", raw) or int(raw) < low or (high is not None and int(raw) > high):
        raise ValueError(f"{name}: must be an integer {bounds}, got {raw!r}")
    return int(raw)


def _list_filters(query: dict[str, str]) -> dict[str, Any]:
    """Validated filters of GET /api/test-runs; empty values count as absent."""
    query = {k: v for k, v in query.items() if v != ""}
    state, result, env_raw = query.get("state"), query.get("result"), query.get("environment_ids")
    if state is not None and state not in STATES:
        raise ValueError(f"state: must be one of {', '.join(STATES)}, got {state!r}")
    if result is not None and result not in ("passed", "failed"):
        raise ValueError(f"result: must be passed or failed, got {result!r}")
    env_ids = None
    if env_raw is not None:
        parts = [p.strip() for p in env_raw.split(",")]
        if not all(re.fullmatch(r"[0-9]{1,18}", p) for p in parts):
            raise ValueError(f"environment_ids: must be comma-separated integers, got {env_raw!r}")
        env_ids = {int(p) for p in parts}
    return {
        "page": _int_param(query, "page", 1) or 1,
        "per_page": _int_param(query, "per_page", 1, 100) or 20,
        "id": _int_param(query, "id", 1),
        "days": _int_param(query, "interval_in_days", 1),
        "branch": query.get("branch"),
        "state": state,
        "result": result,
        "env_ids": env_ids,
    }


def _result(item: dict[str, Any]) -> str | None:
    """passed = ended without failures; failed = any other terminal run."""
    if item["state"] == "ended" and not item["failed_count"]:
        return "passed"
    return "failed" if item["state"] in ("ended", "error", "cancelled") else None


def _trigger_answer(item: dict[str, Any]) -> Response:
    """The 200 of the trigger PUT (and of a re-run)."""
    return json_response(
        {
            "data": {
                "trigger": {"success": True},
                "test_run": {
                    "id": item["id"],
                    "state": item["state"],
                    "test_run_branch": item["test_run_branch"],
                    "created_at": item["created_at"],
                },
            }
        }
    )


# --- dashboard helpers ------------------------------------------------------------------------------

PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
    "body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em .8em;text-align:left}}</style>"
    "</head><body><h1>{title}</h1>{content}<p><small>Empirical emulator</small></p></body></html>"
)


def _page(status: int, title: str, content: str) -> Response:
    body = PAGE.format(title=html.escape(title), content=content).encode()
    return Response(status, body, {"Content-Type": "text/html; charset=utf-8"})


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _error_code(run: dict[str, Any]) -> Any:
    """The error code under whichever spelling the run's script chose."""
    error_field = run.get("error")
    nested = error_field.get("code") if isinstance(error_field, dict) else None
    return run.get("error_code") or run.get("errorCode") or nested


def _href(slug: str, run_id: int) -> str:
    return f"/{html.escape(slug)}/test-runs/{run_id}"


# An outage: (seconds, the connection to keep open long enough to answer) -> None.
Outage = Callable[[float, Any], None]


class App:
    """Answers requests from the state; `outage` takes the server down (the control API's /down)."""

    API_ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
        (r"/api/test-runs", ("GET", "PUT")),
        (r"/api/test-runs/([^/]+)", ("GET",)),
        (r"/api/test-runs/([^/]+)/cancel", ("POST",)),
        (r"/api/test-runs/([^/]+)/re-run", ("POST",)),
        (r"/api/v2/test-runs/([^/]+)/cases", ("GET",)),
    )
    CONTROL_ROUTES: ClassVar[dict[str, str]] = {
        "/_emulator/health": "GET",
        "/_emulator/requests": "GET",
        "/_emulator/runs": "GET",
        "/_emulator/reset": "POST",
        "/_emulator/runs/queue": "POST",
        "/_emulator/faults": "POST",
        "/_emulator/default-script": "POST",
        "/_emulator/down": "POST",
        "/_emulator/response-delay": "POST",
        "/_emulator/shape": "POST",
    }

    def __init__(self, state: State, outage: Outage) -> None:
        self.state = state
        self.outage = outage

    # --- kinds of path -------------------------------------------------------------------------

    @staticmethod
    def is_control(path: str) -> bool:
        """Whether a path belongs to the control API (never recorded, slowed or faulted)."""
        return path == "/_emulator" or path.startswith("/_emulator/")

    @staticmethod
    def is_api(path: str) -> bool:
        """Whether a path belongs to the public API (recorded and slowed)."""
        return path == "/api" or path.startswith("/api/")

    def handle(self, request: Request) -> Response:
        """Answer a public API request or a dashboard page."""
        if self.is_api(request.path):
            return self.api(request)
        return self.dashboard(request)

    # --- the API -------------------------------------------------------------------------------

    def authorize(self, headers: dict[str, str]) -> int | Response:
        """The project scope of a request, or the 401/403/400 reply."""
        challenge = {"WWW-Authenticate": 'Bearer realm="empirical"'}
        auth = headers.get("authorization")
        if auth is None:
            return error(401, "missing Authorization header, expected 'Bearer <API key>'", challenge)
        scheme, _, key = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return error(401, "malformed Authorization header, expected 'Bearer <API key>'", challenge)
        project_id = self.state.project_of_key(key.strip())
        if project_id is None:
            return error(401, "invalid API key", challenge)
        raw = headers.get("x-project-id")
        if raw is not None:
            if not re.fullmatch(r"\s*-?\d{1,18}\s*", raw):
                return error(400, f"x-project-id: must be an integer, got {raw!r}")
            if int(raw) != project_id:
                return error(403, f"x-project-id: project {int(raw)} is not accessible with this API key")
        return project_id

    def api(self, request: Request) -> Response:
        """Route an /api/ request: 404 for unknown paths, 405 for other methods, then auth."""
        method, path = request.method, request.path
        found = next(((m, a) for p, a in self.API_ROUTES if (m := re.fullmatch(p, path))), None)
        if found is None:
            return error(404, f"not found: {path}")
        match, allowed = found
        if method not in allowed:
            return error(405, f"method {method} not allowed on {path}", {"Allow": ", ".join(allowed)})
        scope = self.authorize(request.headers)
        if isinstance(scope, Response):
            return scope
        if path == RUNS_PATH:
            if method == "PUT":
                return self.trigger(scope, request.body)
            return self.list_runs(scope, request.query)
        run_id = match.group(1)
        if re.fullmatch(r"[0-9]{1,18}", run_id) is None:
            return error(404, f"test run {run_id} not found")
        if path.endswith("/cancel"):
            return self.cancel(scope, int(run_id), request.body)
        if path.endswith("/re-run"):
            return self.rerun(scope, int(run_id), request.body)
        try:
            fields, rows = self.state.run_view(scope, int(run_id))
        except RunNotFound:
            return error(404, f"test run {run_id} not found")
        if path.endswith("/cases"):
            cases = [{k: row[k] for k in ("pw_test_id", "name", "status")} for row in rows]
            return json_response({"data": cases})
        project = self.state.project(scope)
        if self.state.shape == "flat":
            return json_response({"data": {"test_run": fields, "project": project}})
        nested = {"testRun": fields, "flattenedSummaryDetails": rows}
        return json_response({"data": {"test_run": nested, "project": project}})

    def trigger(self, scope: int, raw: bytes) -> Response:
        """PUT /api/test-runs: validate, then create a queued run."""
        try:
            body = parse_json(raw)
        except ValueError as exc:
            return error(400, f"body: invalid JSON ({exc})")
        problem = validate_trigger(body)
        if problem:
            return error(400, problem)
        if "project_id" in body and body["project_id"] != scope:
            message = f"project_id: {body['project_id']} does not match the request's project scope ({scope})"
            return error(400, message)
        return self._create(lambda: self.state.create_run(scope, body))

    def _create(self, create: Callable[[], dict[str, Any]]) -> Response:
        """Create a run (trigger or re-run) and answer like the trigger, or the 400/404."""
        try:
            item = create()
        except UnknownEnvironment as exc:
            available = ", ".join(exc.available)
            return error(400, f"environment: unknown environment {exc.slug!r} (available: {available})")
        except SourceNotFound as exc:
            return error(404, f"rerun_source_id: test run {exc.run_id} not found")
        except RunNotFound as exc:
            return error(404, f"test run {exc.run_id} not found")
        except NotCompleted as exc:
            message = f"only_failed: test run {exc.run_id} has not completed yet (state {exc.state})"
            return error(400, message)
        return _trigger_answer(item)

    def cancel(self, scope: int, run_id: int, raw: bytes) -> Response:
        """POST /api/test-runs/{id}/cancel: 200 {"message"} (no data wrapper), 412 once terminal."""
        body = _object_body(raw)
        if isinstance(body, Response):
            return body
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            return error(400, f"reason: must be a string, got {_kind(reason)}")
        try:
            outcome, before = self.state.cancel(scope, run_id, reason)
        except RunNotFound:
            return error(404, f"test run {run_id} not found")
        if outcome == "terminal":
            return error(412, f"test run {run_id} is already {before}: nothing to cancel")
        if before == "cancelling":
            return json_response({"message": f"Test run {run_id} is already being cancelled"})
        return json_response({"message": f"Test run {run_id} is being cancelled"})

    def rerun(self, scope: int, run_id: int, raw: bytes) -> Response:
        """POST /api/test-runs/{id}/re-run: a new run linked to its source, answered like the trigger."""
        body = _object_body(raw)
        if isinstance(body, Response):
            return body
        for name in ("only_failed", "send_notifications"):
            if name in body:
                problem = _bool(body[name])
                if problem:
                    return error(400, name + problem)
        only_failed, notify = body.get("only_failed") is True, body.get("send_notifications")
        return self._create(lambda: self.state.rerun(scope, run_id, only_failed, notify))

    def list_runs(self, scope: int, query: dict[str, str]) -> Response:
        """GET /api/test-runs: filter, newest first, paginate."""
        try:
            f = _list_filters(query)
        except ValueError as exc:
            return error(400, str(exc))
        items = [
            item
            for env_id, item in self.state.list_items(scope, f["id"], f["days"])
            if (f["branch"] is None or item["test_run_branch"] == f["branch"])
            and (f["state"] is None or item["state"] == f["state"])
            and (f["env_ids"] is None or env_id in f["env_ids"])
            and (f["result"] is None or _result(item) == f["result"])
        ]
        page, per_page = f["page"], f["per_page"]
        start = (page - 1) * per_page
        return json_response(
            {
                "data": {
                    "project": self.state.project(scope),
                    "test_runs": {"items": items[start : start + per_page]},
                },
                "pagination": {
                    "page": page,
                    "per_page": per_page,
                    "total": len(items),
                    "total_pages": math.ceil(len(items) / per_page),
                },
            }
        )

    # --- control API (/_emulator/...) ----------------------------------------------------------------

    def control(self, request: Request) -> Response:
        """Let other processes drive the emulator; bad input is a 400 with the reason."""
        method, path = request.method, request.path
        finish = re.fullmatch(r"/_emulator/runs/([0-9]{1,18})/finish", path)
        expected = "POST" if finish else self.CONTROL_ROUTES.get(path)
        if expected is None:
            return error(404, f"not found: {path}")
        if method != expected:
            return error(405, f"method {method} not allowed on {path}", {"Allow": expected})
        state = self.state
        if method == "GET":
            if path == "/_emulator/health":
                return json_response({"ok": True})
            if path == "/_emulator/requests":
                return json_response([r.to_dict() for r in state.requests])
            return json_response(state.runs())
        try:
            body = parse_json(request.body) if request.body.strip() else {}
            if path == "/_emulator/reset":
                state.reset()
            elif path == "/_emulator/runs/queue":
                state.queue_runs(
                    *(RunScript.from_dict(d) for d in (body if isinstance(body, list) else [body]))
                )
            elif path == "/_emulator/default-script":
                body = dict(body)
                environment = body.pop("environment", None)
                if environment is None:
                    state.set_default_script(RunScript.from_dict(body))
                else:
                    state.set_environment_script(environment, RunScript.from_dict(body))
            elif path == "/_emulator/faults":
                return json_response({"ok": True, "fault": state.add_fault(Fault(**body)).to_dict()})
            elif path == "/_emulator/response-delay":
                if not isinstance(body, dict) or "seconds" not in body:
                    raise ValueError('body: expected {"seconds": <number >= 0>}')
                return json_response({"ok": True, "seconds": state.set_response_delay(body["seconds"])})
            elif path == "/_emulator/shape":
                if not isinstance(body, dict) or "shape" not in body:
                    raise ValueError('body: expected {"shape": "nested" | "flat"}')
                return json_response({"ok": True, "shape": state.set_shape(body["shape"])})
            elif path == "/_emulator/down":
                self.outage(float(body.get("seconds", 1.0)), request.connection)
                return json_response({"ok": True}, headers={"Connection": "close"})
            elif finish:
                run = state.finish_run(
                    int(finish.group(1)), body.get("state", "cancelled"), body.get("error_code")
                )
                return json_response({"ok": True, "test_run": run})
        except KeyError as exc:
            return error(404, f"not found: {exc.args[0]}")
        except (ValueError, TypeError, AttributeError) as exc:
            return error(400, str(exc))
        return json_response({"ok": True})

    # --- dashboard pages -----------------------------------------------------------------------------

    def dashboard(self, request: Request) -> Response:
        """Read-only HTML pages so "view run" links work offline.

        A run's page answers at /<project slug>/test-runs/<id> (the real dashboard's form) and at
        /test-runs/<id>; a slug that is not the run's project is a 404.
        """
        method, path = request.method, request.path
        match = re.fullmatch(r"/(?:([A-Za-z0-9][A-Za-z0-9_-]*)/)?test-runs/([0-9]{1,18})/?", path)
        if path != "/" and not match:
            return _page(404, "Not found", f"<p>No page at {html.escape(path)}</p>")
        if method != "GET":
            return _page(405, "Method not allowed", "<p>Only GET is supported.</p>")
        runs = self.state.runs()
        if not match:
            lines = "".join(
                f"<tr><td><a href='{_href(r['project']['slug'], r['id'])}'>#{r['id']}</a></td>"
                f"<td>{html.escape(r['state'])}</td>"
                f"<td>{html.escape(r['environment_slug'])}</td><td>{html.escape(r['test_run_branch'])}</td>"
                f"<td>{html.escape(r['created_at'])}</td></tr>"
                for r in reversed(runs)
            )
            head = "<tr><th>Run</th><th>State</th><th>Environment</th><th>Branch</th><th>Created</th></tr>"
            return _page(200, "Test runs", f"<table>{head}{lines}</table>" if runs else "<p>No runs yet.</p>")
        slug, run_id = match.group(1), int(match.group(2))
        run = next((r for r in runs if r["id"] == run_id), None)
        if run is None or (slug is not None and slug != run["project"]["slug"]):
            return _page(
                404, "Not found", f"<p>No test run {run_id}{' in ' + html.escape(slug) if slug else ''}</p>"
            )
        duration = "-" if run["duration"] is None else f"{run['duration'] / 1000:.1f} s"
        counts = ", ".join(f"{run[k + '_count']} {k}" for k in ("success", "failed", "skipped", "flaky"))
        rows: list[tuple[str, Any]] = [
            ("State", run["state"]),
            ("Tests", f"{run['total_count']} total: {counts}"),
            ("Duration", duration),
            ("Environment", f"{run['environment_name']} ({run['environment_slug']})"),
            ("Branch", run["test_run_branch"]),
            ("Commit", run["commit"] or "-"),
            ("Build", run["build_url"] or "-"),
            ("Error code", _error_code(run) or "-"),
            ("Cancel reason", run["cancel_reason"] or "-"),
            ("Created", run["created_at"]),
            ("Project", run["project"]["name"]),
            ("Tags", ", ".join(run["tags"]) or "-"),
        ]
        rows += [(f"metadata.{k}", v) for k, v in run["metadata"].items()]
        content = _table(rows)
        source = run["rerun_source_id"]
        if source is not None:
            content += f"<p>Re-run of <a href='{_href(run['project']['slug'], source)}'>#{source}</a></p>"
        failed = [t["name"] for t in run["tests"] if t["status"] == "failed"]
        if failed:
            items = "".join(f"<li>{html.escape(name)}</li>" for name in failed)
            content += f"<h2>Failed tests</h2><ul>{items}</ul>"
        return _page(200, f"Test run #{run['id']}", content + "<p><a href='/'>All runs</a></p>")
