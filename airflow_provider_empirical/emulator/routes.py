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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import quote

from .catalogue import PW_ID
from .models import STATES, Fault, RunScript, iso_utc
from .state import (
    BadReference,
    NotCompleted,
    RunNotFound,
    SnoozeNotFound,
    SourceNotFound,
    State,
    UnknownEnvironment,
    run_result,
)

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


def validate_trigger(body: Any, branch_with_build: bool = False) -> str | None:
    """The first problem with a trigger body as "<field>: <what is wrong>", or None.

    ``branch_with_build`` lifts the rule that branch and build exclude each other (Empirical's own
    scheduler is not bound by the public API's rule).
    """
    if not isinstance(body, dict):
        return f"body: must be a JSON object, got {_kind(body)}"
    if "environment" not in body:
        return "environment: is required"
    for name, check in TRIGGER_CHECKS:
        if name in body:
            problem = check(body[name])
            if problem:
                return name + problem
    if "branch" in body and "build" in body and not branch_with_build:
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
        **_paging(query),
        "id": _int_param(query, "id", 1),
        "days": _int_param(query, "interval_in_days", 1),
        "branch": query.get("branch"),
        "state": state,
        "result": result,
        "env_ids": env_ids,
    }


def _paging(query: dict[str, str]) -> dict[str, int]:
    """page (from 1, default 1) and per_page (1..100, default 20); query without empty values."""
    return {
        "page": _int_param(query, "page", 1) or 1,
        "per_page": _int_param(query, "per_page", 1, 100) or 20,
    }


def _paginated(rows: list[Any], paging: dict[str, int]) -> tuple[list[Any], dict[str, int]]:
    """One page of rows and the documented pagination object."""
    page, per_page = paging["page"], paging["per_page"]
    start = (page - 1) * per_page
    pagination = {
        "page": page,
        "per_page": per_page,
        "total": len(rows),
        "total_pages": math.ceil(len(rows) / per_page),
    }
    return rows[start : start + per_page], pagination


def _non_empty(query: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in query.items() if v != ""}


def _bool_param(query: dict[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise ValueError(f"{name}: must be true or false, got {raw!r}")
    return raw == "true"


def _comma_list(query: dict[str, str], name: str) -> list[str] | None:
    raw = query.get(name)
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


# --- times ---------------------------------------------------------------------------------------

_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?(Z|[+-]\d\d:\d\d)")
TIME_EXAMPLE = "2026-04-15T00:00:00.000Z"


def parse_time(value: Any) -> float:
    """An ISO 8601 time with a timezone (or a bare date, taken as UTC midnight) as an epoch.

    ValueError says what is wrong, without the field name.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 time string, got {_kind(value)}")
    text = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d\d-\d\d", text):
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()
        match = _TIME.fullmatch(text)
        if match is None:
            raise ValueError
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        tz = timezone.utc
        if zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
        micro = int((fraction or "0").ljust(6, "0")[:6])
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tz
        )
    except ValueError:
        raise ValueError(
            f"must be an ISO 8601 time with a timezone, e.g. {TIME_EXAMPLE}, got {value!r}"
        ) from None
    return moment.timestamp()


def _parse_day(value: str, name: str) -> date:
    """The UTC date of an ISO 8601 date or time query parameter."""
    try:
        epoch = parse_time(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).date()


# --- snooze bodies -------------------------------------------------------------------------------

SNOOZE_FIELDS = ("test_ids", "snooze_until", "description", "created_by", "scoped_to_environment_id")
PATCH_FIELDS = ("snooze_until", "description", "expire_now", "scoped_to_environment_id", "test_ids")


def _test_ids(value: Any) -> str | None:
    if not isinstance(value, list):
        return f": must be an array of Playwright test ids, got {_kind(value)}"
    if not value:
        return ": must name at least one test"
    for index, item in enumerate(value):
        if not isinstance(item, str) or not PW_ID.match(item):
            shown = json.dumps(item)
            return (
                f"[{index}]: must be a Playwright test id (20 hex, '-', 20 hex: 41 characters), got {shown}"
            )
        if item in value[:index]:
            return f"[{index}]: repeats {item}"
    return None


def _optional_string(value: Any) -> str | None:
    return (
        None if value is None or isinstance(value, str) else f": must be a string or null, got {_kind(value)}"
    )


def _optional_id(value: Any) -> str | None:
    if value is None or (_is_int(value) and value >= 1):
        return None
    return f": must be an integer >= 1 or null, got {json.dumps(value)}"


def _future(value: Any, now: float) -> float:
    """snooze_until as an epoch in the future; ValueError (without the field name) otherwise."""
    until = parse_time(value)
    if until <= now:
        raise ValueError(f"must be in the future, got {value!r} (use expire_now to end a snooze)")
    return until


def _check(body: dict[str, Any], checks: tuple[tuple[str, Check], ...]) -> None:
    for name, check in checks:
        if name in body:
            problem = check(body[name])
            if problem:
                raise ValueError(name + problem)


def _legacy_project(body: dict[str, Any], scope: int) -> None:
    """The body's legacy project_id, when present, must match the request's scope."""
    if "project_id" in body:
        problem = _positive_int(body["project_id"])
        if problem:
            raise ValueError("project_id" + problem)
        if body["project_id"] != scope:
            raise ValueError(
                f"project_id: {body['project_id']} does not match the request's project scope ({scope})"
            )


def snooze_fields(body: Any, scope: int, now: float) -> dict[str, Any]:
    """Validated POST /api/snoozes body as State.create_snooze arguments; ValueError names the field.

    Unknown fields are ignored (like the trigger); project_id, when sent, must match the scope.
    """
    if not isinstance(body, dict):
        raise ValueError(f"body: must be a JSON object, got {_kind(body)}")
    for name in ("test_ids", "snooze_until"):
        if name not in body:
            raise ValueError(f"{name}: is required")
    _check(
        body,
        (
            ("test_ids", _test_ids),
            ("description", _optional_string),
            ("created_by", _optional_string),
            ("scoped_to_environment_id", _optional_id),
            ("created_from_test_run_id", _optional_id),
        ),
    )
    _legacy_project(body, scope)
    try:
        until = _future(body["snooze_until"], now)
    except ValueError as exc:
        raise ValueError(f"snooze_until: {exc}") from None
    return {
        "test_ids": list(body["test_ids"]),
        "snooze_until": until,
        "description": body.get("description"),
        "created_by": body.get("created_by"),
        "scoped_to_environment_id": body.get("scoped_to_environment_id"),
        "created_from_test_run_id": body.get("created_from_test_run_id"),
    }


def snooze_changes(body: Any, scope: int, now: float) -> dict[str, Any]:
    """Validated PATCH /api/snoozes/{id} body as State.update_snooze changes; ValueError names the field.

    environment_id is accepted as the older name of scoped_to_environment_id (never both).
    """
    if not isinstance(body, dict):
        raise ValueError(f"body: must be a JSON object, got {_kind(body)}")
    if "environment_id" in body and "scoped_to_environment_id" in body:
        raise ValueError("environment_id: the older name of scoped_to_environment_id, send only one of them")
    _check(
        body,
        (
            ("test_ids", _test_ids),
            ("description", _optional_string),
            ("expire_now", _bool),
            ("scoped_to_environment_id", _optional_id),
            ("environment_id", _optional_id),
        ),
    )
    _legacy_project(body, scope)
    changes: dict[str, Any] = {}
    if body.get("expire_now") is True:
        if "snooze_until" in body:
            raise ValueError("expire_now: cannot be combined with snooze_until")
        changes["until"] = now
    if "snooze_until" in body:
        try:
            changes["until"] = _future(body["snooze_until"], now)
        except ValueError as exc:
            raise ValueError(f"snooze_until: {exc}") from None
    for name in ("scoped_to_environment_id", "environment_id"):
        if name in body:
            changes["scope"] = body[name]
    if "description" in body:
        changes["description"] = body["description"]
    if "test_ids" in body:
        changes["test_ids"] = list(body["test_ids"])
    if not changes:
        raise ValueError(f"body: nothing to update (fields: {', '.join(PATCH_FIELDS)})")
    return changes


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


def _not_found(what: str) -> Response:
    return _page(404, "Not found", f"<p>{html.escape(what)}</p>")


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _grid(head: list[str], rows: list[list[str]]) -> str:
    """A table with a header row; cells are already HTML."""
    top = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{top}</tr>{body}</table>"


def _error_code(run: dict[str, Any]) -> Any:
    """The error code under whichever spelling the run's script chose."""
    error_field = run.get("error")
    nested = error_field.get("code") if isinstance(error_field, dict) else None
    return run.get("error_code") or run.get("errorCode") or nested


def _href(slug: str, run_id: int, test_id: str | None = None) -> str:
    link = f"/{quote(slug)}/test-runs/{run_id}"
    return html.escape(link if test_id is None else f"{link}?test_id={quote(test_id)}")


def report_path(slug: str, run_id: int) -> str:
    """Where /<slug>/test-runs/<id>/debug/html redirects: the run's Playwright report."""
    return f"/reports/{quote(slug)}/{run_id}/index.html"


# An outage: (seconds, the connection to keep open long enough to answer) -> None.
Outage = Callable[[float, Any], None]
SLUG = r"[A-Za-z0-9][A-Za-z0-9_-]*"


class App:
    """Answers requests from the state; `outage` takes the server down (the control API's /down)."""

    API_ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
        (r"/api/test-runs", ("GET", "PUT")),
        (r"/api/test-runs/([^/]+)", ("GET",)),
        (r"/api/test-runs/([^/]+)/cancel", ("POST",)),
        (r"/api/test-runs/([^/]+)/re-run", ("POST",)),
        (r"/api/v2/test-runs/([^/]+)/cases", ("GET",)),
        (r"/api/snoozes", ("GET", "POST")),
        (r"/api/snoozes/([^/]+)", ("GET", "PATCH")),
        (r"/api/v2/test-cases", ("GET",)),
        (r"/api/environments/list", ("GET",)),
        (r"/api/v2/analytics/test-runs", ("GET",)),
    )
    # routes a switch can remove (they then answer 404 like any unknown path)
    SWITCHED_ROUTES: ClassVar[dict[str, str]] = {
        "/api/environments/list": "environments_endpoint",
        "/api/v2/analytics/test-runs": "analytics_endpoint",
    }
    CONTROL_ROUTES: ClassVar[dict[str, tuple[str, ...]]] = {
        "/_emulator/health": ("GET",),
        "/_emulator/requests": ("GET",),
        "/_emulator/runs": ("GET",),
        "/_emulator/reset": ("POST",),
        "/_emulator/runs/queue": ("POST",),
        "/_emulator/runs/start": ("POST",),
        "/_emulator/faults": ("POST",),
        "/_emulator/default-script": ("POST",),
        "/_emulator/down": ("POST",),
        "/_emulator/response-delay": ("POST",),
        "/_emulator/shape": ("POST",),
        "/_emulator/switches": ("GET", "POST"),
        "/_emulator/snoozes": ("GET", "POST"),
        "/_emulator/test-cases": ("GET",),
        "/_emulator/environments": ("GET",),
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
        """Route an /api/ request: 404 for unknown (or switched-off) paths, 405 for other methods,
        then auth."""
        method, path = request.method, request.path
        found = next(((m, a) for p, a in self.API_ROUTES if (m := re.fullmatch(p, path))), None)
        switch = self.SWITCHED_ROUTES.get(path)
        if found is None or (switch is not None and not self.state.switch(switch)):
            return error(404, f"not found: {path}")
        match, allowed = found
        if method not in allowed:
            return error(405, f"method {method} not allowed on {path}", {"Allow": ", ".join(allowed)})
        scope = self.authorize(request.headers)
        if isinstance(scope, Response):
            return scope
        if path == "/api/test-runs":
            if method == "PUT":
                return self.trigger(scope, request.body)
            return self.list_runs(scope, request.query)
        if path == "/api/snoozes":
            if method == "POST":
                return self.create_snooze(scope, request.body)
            return self.list_snoozes(scope, request.query)
        if path == "/api/v2/test-cases":
            return self.test_cases(request.query)
        if path == "/api/environments/list":
            return self.environments(scope, request.query)
        if path == "/api/v2/analytics/test-runs":
            return self.analytics(scope, request.query)
        if path.startswith("/api/snoozes/"):
            snooze_id = match.group(1)
            if re.fullmatch(r"[0-9]{1,18}", snooze_id) is None:
                return error(404, f"snooze {snooze_id} not found")
            if method == "PATCH":
                return self.update_snooze(scope, int(snooze_id), request.body)
            try:
                return json_response({"data": {"snooze": self.state.snooze(scope, int(snooze_id))}})
            except SnoozeNotFound:
                return error(404, f"snooze {snooze_id} not found")
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
            return self.cases(rows, request.query)
        project = self.state.project(scope)
        if self.state.shape == "flat":
            return json_response({"data": {"test_run": fields, "project": project}})
        nested = {"testRun": fields, "flattenedSummaryDetails": rows}
        return json_response({"data": {"test_run": nested, "project": project}})

    def cases(self, rows: list[dict[str, Any]], query: dict[str, str]) -> Response:
        """GET /api/v2/test-runs/{id}/cases: the executed tests' rows, paginated (per_page up to 200,
        default 200: the suite asks for 200; the real default and maximum are unknown)."""
        query = _non_empty(query)
        try:
            paging = {
                "page": _int_param(query, "page", 1) or 1,
                "per_page": _int_param(query, "per_page", 1, 200) or 200,
            }
        except ValueError as exc:
            return error(400, str(exc))
        cases = [{k: row[k] for k in ("pw_test_id", "name", "status", "nesting")} for row in rows]
        page, pagination = _paginated(cases, paging)
        return json_response({"data": page, "pagination": pagination})

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
            return error(400, unknown_environment_message(exc))
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
        passing = self.state.switch("snoozed_failures_pass")
        items = [
            item
            for item in self.state.list_items(scope, f["id"], f["days"])
            if (f["branch"] is None or item["test_run_branch"] == f["branch"])
            and (f["state"] is None or item["state"] == f["state"])
            and (f["env_ids"] is None or item["environment_id"] in f["env_ids"])
            and (f["result"] is None or run_result(item, passing) == f["result"])
        ]
        if not self.state.switch("list_environment_id"):
            for item in items:
                del item["environment_id"]
        page, pagination = _paginated(items, f)
        return json_response(
            {
                "data": {"project": self.state.project(scope), "test_runs": {"items": page}},
                "pagination": pagination,
            }
        )

    # --- snoozes ---------------------------------------------------------------------------------

    def create_snooze(self, scope: int, raw: bytes) -> Response:
        """POST /api/snoozes: 200 {"data": {"snooze"}}; 400 naming the field."""
        try:
            body = parse_json(raw)
        except ValueError as exc:
            return error(400, f"body: invalid JSON ({exc})")
        try:
            fields = snooze_fields(body, scope, time.time())
            snooze = self.state.create_snooze(scope, **fields, body=body)
        except BadReference as exc:
            return error(400, bad_reference_message(exc))
        except ValueError as exc:
            return error(400, str(exc))
        return json_response({"data": {"snooze": snooze}})

    def update_snooze(self, scope: int, snooze_id: int, raw: bytes) -> Response:
        """PATCH /api/snoozes/{id}: 200 {"data": {"snooze"}}; 400 naming the field; 404."""
        try:
            body = parse_json(raw)
        except ValueError as exc:
            return error(400, f"body: invalid JSON ({exc})")
        try:
            changes = snooze_changes(body, scope, time.time())
            snooze = self.state.update_snooze(scope, snooze_id, **changes)
        except SnoozeNotFound:
            return error(404, f"snooze {snooze_id} not found")
        except BadReference as exc:
            return error(400, bad_reference_message(exc))
        except ValueError as exc:
            return error(400, str(exc))
        return json_response({"data": {"snooze": snooze}})

    def list_snoozes(self, scope: int, query: dict[str, str]) -> Response:
        """GET /api/snoozes: status active (default) | expired | all, environment_id, paginated."""
        query = _non_empty(query)
        try:
            paging = _paging(query)
            environment_id = _int_param(query, "environment_id", 1)
            status = query.get("status", "active")
            if status not in ("active", "expired", "all"):
                raise ValueError(f"status: must be one of active, expired, all, got {status!r}")
        except ValueError as exc:
            return error(400, str(exc))
        snoozes = self.state.list_snoozes(scope, status, environment_id)
        page, pagination = _paginated(snoozes, paging)
        return json_response({"data": {"snoozes": page}, "pagination": pagination})

    # --- test cases, environments, analytics -----------------------------------------------------

    def test_cases(self, query: dict[str, str]) -> Response:
        """GET /api/v2/test-cases: the catalogue, filtered and paginated, with the sync error."""
        query = _non_empty(query)
        try:
            paging = _paging(query)
            ids = _comma_list(query, "ids")
            rows, sync_error = self.state.test_cases(
                ids=None if ids is None else ids[:100],  # documented: "Capped at the first 100"
                file_path=query.get("file_path"),
                playwright_project=query.get("playwright_project"),
                tags=_comma_list(query, "tags"),
                search=query.get("search"),
                is_active=_bool_param(query, "is_active"),
                first_seen_commit_sha=query.get("first_seen_commit_sha"),
                last_seen_commit_sha=query.get("last_seen_commit_sha"),
            )
        except ValueError as exc:
            return error(400, str(exc))
        page, pagination = _paginated(rows, paging)
        pagination_with_more = {**pagination, "has_more": paging["page"] < pagination["total_pages"]}
        return json_response(
            {"data": {"test_cases": page, "sync_error": sync_error}, "pagination": pagination_with_more}
        )

    def environments(self, scope: int, query: dict[str, str]) -> Response:
        """GET /api/environments/list: every environment of the project, or only enabled ones."""
        query = _non_empty(query)
        project = self.state.project(scope)
        try:
            project_id = _int_param(query, "project_id", 1)
            is_disabled = _bool_param(query, "is_disabled")
        except ValueError as exc:
            return error(400, str(exc))
        if project_id is not None and project_id != scope:
            return error(403, f"project_id: project {project_id} is not accessible with this API key")
        repo = query.get("project_repo_name")
        if repo is not None and repo != project["repo_name"]:
            return error(403, f"project_repo_name: {repo!r} is not accessible with this API key")
        rows = [
            row
            for row in self.state.environments(scope)
            if is_disabled is None or row["is_disabled"] == is_disabled
        ]
        return json_response({"data": {"environments": rows}})

    def analytics(self, scope: int, query: dict[str, str]) -> Response:
        """GET /api/v2/analytics/test-runs: daily figures and a summary of finished runs."""
        query = _non_empty(query)
        try:
            days = _int_param(query, "days", 1, 90) or 30
            environment_id = _int_param(query, "environment_id", 1)
            start, end = query.get("start_date"), query.get("end_date")
            if (start is None) != (end is None):
                missing = "end_date" if end is None else "start_date"
                raise ValueError(f"{missing}: is required with {'start_date' if end is None else 'end_date'}")
            if start is not None and end is not None:
                first, last = _parse_day(start, "start_date"), _parse_day(end, "end_date")
                if last < first:
                    raise ValueError(f"end_date: must not be before start_date, got {end!r}")
            else:
                last = datetime.now(timezone.utc).date()
                first = last - timedelta(days=days - 1)
        except ValueError as exc:
            return error(400, str(exc))
        figures = self.state.analytics(scope, first, last, environment_id, query.get("branch"))
        return json_response({"data": figures})

    # --- control API (/_emulator/...) ----------------------------------------------------------------

    def control(self, request: Request) -> Response:
        """Let other processes drive the emulator; bad input is a 400 with the reason."""
        method, path = request.method, request.path
        per_run = re.fullmatch(r"/_emulator/runs/([0-9]{1,18})/(finish|age)", path)
        expected = ("POST",) if per_run else self.CONTROL_ROUTES.get(path)
        if expected is None:
            return error(404, f"not found: {path}")
        if method not in expected:
            return error(405, f"method {method} not allowed on {path}", {"Allow": ", ".join(expected)})
        state = self.state
        if method == "GET":
            if path == "/_emulator/health":
                return json_response({"ok": True})
            if path == "/_emulator/requests":
                return json_response([r.to_dict() for r in state.requests])
            if path == "/_emulator/switches":
                return json_response(state.switches)
            if path == "/_emulator/snoozes":
                return json_response(state.snoozes())
            if path == "/_emulator/test-cases":
                return json_response(state.test_cases()[0])
            if path == "/_emulator/environments":
                return json_response(state.environments(1))
            return json_response(state.runs())
        try:
            body = parse_json(request.body) if request.body.strip() else {}
            if path == "/_emulator/reset":
                state.reset()
            elif path == "/_emulator/runs/queue":
                scripts = body if isinstance(body, list) else [body]
                state.queue_runs(*(RunScript.from_dict(d) for d in scripts))
            elif path == "/_emulator/runs/start":
                return json_response({"ok": True, "test_run": self.start_run(body)})
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
            elif path == "/_emulator/switches":
                if not isinstance(body, dict):
                    raise ValueError('body: expected {"<switch>": <value>, ...}')
                return json_response({"ok": True, "switches": state.set_switches(**body)})
            elif path == "/_emulator/snoozes":
                return json_response({"ok": True, "snooze": self.add_snooze(body)})
            elif path == "/_emulator/down":
                self.outage(float(body.get("seconds", 1.0)), request.connection)
                return json_response({"ok": True}, headers={"Connection": "close"})
            elif per_run is not None and per_run.group(2) == "age":
                if not isinstance(body, dict) or "seconds" not in body:
                    raise ValueError('body: expected {"seconds": <number >= 0>}')
                return json_response(
                    {"ok": True, "test_run": state.age_run(int(per_run.group(1)), body["seconds"])}
                )
            elif per_run is not None:
                run_id, target = int(per_run.group(1)), body.get("state", "cancelled")
                run = state.finish_run(run_id, target, body.get("error_code"))
                return json_response({"ok": True, "test_run": run})
        except UnknownEnvironment as exc:
            return error(400, unknown_environment_message(exc))
        except BadReference as exc:
            return error(400, bad_reference_message(exc))
        except KeyError as exc:
            return error(404, f"not found: {exc.args[0]}")
        except (ValueError, TypeError, AttributeError) as exc:
            return error(400, str(exc))
        return json_response({"ok": True})

    def start_run(self, body: Any, script: RunScript | None = None) -> dict[str, Any]:
        """Start a run outside the API (as Empirical's schedule would): a trigger body plus an
        optional "script" (RunScript fields, or the `script` argument) and "project_id" (default
        1). Returns the run as inspected; ValueError names a bad field, UnknownEnvironment an
        unknown slug."""
        if not isinstance(body, dict):
            raise ValueError(f"body: must be a JSON object, got {_kind(body)}")
        body = dict(body)
        project_id = body.pop("project_id", 1)
        if not _is_int(project_id) or not self.state.has_project(project_id):
            raise ValueError(f"project_id: no project {json.dumps(project_id)} (give an API key for it)")
        raw_script = body.pop("script", None)
        if raw_script is not None:
            script = RunScript.from_dict(raw_script)
        problem = validate_trigger(body, branch_with_build=True)
        if problem:
            raise ValueError(problem)
        item = self.state.create_run(project_id, body, origin="control", script=script)
        return self.state.run(item["id"])

    def add_snooze(self, body: Any) -> dict[str, Any]:
        """Create a snooze outside the API (as a person in the dashboard would): the POST body plus
        an optional "project_id" (default 1); snooze_until defaults to 7 days from now."""
        if not isinstance(body, dict):
            raise ValueError(f"body: must be a JSON object, got {_kind(body)}")
        body = dict(body)
        project_id = body.pop("project_id", 1)
        if not _is_int(project_id) or not self.state.has_project(project_id):
            raise ValueError(f"project_id: no project {json.dumps(project_id)} (give an API key for it)")
        now = time.time()
        body.setdefault("snooze_until", iso_utc(now + 7 * 86400))
        fields = snooze_fields(body, project_id, now)
        return self.state.create_snooze(project_id, **fields, origin="control", body=body)

    # --- dashboard pages -----------------------------------------------------------------------------

    def dashboard(self, request: Request) -> Response:
        """Read-only HTML pages so dashboard links work offline.

        A run: /<project slug>/test-runs/<id> (also /test-runs/<id>), one test of it with
        ?test_id=<pw_test_id>; its Playwright report: /<slug>/test-runs/<id>/debug/html redirects
        to /reports/<slug>/<id>/index.html; the snoozes: /<slug>/snoozes. A slug that is not the
        run's project is a 404.
        """
        method, path = request.method, request.path
        if method != "GET":
            return _page(405, "Method not allowed", "<p>Only GET is supported.</p>")
        if path == "/":
            return self._index()
        run_page = re.fullmatch(rf"/(?:({SLUG})/)?test-runs/([0-9]{{1,18}})(/debug/html)?/?", path)
        if run_page:
            slug, run_id, debug = run_page.group(1), int(run_page.group(2)), run_page.group(3)
            run = self._find_run(run_id)
            if run is None or (slug is not None and slug != run["project"]["slug"]):
                return _not_found(f"No test run {run_id}{' in ' + slug if slug else ''}")
            if debug:
                return Response(302, b"", {"Location": report_path(run["project"]["slug"], run_id)})
            test_id = request.query.get("test_id")
            if test_id is not None:
                return self._test_page(run, test_id)
            return self._run_page(run, request.query.get("status"))
        report = re.fullmatch(rf"/reports/({SLUG})/([0-9]{{1,18}})/index\.html", path)
        if report:
            run = self._find_run(int(report.group(2)))
            if run is None or run["project"]["slug"] != report.group(1):
                return _not_found(f"No report at {path}")
            return self._report_page(run)
        snoozes = re.fullmatch(rf"/({SLUG})/snoozes/?", path)
        if snoozes:
            project = self.state.project_by_slug(snoozes.group(1))
            if project is None:
                return _not_found(f"No project {snoozes.group(1)}")
            return self._snoozes_page(project)
        return _not_found(f"No page at {path}")

    def _find_run(self, run_id: int) -> dict[str, Any] | None:
        try:
            return self.state.run(run_id)
        except RunNotFound:
            return None

    def _index(self) -> Response:
        runs = self.state.runs()
        lines = [
            [
                f"<a href='{_href(r['project']['slug'], r['id'])}'>#{r['id']}</a>",
                html.escape(r["state"]),
                html.escape(r["environment_slug"]),
                html.escape(r["test_run_branch"]),
                html.escape(r["created_at"]),
            ]
            for r in reversed(runs)
        ]
        head = ["Run", "State", "Environment", "Branch", "Created"]
        return _page(200, "Test runs", _grid(head, lines) if runs else "<p>No runs yet.</p>")

    def _run_page(self, run: dict[str, Any], status: str | None) -> Response:
        slug = run["project"]["slug"]
        duration = "-" if run["duration"] is None else f"{run['duration'] / 1000:.1f} s"
        counts = ", ".join(f"{run[k + '_count']} {k}" for k in ("success", "failed", "skipped", "flaky"))
        rows: list[tuple[str, Any]] = [
            ("State", run["state"]),
            ("Tests", f"{run['total_count']} total: {counts}"),
            (
                "Failed after snoozing",
                "-" if run["failed_count_after_snoozing"] is None else run["failed_count_after_snoozing"],
            ),
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
            content += f"<p>Re-run of <a href='{_href(slug, source)}'>#{source}</a></p>"
        shown = [t for t in run["tests"] if t["status"] == (status or "failed")]
        if shown:
            items = "".join(
                f"<li><a href='{_href(slug, run['id'], t['pw_test_id'])}'>{html.escape(t['name'])}</a>"
                f"{' (snoozed)' if t['snooze_info'] else ''}</li>"
                for t in shown
            )
            content += f"<h2>{html.escape((status or 'failed').capitalize())} tests</h2><ul>{items}</ul>"
        report = html.escape(f"/{quote(slug)}/test-runs/{run['id']}/debug/html")
        content += f"<p><a href='{report}'>Playwright report</a> · <a href='/'>All runs</a></p>"
        return _page(200, f"Test run #{run['id']}", content)

    def _test_page(self, run: dict[str, Any], test_id: str) -> Response:
        test = next((t for t in run["tests"] if t["pw_test_id"] == test_id), None)
        if test is None:
            return _not_found(f"No test {test_id} in test run {run['id']}")
        snoozes = ", ".join(f"#{s['snooze_id']}" for s in test["snooze_info"]) or "-"
        rows: list[tuple[str, Any]] = [
            ("Test run", f"#{run['id']} ({run['state']})"),
            ("Status", test["status"]),
            ("Path", " \u203a ".join(test["nesting"])),
            ("Playwright project", test["test_project"]),
            ("Test id", test["pw_test_id"]),
            ("Snoozed by", snoozes),
            ("Video", "not recorded by the emulator"),
            ("Trace", "not recorded by the emulator"),
        ]
        back = (
            f"<p><a href='{_href(run['project']['slug'], run['id'])}'>Back to test run #{run['id']}</a></p>"
        )
        return _page(200, test["name"], _table(rows) + back)

    def _report_page(self, run: dict[str, Any]) -> Response:
        lines = [
            [
                html.escape(t["status"]),
                html.escape(" \u203a ".join(t["nesting"])),
                html.escape(t["test_project"]),
            ]
            for t in run["tests"]
        ]
        content = _grid(["Status", "Test", "Project"], lines) if lines else "<p>No test has finished.</p>"
        return _page(200, f"Playwright report: test run #{run['id']}", content)

    def _snoozes_page(self, project: dict[str, Any]) -> Response:
        lines = [
            [
                f"#{s['id']}",
                "active" if s["active"] else "expired",
                html.escape(s["snooze_until"]),
                html.escape(", ".join(s["test_ids"])),
                html.escape(s["description"] or "-"),
                html.escape(str(s["scoped_to_environment_id"] or "all")),
            ]
            for s in reversed(self.state.snoozes())
            if s["project_id"] == project["id"]
        ]
        head = ["Snooze", "Status", "Until", "Tests", "Description", "Environment"]
        return _page(
            200, f"Snoozes of {project['name']}", _grid(head, lines) if lines else "<p>No snoozes.</p>"
        )


def unknown_environment_message(exc: UnknownEnvironment) -> str:
    """The 400 message of a trigger on an unknown (or disabled) environment slug."""
    available = ", ".join(exc.available)
    what = "disabled environment" if exc.disabled else "unknown environment"
    return f"environment: {what} {exc.slug!r} (available: {available})"


def bad_reference_message(exc: BadReference) -> str:
    """The 400 message of a snooze that names an environment or run the project does not have."""
    if exc.field == "created_from_test_run_id":
        return f"created_from_test_run_id: test run {exc.value} not found"
    return f"{exc.field}: no environment {exc.value} (environment ids: {', '.join(map(str, exc.available))})"
