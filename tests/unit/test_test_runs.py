"""The run parser tolerates every response shape, unknown states and missing counts; the verdict
and `resolve` turn a finished run into a task result."""

from __future__ import annotations

import pytest

from airflow_provider_empirical.api.test_runs import format_duration, is_terminal, parse_test_run
from airflow_provider_empirical.api.verdict import Policy, describe, passes
from airflow_provider_empirical.errors import EmpiricalError, EmpiricalTestRunFailed
from airflow_provider_empirical.outcome import finished_event, resolve

ITEM = {
    "id": 456,
    "state": "ended",
    "total_count": 51,
    "success_count": 48,
    "failed_count": 2,
    "skipped_count": 0,
    "flaky_count": 1,
    "duration": 120000,
    "test_run_branch": "main",
    "environment_slug": "production",
    "created_at": "2024-01-15T10:30:00.000Z",
    "something_new": [1],
}


@pytest.mark.parametrize("payload", [{"data": {"test_run": ITEM}}, {"data": ITEM}, ITEM])
def test_every_known_run_shape_parses(payload: dict) -> None:
    run = parse_test_run(payload)
    assert run["id"] == 456 and run["failed_count"] == 2 and "something_new" not in run


def test_missing_counts_and_unknown_states_never_crash() -> None:
    run = parse_test_run({"data": {"test_run": {"id": "7", "state": "warming_up"}}})
    assert run["total_count"] is None and run["state"] == "warming_up" and not is_terminal(run)
    assert describe(run) == "Empirical test run 7 is warming_up"


@pytest.mark.parametrize(
    "payload", [{}, {"data": {"test_run": {"state": "ended"}}}, [1], "x", {"data": {"id": "abc"}}]
)
def test_no_id_is_a_value_error(payload: object) -> None:
    with pytest.raises(ValueError):
        parse_test_run(payload)


def test_summary_line_reads_like_the_spec() -> None:
    run = parse_test_run(ITEM)
    assert describe(run, "https://dash/test-runs/456") == (
        "Empirical test run 456 ended: 48 passed, 2 failed, 1 flaky, 0 skipped in 2m00s https://dash/test-runs/456"
    )
    assert not passes(run, Policy())
    errored = parse_test_run({**ITEM, "state": "error", "error_code": "dispatch_failed"})
    assert "failed to dispatch the run to workers" in describe(errored)


@pytest.mark.parametrize(
    ("ms", "text"), [(None, "?"), (0, "0s"), (45_400, "45s"), (120_000, "2m00s"), (3_723_000, "1h02m03s")]
)
def test_format_duration(ms: int | None, text: str) -> None:
    assert format_duration(ms) == text


@pytest.mark.parametrize(
    ("changes", "status", "fails", "fails_when_lenient"),
    [
        ({"failed_count": 0}, "success", False, False),
        ({}, "failed", True, False),
        ({"state": "error", "error_code": "merge_conflict"}, "error", True, True),
        ({"state": "cancelled"}, "cancelled", True, True),
    ],
)
def test_a_finished_run_is_judged_by_the_policy(
    changes: dict, status: str, fails: bool, fails_when_lenient: bool
) -> None:
    import logging

    event = finished_event(parse_test_run({**ITEM, **changes}), "u")
    assert event["status"] == status
    for strict, should_fail in ((True, fails), (False, fails_when_lenient)):
        if should_fail:
            with pytest.raises(EmpiricalTestRunFailed, match="Empirical test run 456"):
                resolve(event, Policy(fail_on_test_failure=strict), log=logging.getLogger())
        else:
            summary = resolve(event, Policy(fail_on_test_failure=strict), log=logging.getLogger())
            assert summary["id"] == 456 and summary["url"] == "u" and summary["outcome"] == status


@pytest.mark.parametrize("event", [None, {}, {"status": "weird", "test_run_id": 1}, "success"])
def test_invalid_events_are_refused(event: object) -> None:
    import logging

    with pytest.raises(EmpiricalError, match="Unexpected event"):
        resolve(event, Policy(), log=logging.getLogger())
