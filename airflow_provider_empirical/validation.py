"""Check and shape user input before anything is sent.

Rendered templates arrive as strings ("42", "True"), so ids and flags accept those;
everything else must already have the API's type. Every error names its field, and
never echoes values that may be secret (override values, metadata values).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_empirical.errors import EmpiricalValidationError

BUILD_KEYS = ("url", "branch", "commit", "commit_url", "version")


def _fail(field: str, message: str) -> EmpiricalValidationError:
    return EmpiricalValidationError(f"`{field}` {message}", field=field)


def _kind(value: Any) -> str:
    return type(value).__name__


def positive_int(value: Any, field: str) -> int:
    """An integer >= 1; digit strings from templates are accepted, bools and floats are not."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = repr(value) if isinstance(value, (str, int, float, type(None))) else _kind(value)
        raise _fail(field, f"must be an integer >= 1, got {shown[:60]}")
    return value


def boolean(value: Any, field: str) -> bool:
    """A bool; "true"/"false" strings from templates are accepted."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise _fail(field, f"must be true or false, got {_kind(value)}")
    return value


def text(value: Any, field: str) -> str:
    """A non-blank string, stripped."""
    if not isinstance(value, str) or not value.strip():
        got = "a blank string" if isinstance(value, str) else _kind(value)
        raise _fail(field, f"must be a non-empty string, got {got}")
    return value.strip()


def positive_number(value: Any, field: str) -> float:
    """Seconds: a number > 0 (poll intervals, timeouts)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail(field, f"must be a number of seconds > 0, got {value!r}"[:120])
    return float(value)


def _build(value: Any, field: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be a dict with keys {', '.join(BUILD_KEYS)}; got {_kind(value)}")
    unknown = sorted(str(key) for key in value if key not in BUILD_KEYS)
    if unknown:
        raise _fail(field, f"has unknown keys {unknown}; allowed: {', '.join(BUILD_KEYS)}")
    return {key: text(item, f"{field}.{key}") for key, item in value.items()}


def _metadata(value: Any, field: str) -> dict[str, str | int | float]:
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be a dict of strings or numbers, got {_kind(value)}")
    result: dict[str, str | int | float] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise _fail(field, f"keys must be non-empty strings, got {key!r}"[:120])
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise _fail(f"{field}.{key}", f"must be a string or a number, got {_kind(item)}")
        result[key] = item
    return result


def _overrides(value: Any, field: str) -> list[dict[str, str]]:
    """A list of {name, value}; a plain {NAME: value} mapping is accepted and converted."""
    if isinstance(value, Mapping):
        value = [{"name": name, "value": item} for name, item in value.items()]
    if not isinstance(value, (list, tuple)):
        raise _fail(field, f"must be a list of {{'name': ..., 'value': ...}} or a dict, got {_kind(value)}")
    result = []
    for index, item in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping) or set(item) - {"name", "value"}:
            raise _fail(where, "must be a dict with exactly the keys 'name' and 'value'")
        name = text(item.get("name"), f"{where}.name")
        raw = item.get("value")
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise _fail(f"{where}.value", f"(for {name}) must be a string, got {_kind(raw)}")
        result.append({"name": name, "value": str(raw)})
    return result


def _tags(value: Any, field: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise _fail(field, f"must be a list of strings such as ['@smoke'], got {_kind(value)}")
    return [text(tag, f"{field}[{index}]") for index, tag in enumerate(value)]


def trigger_body(
    environment: Any,
    *,
    build: Any = None,
    branch: Any = None,
    metadata: Any = None,
    environment_variables_overrides: Any = None,
    tags: Any = None,
    project_id: Any = None,
    send_notifications: Any = None,
    total_shards: Any = None,
    rerun_source_id: Any = None,
    rerun_only_failed: Any = None,
    github_actor: Any = None,
) -> dict[str, Any]:
    """The JSON body of `PUT /api/test-runs`, holding only the fields that were given."""
    body: dict[str, Any] = {"environment": text(environment, "environment")}
    if build is not None and branch is not None:
        raise _fail("branch", "cannot be combined with `build` (the API allows one or the other)")
    if rerun_only_failed is not None and rerun_source_id is None:
        raise _fail("rerun_only_failed", "needs `rerun_source_id` (the run to re-run)")
    checks: dict[str, tuple[Any, Callable[[Any, str], Any]]] = {
        "build": (build, _build),
        "branch": (branch, text),
        "metadata": (metadata, _metadata),
        "environment_variables_overrides": (environment_variables_overrides, _overrides),
        "tags": (tags, _tags),
        "project_id": (project_id, positive_int),
        "send_notifications": (send_notifications, boolean),
        "total_shards": (total_shards, positive_int),
        "rerun_source_id": (rerun_source_id, positive_int),
        "rerun_only_failed": (rerun_only_failed, boolean),
        "github_actor": (github_actor, text),
    }
    for name, (value, check) in checks.items():
        if value is not None:
            body[name] = check(value, name)
    return body
