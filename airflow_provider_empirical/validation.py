"""Check and shape user input before anything is sent.

Rendered templates arrive as strings ("42", "True"), so ids and flags accept those;
everything else must already have the API's type. Every error names its field, and
never echoes values that may be secret (override values, metadata values).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_empirical.api.errors import EmpiricalValidationError

BUILD_KEYS = ("url", "branch", "commit", "commit_url", "version")
MIN_POLL_INTERVAL = 1.0


def _fail(field: str, message: str) -> EmpiricalValidationError:
    return EmpiricalValidationError(f"`{field}` {message}", field=field)


def _kind(value: Any) -> str:
    return type(value).__name__


def _whole(value: Any, field: str, minimum: int) -> int:
    """An integer >= `minimum` of at most 18 digits; digit strings from templates are accepted,
    bools and floats are not."""
    if (
        isinstance(value, str)
        and value.strip().isascii()
        and value.strip().isdigit()
        and len(value.strip()) <= 18
    ):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        raise _fail(field, f"must be an integer >= {minimum} of at most 18 digits")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        shown = repr(value) if isinstance(value, (str, int, float, type(None))) else _kind(value)
        raise _fail(field, f"must be an integer >= {minimum}, got {shown[:60]}")
    return value


def positive_int(value: Any, field: str) -> int:
    """An integer >= 1 (ids, shard counts)."""
    return _whole(value, field, 1)


def non_negative_int(value: Any, field: str) -> int:
    """An integer >= 0 (a tolerance such as max_failed_tests)."""
    return _whole(value, field, 0)


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
    if isinstance(value, str) and value.strip().isascii():
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _fail(field, f"must be a number of seconds > 0, got {value!r}"[:120])
    if not math.isfinite(value):
        raise _fail(field, "must be a finite number of seconds")
    return float(value)


def poll_seconds(value: Any, field: str) -> float:
    """A poll interval: >= 1 s, so a typo cannot turn a wait into a hot loop against the API."""
    seconds = positive_number(value, field)
    if seconds < MIN_POLL_INTERVAL:
        raise _fail(field, f"must be at least {MIN_POLL_INTERVAL:g} second(s), got {seconds:g}")
    return seconds


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
        if isinstance(item, float) and not math.isfinite(item):
            raise _fail(f"{field}.{key}", "must be a finite number (NaN and infinity are not JSON)")
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


def _strings(example: str) -> Callable[[Any, str], list[str]]:
    """A list of non-empty strings (tags, test ids)."""

    def check(value: Any, field: str) -> list[str]:
        if not isinstance(value, (list, tuple)):
            raise _fail(field, f"must be a list of strings such as [{example!r}], got {_kind(value)}")
        return [text(item, f"{field}[{index}]") for index, item in enumerate(value)]

    return check


def test_names_of(value: Any, field: str) -> list[str]:
    """An optional list of non-empty strings (test files, test titles); None and [] are empty."""
    if value in (None, "", []):
        return []
    return _strings("checkout/")(value, field)


test_names_of.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


# The trigger request's fields and their checks: the one source for the hook's arguments, the
# operator's templated fields and the request body. Order is the API reference's.
TRIGGER_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "environment": text,
    "build": _build,
    "branch": text,
    "metadata": _metadata,
    "environment_variables_overrides": _overrides,
    "tags": _strings("@smoke"),
    "test_case_ids": _strings("a30a1b2c-55e2"),
    "project_id": positive_int,
    "send_notifications": boolean,
    "total_shards": positive_int,
    "rerun_source_id": positive_int,
    "rerun_only_failed": boolean,
    "github_actor": text,
}


def _spelling(key: str) -> str:
    """A field name folded the way a server might read it: case, spaces, dashes and dots ignored."""
    return "".join(char for char in key.lower() if char.isalnum())


_KNOWN_SPELLINGS = {_spelling(name): name for name in TRIGGER_FIELDS}


def _json_value(value: Any, field: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise _fail(field, "must be plain JSON (strings, numbers, booleans, null, lists and dicts)") from None
    return value


def trigger_request_body(fields: Mapping[str, Any], extra_body: Any = None) -> dict[str, Any]:
    """The JSON body of `PUT /api/test-runs`, holding only the fields that were given.

    `extra_body` carries fields this release does not know yet: sent as given (the server
    decides), but never a known field (one way to set each) and only plain JSON.
    """
    unknown = sorted(set(fields) - set(TRIGGER_FIELDS))
    if unknown:
        raise _fail(unknown[0], f"is not a field of the trigger request; known: {', '.join(TRIGGER_FIELDS)}")
    if fields.get("environment") is None:
        raise _fail("environment", "is required (the environment slug to test, e.g. 'production')")
    if fields.get("build") is not None and fields.get("branch") is not None:
        raise _fail("branch", "cannot be combined with `build` (the API allows one or the other)")
    if fields.get("rerun_only_failed") is not None and fields.get("rerun_source_id") is None:
        raise _fail("rerun_only_failed", "needs `rerun_source_id` (the run to re-run)")
    body = {
        name: check(fields[name], name)
        for name, check in TRIGGER_FIELDS.items()
        if fields.get(name) is not None
    }
    if extra_body is not None:
        if not isinstance(extra_body, Mapping):
            raise _fail("extra_body", f"must be a dict of extra request fields, got {_kind(extra_body)}")
        for key, value in extra_body.items():
            if not isinstance(key, str) or not key:
                raise _fail("extra_body", "keys must be non-empty strings")
            known = _KNOWN_SPELLINGS.get(_spelling(key))
            if known is not None:  # `tags`, but also `Tags`, ` tags `, `test-case-ids`: one way per field
                raise _fail(f"extra_body.{key}", f"is a known field: set it with the `{known}` argument")
            body[key] = _json_value(value, f"extra_body.{key}")
    return body
