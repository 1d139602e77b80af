"""Test cases (`GET /api/v2/test-cases`, documented) and choosing tests by file or by name.

A test case's `id` is its Playwright test id: the same id a run's rows call `pw_test_id`, and
the one `test_case_ids` selects in a trigger. Tests in a Playwright serial group depend on the
earlier members (`dependencies.playwright_serial.depends_on`): running one alone may need them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from airflow_provider_empirical.api.test_runs import MAX_TEXT, Clean, int_or_none, keys_of
from airflow_provider_empirical.config import printable


class TestCaseInfo(TypedDict):
    """A test case of the project's catalogue (the fields this provider reads)."""

    id: str
    name: str
    file_path: str
    playwright_project: str | None
    depends_on: list[str]  # ids of the serial-group members it needs


TestCaseInfo.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class


@dataclass(frozen=True)
class TestCasePage:
    cases: list[TestCaseInfo]
    sync_error: str | None  # what Empirical says went wrong at its last sync of the test repo
    total_pages: int | None
    has_more: bool | None


TestCasePage.__test__ = False  # type: ignore[attr-defined]


def parse_test_case_page(payload: Any, clean: Clean = printable) -> TestCasePage:
    """One page of test cases; ValueError when `data.test_cases` is missing."""
    data = payload.get("data") if isinstance(payload, dict) else None
    items = data.get("test_cases") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"no data.test_cases in the answer (keys: {keys_of(payload, clean)})")
    cases = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise ValueError("a test case without a string id")
        serial = (
            (item.get("dependencies") or {}).get("playwright_serial")
            if isinstance(item.get("dependencies"), dict)
            else None
        )
        needs = serial.get("depends_on") if isinstance(serial, dict) else None
        cases.append(
            TestCaseInfo(
                id=clean(item["id"])[:MAX_TEXT],
                name=clean(str(item.get("name") or ""))[:MAX_TEXT],
                file_path=clean(str(item.get("file_path") or ""))[:MAX_TEXT],
                playwright_project=clean(item["playwright_project"])[:MAX_TEXT]
                if isinstance(item.get("playwright_project"), str)
                else None,
                depends_on=[clean(each)[:MAX_TEXT] for each in needs if isinstance(each, str)]
                if isinstance(needs, list)
                else [],
            )
        )
    error = data.get("sync_error") if isinstance(data, dict) else None
    sync_error = None
    if isinstance(error, dict):
        sync_error = clean(str(error.get("message") or "a sync error without a message"))[:MAX_TEXT]
        if error.get("occurred_at"):
            sync_error += f" (at {clean(str(error['occurred_at']))[:40]})"
    pagination = payload.get("pagination") if isinstance(payload.get("pagination"), dict) else {}
    more = pagination.get("has_more")
    return TestCasePage(
        cases,
        sync_error,
        int_or_none(pagination.get("total_pages")),
        more if isinstance(more, bool) else None,
    )


@dataclass(frozen=True)
class Selection:
    """Which tests a task asked for by file and by name, as Playwright ids."""

    ids: list[str]  # what to send as test_case_ids: asked for, then their serial dependencies
    dependencies: list[str] = field(default_factory=list)  # ids added because a chosen test needs them
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # what matched nothing -> closest


def select_tests(
    cases: Iterable[TestCaseInfo], *, files: Sequence[str] = (), names: Sequence[str] = ()
) -> Selection:
    """The ids of the cases under any of `files` (path prefixes) or titled exactly as one of `names`,
    plus the serial-group members they depend on; what matched nothing, with its closest matches."""
    catalogue = list(cases)
    chosen: list[str] = []
    unmatched: dict[str, list[str]] = {}
    paths = sorted({case["file_path"] for case in catalogue})
    titles = sorted({case["name"] for case in catalogue})
    for prefix in files:
        hits = [case["id"] for case in catalogue if case["file_path"].startswith(prefix)]
        if not hits:
            unmatched[f"file {prefix!r}"] = difflib.get_close_matches(prefix, paths, n=3, cutoff=0.5)
        chosen += hits
    for name in names:
        hits = [case["id"] for case in catalogue if case["name"] == name]
        if not hits:
            unmatched[f"test {name!r}"] = difflib.get_close_matches(name, titles, n=3, cutoff=0.5)
        chosen += hits
    ids = list(dict.fromkeys(chosen))
    by_id = {case["id"]: case for case in catalogue}
    added: list[str] = []
    queue = list(ids)
    while queue:  # a member needs the earlier members, which may need theirs
        current = by_id.get(queue.pop())
        for needed in current["depends_on"] if current is not None else []:
            if needed not in ids:
                ids.append(needed)
                added.append(needed)
                queue.append(needed)
    return Selection(ids=ids, dependencies=added, unmatched=unmatched)
