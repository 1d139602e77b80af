"""Snoozes as this provider reads and writes them (the documented `/api/snoozes` endpoints).

A snooze covers failures of the given Playwright test ids until a time, in every environment or
in one; Empirical's dashboard does not count a failure a snooze covers. See docs/api-evidence.md
for what is documented (the four endpoints, their fields) and what is only seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypedDict

from airflow_provider_empirical.api.errors import EmpiricalValidationError
from airflow_provider_empirical.api.test_runs import MAX_TEXT, Clean, int_or_none, keys_of, parse_time
from airflow_provider_empirical.config import printable

MAX_TEST_IDS = 1000  # one snooze; a larger set is most likely a mistake (a whole suite)
DESCRIPTION_CHARS = 500


class Snooze(TypedDict):
    """A snooze, with the documented fields (None where the answer lacks one)."""

    id: int
    test_ids: list[str]
    snooze_until: str | None
    description: str | None
    created_from_test_run_id: int | None
    scoped_to_environment_id: int | None
    created_by: str | None
    created_at: str | None


def parse_snooze(item: Any, clean: Clean = printable) -> Snooze:
    """One snooze object; ValueError without an integer id."""
    if not isinstance(item, dict):
        raise ValueError(f"a snooze is not a JSON object but a {type(item).__name__}")
    snooze_id = int_or_none(item.get("id"))
    if not snooze_id:
        raise ValueError(f"no snooze id (keys: {keys_of(item, clean)})")

    def text(name: str) -> str | None:
        value = item.get(name)
        return clean(value)[:MAX_TEXT] if isinstance(value, str) and value else None

    ids = item.get("test_ids")
    return Snooze(
        id=snooze_id,
        test_ids=[clean(value)[:MAX_TEXT] for value in ids if isinstance(value, str)]
        if isinstance(ids, list)
        else [],
        snooze_until=text("snooze_until"),
        description=text("description"),
        created_from_test_run_id=int_or_none(item.get("created_from_test_run_id")),
        scoped_to_environment_id=int_or_none(item.get("scoped_to_environment_id")),
        created_by=text("created_by"),
        created_at=text("created_at"),
    )


def parse_snooze_answer(payload: Any, clean: Clean = printable) -> Snooze:
    """`{"data": {"snooze": {...}}}` (get, create, update)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or "snooze" not in data:
        raise ValueError(f"no data.snooze in the answer (keys: {keys_of(payload, clean)})")
    return parse_snooze(data["snooze"], clean)


def parse_snooze_page(payload: Any, clean: Clean = printable) -> tuple[list[Snooze], int | None]:
    """`{"data": {"snoozes": [...]}, "pagination": {...}}`: the snoozes and the page count."""
    data = payload.get("data") if isinstance(payload, dict) else None
    items = data.get("snoozes") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"no data.snoozes in the answer (keys: {keys_of(payload, clean)})")
    pagination = payload.get("pagination") if isinstance(payload, dict) else None
    pages = int_or_none(pagination.get("total_pages")) if isinstance(pagination, dict) else None
    return [parse_snooze(item, clean) for item in items], pages


def iso_utc(when: datetime) -> str:
    """An API time: ISO 8601 in UTC with milliseconds and `Z`, as the reference's examples write it."""
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def snooze_until_of(snooze_for: Any, snooze_until: Any, now: datetime, *, fields: tuple[str, str]) -> str:
    """The end of a snooze from exactly one of a duration (seconds, or a timedelta) or a time.

    `fields` names the two parameters in errors. The end must lie in the future.
    """
    duration_field, until_field = fields
    given = [
        name
        for name, value in ((duration_field, snooze_for), (until_field, snooze_until))
        if value not in (None, "")
    ]
    if len(given) != 1:
        raise EmpiricalValidationError(
            f"give exactly one of `{duration_field}` (seconds or a timedelta) and `{until_field}` "
            f"(an ISO 8601 time or a datetime); got {', '.join(f'`{n}`' for n in given) or 'neither'}",
            field=duration_field,
        )
    if snooze_for not in (None, ""):
        seconds = _seconds(snooze_for, duration_field)
        return iso_utc(now + timedelta(seconds=seconds))
    when = snooze_until if isinstance(snooze_until, datetime) else parse_time(str(snooze_until).strip())
    if not isinstance(when, datetime) or isinstance(snooze_until, (int, float)):
        raise EmpiricalValidationError(
            f"`{until_field}` must be an ISO 8601 time such as 2026-12-24T00:00:00Z, or a datetime",
            field=until_field,
        )
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    if when <= now:
        raise EmpiricalValidationError(f"`{until_field}` must lie in the future", field=until_field)
    return iso_utc(when)


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        seconds = float(value.strip())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise EmpiricalValidationError(
            f"`{field}` must be a number of seconds or a timedelta, got {type(value).__name__}", field=field
        )
    if not 0 < seconds <= 366 * 86400:
        raise EmpiricalValidationError(f"`{field}` must be more than 0 s and at most a year", field=field)
    return seconds


def test_ids_of(value: Any, field: str = "test_ids") -> list[str]:
    """Playwright test ids: a non-empty list of non-empty strings, without repeats."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise EmpiricalValidationError(
            f"`{field}` must be a non-empty list of Playwright test ids", field=field
        )
    ids: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise EmpiricalValidationError(f"`{field}[{index}]` must be a non-empty string", field=field)
        if item.strip() not in ids:
            ids.append(item.strip())
    if len(ids) > MAX_TEST_IDS:
        raise EmpiricalValidationError(f"`{field}` has {len(ids)} ids, more than {MAX_TEST_IDS}", field=field)
    return ids


test_ids_of.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def create_snooze_body(
    test_ids: Any,
    snooze_until: str,
    *,
    description: str | None = None,
    created_by: str | None = None,
    scoped_to_environment_id: int | None = None,
    created_from_test_run_id: int | None = None,
) -> dict[str, Any]:
    """The body of `POST /api/snoozes`, only the fields that were given."""
    body: dict[str, Any] = {"test_ids": test_ids_of(test_ids), "snooze_until": snooze_until}
    if description is not None:
        body["description"] = str(description)[:DESCRIPTION_CHARS]
    if created_by is not None:
        body["created_by"] = str(created_by)
    if scoped_to_environment_id is not None:
        body["scoped_to_environment_id"] = scoped_to_environment_id
    if created_from_test_run_id is not None:
        body["created_from_test_run_id"] = created_from_test_run_id
    return body
