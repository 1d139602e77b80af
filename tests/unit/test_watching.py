"""The watcher's rules without I/O (airflow_provider_empirical/watching.py): which runs of a list
page are new, which ended, what the watermark keeps, how many pages a poll reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_empirical import watching
from airflow_provider_empirical.api.errors import (
    EmpiricalAuthError,
    EmpiricalContractError,
    EmpiricalServerError,
    EmpiricalTransportError,
)
from airflow_provider_empirical.api.test_runs import TestRun, parse_test_run
from airflow_provider_empirical.watching import Poll, WatcherParameterError, WatchSpec, Watermark

ANY = WatchSpec()
PRODUCTION = WatchSpec(environment="production")


def run(
    run_id: int, state: str = "ended", env: str = "production", branch: str = "main", **fields: Any
) -> TestRun:
    counts = {"total_count": 24, "success_count": 24, "failed_count": 0, "skipped_count": 0, "flaky_count": 0}
    if state == "ended" and fields.get("failed_count"):
        counts["success_count"] = 24 - fields["failed_count"]
    item = {
        "id": run_id,
        "state": state,
        **counts,
        "environment_slug": env,
        "test_run_branch": branch,
        "created_at": "2026-11-29T10:00:00.000Z",
        **fields,
    }
    return parse_test_run(item)


def poll_once(
    mark: Watermark | None, pages: list[list[TestRun]], spec: WatchSpec = PRODUCTION, **kw: Any
) -> tuple[Poll, Any]:
    """Feed pages as the driver would (stopping when the poll says so); the pages it read and its result."""
    poll = Poll(mark, spec, **kw)
    read = []
    while (number := poll.next_page()) is not None:
        read.append(number)
        page = pages[number - 1] if number <= len(pages) else []
        poll.add_page(page, last=number >= len(pages))
    return poll, (read, poll.result())


def baseline(*runs: TestRun, spec: WatchSpec = PRODUCTION) -> Watermark:
    _, (_, result) = poll_once(None, [sorted(runs, key=lambda r: -r["id"])], spec)
    assert result.first and result.ended == []
    return result.mark


# -- parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"environment": ""}, "environment"),
        ({"environment": 3}, "environment"),
        ({"branch": "  "}, "branch"),
        ({"branch": "a\nb"}, "branch"),
        ({"result": "passing"}, "result"),
        ({"result": True}, "result"),
    ],
)
def test_bad_spec_parameters_are_named(kwargs: dict[str, Any], field: str) -> None:
    values = {"environment": None, "branch": None, "result": None, **kwargs}
    with pytest.raises(WatcherParameterError) as caught:
        WatchSpec.checked(**values)
    assert caught.value.field == field and f"`{field}`" in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TypeError)


@pytest.mark.parametrize("value", [0, 0.5, -1, "fast", True, float("inf"), float("nan"), None])
def test_poll_interval_must_be_at_least_one_second(value: Any) -> None:
    with pytest.raises(WatcherParameterError, match="poll_interval"):
        watching.poll_interval_of(value)


def test_poll_interval_accepts_numbers_and_digit_strings() -> None:
    assert watching.poll_interval_of(1) == 1.0
    assert watching.poll_interval_of("60") == 60.0


def test_spec_matches_environment_and_branch_from_the_list_item() -> None:
    spec = WatchSpec.checked("production", "main", None)
    assert spec.matches(run(1))
    assert not spec.matches(run(1, env="staging"))
    assert not spec.matches(run(1, branch="feature"))
    assert ANY.matches(run(1, env="staging", branch="x"))


# -- the watermark ----------------------------------------------------------------------------------


def test_watermark_round_trips_as_plain_json() -> None:
    mark = Watermark(high=42, seen=(42, 40), open=(39,), pending=(41,), owner="abc", started_at="t")
    stored = json.loads(json.dumps(mark.to_json()))
    assert Watermark.from_json(stored) == mark
    assert Watermark.from_json(json.dumps(stored)) == mark


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([], "not a JSON object"),
        ({"version": 99, "high": 1}, "version"),
        ({"version": 1, "high": "7"}, "high"),
        ({"version": 1, "high": 7, "open": ["x"]}, "open"),
        ({"version": 1, "high": 7, "seen": [True]}, "seen"),
    ],
)
def test_a_watermark_this_release_did_not_write_is_refused(value: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Watermark.from_json(value)


# -- polls --------------------------------------------------------------------------------------------


def test_first_poll_is_a_baseline_runs_already_ended_are_not_reported() -> None:
    mark = baseline(run(5), run(4, "started"), run(3, "started", env="staging"), run(2, "error"))
    assert mark.high == 5 and mark.open == (4,)  # only the matching run still open
    assert mark.seen == (5, 4, 3, 2)


def test_first_poll_of_an_empty_project() -> None:
    mark = baseline()
    assert mark.high == 0 and mark.open == ()


def test_steady_state_reads_one_page_and_reports_each_matching_end_once() -> None:
    mark = baseline(run(10), run(9, "started"))
    page = [run(13, "queued"), run(12), run(11, env="staging"), run(10), run(9)]
    _, (read, result) = poll_once(mark, [page])
    assert read == [1]
    assert [r["id"] for r in result.ended] == [9, 12]  # 9 was open, 12 is new and ended; 11 is staging
    assert result.mark.open == (13,) and result.mark.high == 13
    # the next poll reports nothing again
    _, (read, again) = poll_once(result.mark, [page])
    assert read == [1] and again.ended == [] and again.mark == result.mark


def test_every_terminal_state_is_reported() -> None:
    mark = baseline(run(1))
    _, (_, result) = poll_once(mark, [[run(4, "cancelled"), run(3, "error"), run(2, "ended")]])
    assert [r["id"] for r in result.ended] == [2, 3, 4]


def test_a_run_that_appears_late_below_the_high_mark_is_still_new() -> None:
    """Two runs created in the same instant can be committed out of order."""
    mark = baseline(run(12), run(10))
    _, (_, result) = poll_once(mark, [[run(12), run(11), run(10)]])
    assert [r["id"] for r in result.ended] == [11]


def test_runs_older_than_the_window_are_never_new() -> None:
    mark = Watermark(high=100, seen=tuple(range(100, 100 - watching.SEEN_KEEP, -1)))
    old = 100 - watching.SEEN_KEEP - 5
    _, (_, result) = poll_once(mark, [[run(100), run(old)]])
    assert result.ended == []


def test_more_pages_only_while_new_runs_do_not_reach_the_watermark() -> None:
    mark = baseline(run(1))
    pages = [
        [run(i) for i in range(300, 200, -1)],
        [run(i) for i in range(200, 100, -1)],
        [run(i) for i in range(100, 0, -1)],
    ]
    _, (read, result) = poll_once(mark, pages)
    assert read == [1, 2, 3]
    assert len(result.ended) == 299  # 2..300, oldest first
    assert result.ended[0]["id"] == 2 and result.ended[-1]["id"] == 300


def test_open_runs_older_than_page_one_cost_a_few_extra_pages_then_single_reads() -> None:
    ids = list(range(1000, 100, -1))
    mark = Watermark(high=1000, seen=tuple(ids[: watching.SEEN_KEEP]), open=(150, 700, 995))
    pages = [
        [run(i, "started" if i in (150, 700) else "ended") for i in ids[n : n + 100]]
        for n in range(0, 900, 100)
    ]
    poll, (read, result) = poll_once(mark, pages)
    assert read == [1, *range(2, 2 + watching.OPEN_EXTRA_PAGES)]
    assert poll.lookups() == [150, 700]  # not on the pages read: read one by one
    assert 995 in [r["id"] for r in result.ended]


def test_lookups_rotate_when_many_open_runs_are_old() -> None:
    open_ids = tuple(range(1, 13))
    mark = Watermark(high=1000, seen=(1000,), open=open_ids)
    page = [run(1000)]
    seen: set[int] = set()
    for rotation in range(3):
        poll = Poll(mark, PRODUCTION, rotation=rotation)
        poll.add_page(page, last=False)
        poll.extra_pages = watching.OPEN_EXTRA_PAGES  # as if the extra pages were read
        batch = poll.lookups()
        assert len(batch) == watching.LOOKUPS_PER_POLL
        seen.update(batch)
    assert seen == set(open_ids)


def test_a_looked_up_run_is_reported_when_it_ended_and_forgotten_when_gone() -> None:
    mark = Watermark(high=500, seen=(500,), open=(7, 8, 9))
    poll = Poll(mark, PRODUCTION)
    poll.add_page([run(500)], last=False)
    poll.add_lookup(7, run(7, "ended"))
    poll.add_lookup(8, None)
    poll.add_lookup(9, run(9, "started"))
    result = poll.result()
    assert [r["id"] for r in result.ended] == [7]
    assert result.dropped == [8] and result.mark.open == (9,)


def test_a_whole_list_read_drops_open_runs_that_are_not_on_it() -> None:
    mark = Watermark(high=5, seen=(5,), open=(3,))
    _, (read, result) = poll_once(mark, [[run(5), run(4)]])
    assert read == [1] and result.dropped == [3] and result.mark.open == ()


def test_a_page_that_repeats_stops_the_paging() -> None:
    """An API that ignores `page` answers page 1 again: the poll stops instead of looping."""
    mark = Watermark(high=1, seen=(1,))
    poll = Poll(mark, PRODUCTION)
    same = [run(i) for i in range(200, 100, -1)]
    assert poll.next_page() == 1
    poll.add_page(same, last=False)
    assert poll.next_page() == 2
    poll.add_page(same, last=False)
    assert poll.next_page() is None and not poll.complete


def test_the_number_of_open_runs_is_bounded() -> None:
    mark = baseline(*(run(i, "started") for i in range(1, watching.MAX_OPEN + 11)))
    assert len(mark.open) == watching.MAX_OPEN and mark.open[0] == 11


def test_a_catch_up_stops_at_the_page_limit_and_says_so() -> None:
    mark = Watermark(high=1, seen=(1,))
    pages = [[run(i) for i in range(1000 - 100 * n, 900 - 100 * n, -1)] for n in range(9)]
    _, (read, result) = poll_once(mark, pages, max_pages=3)
    assert read == [1, 2, 3] and result.truncated


def test_snapshot_of_a_shared_poll_then_own_pages_when_behind() -> None:
    mark = Watermark(high=10, seen=(10,))
    poll = Poll(mark, PRODUCTION)
    poll.add_snapshot([run(i) for i in range(300, 200, -1)], pages=1, complete=False)
    assert poll.next_page() == 2  # the shared poll did not reach back to run 10


# -- events -----------------------------------------------------------------------------------------


def test_names_are_read_once_for_runs_that_ended_with_failed_or_flaky_tests() -> None:
    assert watching.needs_names(run(1, failed_count=2))
    assert watching.needs_names(run(1, flaky_count=1))
    assert not watching.needs_names(run(1))
    assert not watching.needs_names(run(1, "error"))
    assert not watching.needs_names({**run(1, failed_count=1), "failed_tests": []})


def _detail(failed: list[tuple[str, bool]]) -> TestRun:
    rows = [{"name": "passes", "status": "passed", "pw_test_id": "p" * 41}]
    for name, snoozed in failed:
        rows.append(
            {
                "name": name,
                "status": "failed",
                "pw_test_id": name[:1] * 41,
                "snooze_info": [{"snooze_id": 3}] if snoozed else [],
            }
        )
    unsnoozed = sum(1 for _, snoozed in failed if not snoozed)
    payload = {
        "data": {
            "test_run": {
                "testRun": {
                    "id": 7,
                    "state": "ended",
                    "total_count": len(rows),
                    "success_count": 1,
                    "failed_count": len(failed),
                    "failed_count_after_snoozing": unsnoozed,
                    "skipped_count": 0,
                    "flaky_count": 0,
                    "commit": "abc123",
                    "environment_slug": "production",
                },
                "flattenedSummaryDetails": rows,
            }
        }
    }
    return parse_test_run(payload)


def test_the_payload_is_the_operators_summary_in_plain_json() -> None:
    detail = _detail([("checkout fails", False), ("search flakes", True)])
    url = "https://dash.example/demo/test-runs/7"
    payload = watching.event_payload(detail, url)
    assert json.loads(json.dumps(payload)) == payload
    assert payload["id"] == 7 and payload["url"] == url and payload["outcome"] == "failed"
    assert [t["name"] for t in payload["failed_tests"]] == ["checkout fails"]
    assert [t["name"] for t in payload["snoozed_tests"]] == ["search flakes"]
    assert payload["commit"] == "abc123" and payload["redelivered"] is False
    assert "failed_rows" not in payload and payload["message"].startswith("Empirical test run 7 ended")


def test_result_filter_uses_the_operators_verdict_snoozes_included() -> None:
    only_snoozed = _detail([("known flake", True)])
    failing = _detail([("checkout fails", False)])
    passed, failed = WatchSpec(result="passed"), WatchSpec(result="failed")
    assert passed.wants(watching.verdict_of(only_snoozed)) and not failed.wants(
        watching.verdict_of(only_snoozed)
    )
    assert failed.wants(watching.verdict_of(failing)) and not passed.wants(watching.verdict_of(failing))
    assert failed.wants(watching.verdict_of(run(3, "cancelled")))  # not passed: cancelled, error, empty
    assert ANY.wants(watching.verdict_of(failing))


def test_errors_are_transient_or_persistent_never_final() -> None:
    assert watching.classify(EmpiricalServerError("503", status=503))[0] == "transient"
    assert watching.classify(EmpiricalTransportError("refused", sent=False))[0] == "transient"
    assert (
        watching.classify(EmpiricalTransportError("bad cert", sent=False, permanent=True))[0] == "persistent"
    )
    assert watching.classify(EmpiricalAuthError("401: bad key", status=401))[0] == "persistent"
    severity, message = watching.classify(EmpiricalContractError("no items", status=200))
    assert severity == "persistent" and "contract mismatch" in message and "probe" in message
    assert watching.classify(RuntimeError("bug")) == ("persistent", "RuntimeError: bug")
