"""The waiting rules on plain values, with an injected clock: no network, no sleeping (issue 16.5)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_empirical.api.test_runs import parse_test_run
from airflow_provider_empirical.errors import (
    EmpiricalAuthError,
    EmpiricalContractError,
    EmpiricalServerError,
    EmpiricalTransportError,
)
from airflow_provider_empirical.outcome import LAST_POLL_MARGIN, MAX_STRIKES, Waiter, last_poll_margin

LOG = logging.getLogger("test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(state: str, **fields: Any) -> Any:
    return parse_test_run({"id": 7, "state": state, **fields})


def waiter(clock: Clock, end_in: float = 100.0) -> Waiter:
    return Waiter(7, "u", 10.0, clock.now + end_in, LOG, clock=clock)


SERVER = EmpiricalServerError("HTTP 502", status=502)
CONTRACT = EmpiricalContractError("no run", status=200)
DNS = EmpiricalTransportError("name does not resolve", sent=False, permanent=True)
BLIP = EmpiricalTransportError("reset", sent=True)
AUTH = EmpiricalAuthError("HTTP 401", status=401)
ENDED = run("ended", total_count=2, success_count=2, failed_count=0)


@pytest.mark.parametrize(
    ("feed", "expected"),
    [
        ([run("queued")], 10.0),
        ([run("started"), run("cancelling")], 10.0),
        ([ENDED], "success"),
        ([run("ended", total_count=2, success_count=1, failed_count=1)], "failed"),
        ([run("ended", total_count=0, failed_count=0)], "empty"),
        ([run("ended", failed_count="two", success_count=1)], "unreadable"),
        ([run("error", error_code="dispatch_failed")], "error"),
        ([run("cancelled")], "cancelled"),
        ([SERVER, SERVER, SERVER, SERVER, ENDED], "success"),  # blips never end a wait
        ([CONTRACT, CONTRACT, ENDED], "success"),  # two unreadable answers may be a blip
        ([CONTRACT, CONTRACT, CONTRACT], "error"),  # a third is a contract mismatch
        ([CONTRACT, run("started"), CONTRACT, CONTRACT], 10.0),  # only in a row
        ([CONTRACT, BLIP, CONTRACT, CONTRACT], 10.0),  # a blip breaks the row too
        ([DNS, DNS, DNS], "error"),  # permanent-looking transport failures
        ([AUTH], "error"),  # at once
        ([ValueError("a bug")], "error"),  # anything unexpected ends it with the reason
    ],
)
def test_each_sequence_of_answers(feed: list[Any], expected: Any) -> None:
    clock = Clock()
    w = waiter(clock)
    step: Any = None
    for answer in feed:
        step = w.step(answer)
    assert (step["status"] if isinstance(step, dict) else step) == expected


def test_the_contract_message_counts_the_strikes() -> None:
    w = waiter(Clock())
    for _ in range(MAX_STRIKES - 1):
        assert w.step(CONTRACT) == 10.0
    event = w.step(CONTRACT)
    assert isinstance(event, dict) and f"{MAX_STRIKES} answers in a row" in event["message"]


def test_the_deadline_is_checked_after_a_poll_and_the_sleep_never_passes_it() -> None:
    clock = Clock()
    w = waiter(clock, end_in=25.0)
    assert w.step(run("started")) == 10.0
    clock.now += 20
    # sleeps only until the last poll, which starts early enough to be answered before the deadline
    assert w.step(run("started")) == pytest.approx(5.0 - LAST_POLL_MARGIN)
    clock.now += 5 - LAST_POLL_MARGIN
    assert w.step(ENDED)["status"] == "success"  # type: ignore[index]  # a run that just ended is not late
    w3 = waiter(clock, end_in=25.0)
    clock.now += 25 - LAST_POLL_MARGIN / 2
    assert w3.step(run("started"))["status"] == "timeout"  # type: ignore[index]  # never past the deadline
    assert last_poll_margin(0.0, 2.0) == pytest.approx(0.2)  # a tenth of a short wait
    w2 = waiter(clock, end_in=0.0)
    event = w2.step(run("started"))
    assert (
        isinstance(event, dict) and event["status"] == "timeout" and "last state: started" in event["message"]
    )
    assert event["test_run"]["state"] == "started" and "u" in event["message"]
