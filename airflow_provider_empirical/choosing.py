"""Before a run exists: which tests run, in which environment, and whether this commit was tested.

Used by the trigger operator in `execute()`, after its input is checked and before any run is
started; every failure here ends the task before a PUT is sent. API cost (docs/choosing-tests.md):
tests by file or name, one walk of the active test cases (ceil(cases / 100) calls, however many
files are named); the environment check, one call per task; a reused run, the pages of the run
list back to `reuse_within` (usually one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_empirical.api.errors import EmpiricalError, EmpiricalValidationError
from airflow_provider_empirical.api.test_cases import select_tests
from airflow_provider_empirical.api.test_runs import is_terminal, parse_time
from airflow_provider_empirical.api.verdict import Policy, judge

if TYPE_CHECKING:
    from airflow_provider_empirical.api.environments import Environment
    from airflow_provider_empirical.api.test_runs import TestRun
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

LOGGED_IDS = 50


def resolve_tests(
    hook: EmpiricalHook,
    *,
    files: Sequence[str],
    names: Sequence[str],
    project: str | None,
    given_ids: Sequence[str],
    log: Any,
) -> list[str]:
    """The Playwright ids of the active tests under `files` or titled `names` (with the serial-group
    members they need), merged with `given_ids`. Fails, naming what matched nothing and its closest
    matches, or saying what Empirical reported of its last sync of the test repository."""
    catalogue = hook.test_case_catalogue(playwright_project=project)
    field = "test_files" if files else "test_names"
    if catalogue.sync_error:
        raise EmpiricalValidationError(
            f"Empirical reports an error at its last sync of the test repository: {catalogue.sync_error}. "
            f"The test cases it lists may be stale, so `{field}` cannot be resolved: fix the sync, or "
            "give `test_case_ids`",
            field=field,
        )
    selection = select_tests(catalogue.cases, files=files, names=names)
    if selection.unmatched:
        missing = "; ".join(
            f"{what} (closest: {', '.join(repr(c) for c in closest) or 'none'})"
            for what, closest in selection.unmatched.items()
        )
        where = f" in Playwright project {project!r}" if project else ""
        field = "test_files" if any(key.startswith("file") for key in selection.unmatched) else "test_names"
        raise EmpiricalValidationError(
            f"`{field}`: no active test case{where} matches {missing}; no run was started",
            field=field,
        )
    if selection.dependencies:
        log.info(
            "Added %d test(s) that the chosen ones need (Playwright serial groups): %s",
            len(selection.dependencies),
            ", ".join(selection.dependencies),
        )
    ids = list(dict.fromkeys([*given_ids, *selection.ids]))
    shown = ", ".join(ids[:LOGGED_IDS]) + (
        f" and {len(ids) - LOGGED_IDS} more" if len(ids) > LOGGED_IDS else ""
    )
    log.info("Running %d test(s) chosen by file and name (test_case_ids): %s", len(ids), shown)
    return ids


def check_environment(hook: EmpiricalHook, slug: str, log: Any) -> Environment | None:
    """The environment named `slug`, refusing an unknown or disabled one before any run exists.

    When the environments cannot be listed (the endpoint is absent, or answers something we cannot
    read, or fails), the check is skipped with one log line: it must never be the reason a run does
    not start that the service would have accepted.
    """
    try:
        environments = hook.environments()
    except EmpiricalError as exc:
        log.warning(
            "Could not check environment %r before triggering (%s): triggering anyway", slug, exc.message
        )
        return None
    found = next((env for env in environments if env["slug"] == slug), None)
    if found is None:
        valid = ", ".join(repr(env["slug"]) for env in environments if not env["is_disabled"]) or "none"
        raise EmpiricalValidationError(
            f"`environment` {slug!r} is not an environment of this Empirical project (valid: {valid}); "
            "no run was started",
            field="environment",
        )
    if found["is_disabled"]:
        raise EmpiricalValidationError(
            f"`environment` {slug!r} is disabled in Empirical; enable it there or pick another one. No run "
            "was started",
            field="environment",
        )
    return found


def reusable_run(
    hook: EmpiricalHook,
    *,
    environment: str,
    environment_id: int | None,
    commit: str,
    within: float,
    policy: Policy,
    log: Any,
) -> TestRun | None:
    """The newest run of `environment` that tested `commit` within `within` seconds, when it is still
    going (wait for it) or ended passing `policy` (use it); None when there is none, or it failed.

    Matched on environment and commit, never on time alone: a run is only reused for the exact
    build it tested.
    """
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=within)
    filters: dict[str, Any] = {"interval_in_days": max(1, math.ceil(within / 86400))}
    if environment_id is not None:
        filters["environment_ids"] = environment_id
    started = time.monotonic()
    for run in hook.list_test_runs(**filters):
        created = parse_time(run.get("created_at"))
        if created is not None and created < cutoff:
            break  # newest first: everything after this is older than reuse_within
        if run.get("commit") != commit:
            continue
        if run.get("environment_slug") != environment and not (
            run.get("environment_slug") is None and environment_id is not None
        ):
            continue
        if not is_terminal(run):
            log.info(
                "Test run %s is already testing commit %s on %r: waiting for it",
                run["id"],
                commit,
                environment,
            )
            return run
        verdict = judge(run, policy)
        if verdict.passes:
            log.info(
                "Test run %s already tested commit %s on %r and passed: reusing it",
                run["id"],
                commit,
                environment,
            )
            return run
        log.info(
            "The newest run of commit %s on %r (%s) did not pass (%s): starting a new one",
            commit,
            environment,
            run["id"],
            verdict.reason,
        )
        return None
    log.info(
        "No run of commit %s on %r in the last %s: starting one (%.1f s to look)",
        commit,
        environment,
        timedelta(seconds=within),
        time.monotonic() - started,
    )
    return None
