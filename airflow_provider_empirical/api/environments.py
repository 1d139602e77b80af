"""Environments (`GET /api/environments/list`, documented on an older reference page).

A trigger names its environment by slug; a slug the project does not have makes the run fail
(or the request be refused) only once it reaches Empirical, so the operator checks it first.
"""

from __future__ import annotations

from typing import Any, TypedDict

from airflow_provider_empirical.api.test_runs import MAX_TEXT, Clean, int_or_none, keys_of
from airflow_provider_empirical.config import printable


class Environment(TypedDict):
    id: int | None
    slug: str
    name: str | None
    is_disabled: bool


def parse_environments(payload: Any, clean: Clean = printable) -> list[Environment]:
    """`{"data": {"environments": [...]}}`; ValueError when the list is missing or a row has no slug."""
    data = payload.get("data") if isinstance(payload, dict) else None
    items = data.get("environments") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"no data.environments in the answer (keys: {keys_of(payload, clean)})")
    found = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("slug"), str) or not item["slug"]:
            raise ValueError("an environment without a slug")
        found.append(
            Environment(
                id=int_or_none(item.get("id")),
                slug=clean(item["slug"])[:MAX_TEXT],
                name=clean(item["name"])[:MAX_TEXT] if isinstance(item.get("name"), str) else None,
                is_disabled=item.get("is_disabled") is True,
            )
        )
    return found
