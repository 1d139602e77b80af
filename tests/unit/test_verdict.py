"""The verdict on plain values: every combination of the pass policy's flags with every kind of
finished run, against the rules as the docs state them (docs/operators.md, "How a run is judged")."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

from airflow_provider_empirical.api.errors import EmpiricalTestRunFailed
from airflow_provider_empirical.api.test_runs import parse_test_run
from airflow_provider_empirical.api.verdict import Policy, failures_of, judge
from airflow_provider_empirical.outcome import finished_event, resolve


def _row(name: str, status: str, snoozed: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "status": status, "pw_test_id": f"{name:a>20}"[:20] + "-" + "0" * 20}
    row["snooze_info"] = [{"snooze_id": 9}] if snoozed else []
    return row


def _nested(run: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": {"test_run": {"testRun": run, "flattenedSummaryDetails": rows}}}


def _counts(success: int, failed: int, flaky: int = 0, **more: Any) -> dict[str, Any]:
    total = success + failed + flaky
    return {"state": "ended", "total_count": total, "success_count": success, "failed_count": failed,
            "flaky_count": flaky, "skipped_count": 0, **more}  # fmt: skip


# name -> (the answer, its spec: state, raw failures, failures no snooze covers, executed, flaky)
RUNS: dict[str, tuple[Any, tuple[str, int | None, int | None, int, int | None]]] = {
    "passed": ({"id": 1, **_counts(3, 0, failed_count_after_snoozing=0)}, ("ended", 0, 0, 3, 0)),
    "passed, flaky": ({"id": 1, **_counts(2, 0, 1)}, ("ended", 0, 0, 3, 1)),
    "2 failed": ({"id": 1, **_counts(1, 2, failed_count_after_snoozing=2)}, ("ended", 2, 2, 3, 0)),
    "1 failed, flaky": ({"id": 1, **_counts(1, 1, 1, failed_count_after_snoozing=1)}, ("ended", 1, 1, 3, 1)),
    # Empirical's own suite: failed_count 2, after snoozing 0, rows carrying snooze_info
    "all snoozed": (
        _nested(
            {"id": 1, **_counts(1, 2, failed_count_after_snoozing=0)},
            [_row("a", "passed"), _row("b", "failed", True), _row("c", "failed", True)],
        ),
        ("ended", 2, 0, 3, 0),
    ),
    "partly snoozed": (
        _nested(
            {"id": 1, **_counts(1, 2, failed_count_after_snoozing=1)},
            [_row("a", "passed"), _row("b", "failed", True), _row("c", "failed")],
        ),
        ("ended", 2, 1, 3, 0),
    ),
    "snoozed, rows only": (
        _nested({"id": 1, **_counts(1, 1)}, [_row("a", "passed"), _row("b", "failed", True)]),
        ("ended", 1, 0, 2, 0),
    ),
    "partly snoozed, rows only": (
        _nested({"id": 1, **_counts(0, 2)}, [_row("b", "failed", True), _row("c", "failed")]),
        ("ended", 2, 1, 2, 0),
    ),
    "after-snoozing count only": (
        {"id": 1, **_counts(2, 1, failed_count_after_snoozing=0)},
        ("ended", 1, 0, 3, 0),
    ),
    # neither readable: every failure counts (fail closed)
    "counts only": ({"id": 1, **_counts(2, 1)}, ("ended", 1, 1, 3, 0)),
    "after-snoozing unreadable": (
        {"id": 1, **_counts(2, 1, failed_count_after_snoozing="none")},
        ("ended", 1, 1, 3, 0),
    ),
    "empty": ({"id": 1, **_counts(0, 0)}, ("ended", 0, 0, 0, 0)),
    "unreadable count": ({"id": 1, **_counts(2, 0), "failed_count": "two"}, ("unreadable", None, None, 2, 0)),
    "unknown status": (
        _nested({"id": 1, "state": "ended"}, [_row("a", "passed"), _row("b", "FAILURE")]),
        ("unreadable", None, None, 2, None),
    ),
    "error": ({"id": 1, "state": "error", "error_code": "merge_conflict"}, ("error", None, None, 0, None)),
    "cancelled": ({"id": 1, "state": "cancelled"}, ("cancelled", None, None, 0, None)),
}
FLAGS = list(
    itertools.product(
        [True, False],  # fail_on_test_failure
        [True, False],  # fail_on_empty_run
        [True, False],  # honor_snoozes
        [0, 1],  # max_failed_tests
        [False, True],  # fail_on_flaky
    )
)


def rule(spec: tuple[str, int | None, int | None, int, int | None], policy: Policy) -> bool:
    """The pass rule as the docs word it."""
    state, raw, unsnoozed, executed, flaky = spec
    if state != "ended":  # errors, cancellations and unreadable results never pass
        return False
    counting = unsnoozed if policy.honor_snoozes else raw
    if executed == 0:
        return not policy.fail_on_empty_run
    if counting and policy.fail_on_test_failure and counting > policy.max_failed_tests:
        return False
    return not (policy.fail_on_flaky and flaky)


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(str(int(v)) for v in f))
@pytest.mark.parametrize("name", list(RUNS))
def test_every_policy_with_every_run(name: str, flags: tuple[Any, ...]) -> None:
    answer, spec = RUNS[name]
    policy = Policy(*flags)
    run = parse_test_run(answer)
    verdict = judge(run, policy)
    assert verdict.passes is rule(spec, policy), (name, policy, verdict.reason)
    state, raw, unsnoozed, executed, _ = spec
    if state == "ended" and executed:
        counting = unsnoozed if policy.honor_snoozes else raw
        assert verdict.outcome == ("failed" if counting else "success")
        assert failures_of(run, policy.honor_snoozes).count == counting
    elif state == "ended":
        assert verdict.outcome == "empty"
    else:
        assert verdict.outcome == state


def test_the_failure_message_says_which_rule_failed_and_names_only_the_tests_that_count() -> None:
    run = parse_test_run(RUNS["partly snoozed"][0])
    with pytest.raises(EmpiricalTestRunFailed) as info:
        resolve(finished_event(run, "u"), Policy(), log=logging.getLogger("t"))
    assert "1 test(s) failed (snoozed failures not counted)" in str(info.value)
    assert "'c'" in str(info.value) and "'b'" not in str(info.value)
    with pytest.raises(EmpiricalTestRunFailed, match="2 test\\(s\\) failed, more than max_failed_tests=1"):
        resolve(
            finished_event(run, "u"), Policy(honor_snoozes=False, max_failed_tests=1), log=logging.getLogger()
        )
    flaky = parse_test_run(RUNS["passed, flaky"][0])
    with pytest.raises(EmpiricalTestRunFailed, match="1 test\\(s\\) were flaky, and fail_on_flaky=True"):
        resolve(finished_event(flaky, "u"), Policy(fail_on_flaky=True), log=logging.getLogger())


def test_an_all_snoozed_run_passes_and_its_summary_lists_the_snoozed_tests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = parse_test_run(RUNS["all snoozed"][0])
    event = finished_event(run, "u")
    assert event["status"] == "success"
    with caplog.at_level(logging.INFO):
        summary = resolve(event, Policy(), log=logging.getLogger("t"))
    assert summary["outcome"] == "success" and summary["failed_tests"] == []
    assert [case["name"] for case in summary["snoozed_tests"]] == ["b", "c"]
    assert summary["failed_count_after_snoozing"] == 0 and summary["failed_count"] == 2
    assert (
        "every failure (2) is snoozed" in caplog.text
        and sum("SNOOZED" in r.getMessage() for r in caplog.records) == 2
    )
    strict = resolve(
        finished_event(run, "u"),
        Policy(honor_snoozes=False, fail_on_test_failure=False),
        log=logging.getLogger(),
    )
    assert strict["outcome"] == "failed" and len(strict["failed_tests"]) == 2


def test_without_snooze_information_every_failure_counts_and_the_log_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = parse_test_run(RUNS["counts only"][0])
    with caplog.at_level(logging.INFO), pytest.raises(EmpiricalTestRunFailed):
        resolve(finished_event(run, "u"), Policy(), log=logging.getLogger("t"))
    assert sum("so snoozes cannot be told apart" in r.getMessage() for r in caplog.records) == 1


def test_an_unknown_per_test_status_fails_closed_naming_it() -> None:
    run = parse_test_run(RUNS["unknown status"][0])
    event = finished_event(run, "u")
    assert event["status"] == "unreadable" and "'FAILURE'" in event["message"]
    with pytest.raises(EmpiricalTestRunFailed, match="FAILURE"):
        resolve(event, Policy(fail_on_test_failure=False), log=logging.getLogger())


@pytest.mark.parametrize("status", ["unexpected", "fail", "FAILURE", None])
def test_rows_with_an_unknown_or_missing_status_never_count_as_passed(status: str | None) -> None:
    """Issue 20.2: without a run-level failed count, such rows made a run pass."""
    row: dict[str, Any] = {"name": "x", "pw_test_id": "p"}
    if status is not None:
        row["status"] = status
    run = parse_test_run(_nested({"id": 1, "state": "ended"}, [_row("a", "passed"), row]))
    assert not judge(run, Policy(fail_on_test_failure=True)).passes
