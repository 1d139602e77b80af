"""The event-driven watcher's brain without its I/O: which runs of a list are new, which ended,
what to remember so that every matching run is reported once.

`EmpiricalTestRunEndedTrigger` (triggers/empirical.py) feeds a `Poll` the pages of
``GET /api/test-runs`` it reads (newest first), asks it whether to read another page and which
open runs to look up one by one, and gets back the runs that ended since the last poll and the
next `Watermark`. Nothing here does I/O or imports Airflow, so every rule is a millisecond test
(tests/unit/test_watching.py).

The watermark (plain JSON, kept in Airflow 3.3's asset state store):

- ``high``: the newest run id taken into account. Every run with a lower id has been dealt with:
  reported, not matching, ended before the watcher first started, or listed in ``open``.
- ``seen``: the ids of the newest runs taken into account (at most `SEEN_KEEP`). A run that shows
  up late with an id inside that window (two runs created in the same instant, committed out of
  order) is still new when its id is not in ``seen``.
- ``open``: matching runs seen before they ended; reported when they end.
- ``pending``: runs whose events were handed to Airflow but not yet known to be stored. A
  watcher that finds them on start reports them again, flagged ``redelivered`` (see
  docs/event-driven.md, "Exactly once").
- ``owner``: the watcher instance that writes it. An instance that finds another owner has been
  replaced (its triggerer stalled and another adopted the trigger) and stands down.

Cost: in the steady state one list page per poll (`PER_PAGE` newest runs). More pages are read
only while the page does not reach back to the watermark (more than ``PER_PAGE - SEEN_KEEP``
new runs since the last poll, or a catch-up after a pause) and for open runs older than what the
pages covered (at most `OPEN_EXTRA_PAGES`, then `LOOKUPS_PER_POLL` single-run reads a poll).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from airflow_provider_empirical.api.errors import EmpiricalError, EmpiricalValidationError
from airflow_provider_empirical.api.test_runs import TestRun, is_terminal
from airflow_provider_empirical.api.verdict import Policy, Verdict, describe, judge
from airflow_provider_empirical.outcome import finished_event, summary_of

VERSION = 1
PER_PAGE = 100  # the list's documented maximum: one page covers the newest 100 runs
SEEN_KEEP = 10  # newest run ids remembered (late-appearing runs); << PER_PAGE keeps it one page
OPEN_EXTRA_PAGES = 2  # pages read past the new runs to find runs still open
LOOKUPS_PER_POLL = 5  # open runs older than the pages read, read one by one, per poll
MAX_PAGES_PER_POLL = 1000  # a catch-up stops here (100,000 runs) and says what it skipped
MAX_OPEN = 500  # open runs tracked; beyond, the oldest are dropped (and logged)
NAME_ATTEMPTS = 3  # polls a run's report waits for its failed test names before going without
RESULTS = ("passed", "failed")
MIN_POLL_INTERVAL = 1.0


class WatcherParameterError(EmpiricalValidationError, TypeError):
    """A parameter of the watcher is wrong. A `ValueError` for DAG authors (the DAG does not
    parse), and a `TypeError` too, because that is what the triggerer catches when it rebuilds
    a trigger from stored kwargs ("Trigger failed to inflate") instead of stopping."""


def _bad(name: str, message: str) -> WatcherParameterError:
    return WatcherParameterError(f"EmpiricalTestRunEndedTrigger: `{name}` {message}", field=name)


def _optional_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        got = "a blank string" if isinstance(value, str) else type(value).__name__
        raise _bad(name, f"must be a non-empty string or None (any), got {got}")
    if not value.strip().isprintable() or len(value) > 200:
        raise _bad(name, "must be printable text of at most 200 characters")
    return value.strip()


@dataclass(frozen=True)
class WatchSpec:
    """Which runs a watcher reports: environment slug, test-run branch, result (None: any)."""

    environment: str | None = None
    branch: str | None = None
    result: Literal["passed", "failed"] | None = None

    @classmethod
    def checked(cls, environment: Any, branch: Any, result: Any) -> WatchSpec:
        """The spec, or `WatcherParameterError` naming the parameter."""
        if result is not None and result not in RESULTS:
            raise _bad("result", f"must be 'passed', 'failed' or None (any result), got {result!r:.40}")
        return cls(_optional_text(environment, "environment"), _optional_text(branch, "branch"), result)

    def matches(self, run: Mapping[str, Any]) -> bool:
        """Environment and branch, read from the list item (known as soon as the run exists)."""
        if self.environment is not None and run.get("environment_slug") != self.environment:
            return False
        return self.branch is None or run.get("test_run_branch") == self.branch

    def wants(self, verdict: Verdict) -> bool:
        """The result filter, judged by the operator's own verdict (snoozes honoured)."""
        if self.result is None:
            return True
        return verdict.passes if self.result == "passed" else not verdict.passes

    def describe(self) -> str:
        parts = [
            f"environment {self.environment!r}" if self.environment else "every environment",
            f"branch {self.branch!r}" if self.branch else "every branch",
            f"result {self.result!r}" if self.result else "any result",
        ]
        return ", ".join(parts)


def poll_interval_of(value: Any) -> float:
    """At least 1 s (a typo must not turn the watcher into a hot loop against the API)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(
            "poll_interval", f"must be a number of seconds >= {MIN_POLL_INTERVAL:g}, got {value!r:.40}"
        )
    if value < MIN_POLL_INTERVAL:
        raise _bad("poll_interval", f"must be at least {MIN_POLL_INTERVAL:g} second(s), got {value:g}")
    return float(value)


def conn_id_of(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise _bad("empirical_conn_id", "must be the id of an Airflow connection of type empirical")
    return value


def flag_of(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(name, f"must be True or False, got {type(value).__name__}")
    return value


# -- the watermark ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Watermark:
    """What a watcher remembers between polls (and, on Airflow 3.3, across restarts)."""

    high: int
    seen: tuple[int, ...] = ()  # newest first
    open: tuple[int, ...] = ()  # ascending
    pending: tuple[int, ...] = ()
    owner: str = ""
    started_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "high": self.high,
            "seen": list(self.seen),
            "open": list(self.open),
            "pending": list(self.pending),
            "owner": self.owner,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, value: Any) -> Watermark:
        """ValueError, saying what is wrong, for anything this release did not write."""
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, Mapping):
            raise ValueError(f"not a JSON object but {type(value).__name__}")
        if value.get("version") != VERSION:
            raise ValueError(f"version {value.get('version')!r}, this release writes {VERSION}")

        def ids(name: str) -> tuple[int, ...]:
            items = value.get(name, [])
            if not isinstance(items, list) or not all(_is_id(item) for item in items):
                raise ValueError(f"`{name}` is not a list of run ids")
            return tuple(items)

        high = value.get("high")
        if not (_is_id(high) or (high == 0 and isinstance(high, int))):
            raise ValueError("`high` is not a run id")
        return cls(
            high=int(high),  # type: ignore[arg-type]
            seen=tuple(sorted(set(ids("seen")), reverse=True)),
            open=tuple(sorted(set(ids("open")))),
            pending=tuple(sorted(set(ids("pending")))),
            owner=str(value.get("owner") or ""),
            started_at=str(value.get("started_at") or ""),
        )

    @property
    def window_low(self) -> int:
        """The lowest id the `seen` window vouches for (below it, a run not open is old)."""
        return min(self.seen) if self.seen else self.high

    def with_open(self, extra: Iterable[int]) -> Watermark:
        return replace(self, open=tuple(sorted(set(self.open) | set(extra))))


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# -- one poll ----------------------------------------------------------------------------------------


@dataclass
class PollResult:
    """What a poll found: the matching runs that ended (oldest first), the next watermark, and
    what to tell the log."""

    ended: list[TestRun]
    mark: Watermark
    first: bool  # the watcher's first poll: a baseline, nothing reported
    dropped: list[int] = field(default_factory=list)  # open runs the API no longer knows
    overflow: list[int] = field(default_factory=list)  # open runs dropped past MAX_OPEN
    truncated: bool = False  # a catch-up stopped at MAX_PAGES_PER_POLL


class Poll:
    """One poll of the list: pages are fed newest first; it says when it has seen enough.

    Usage: ``while (n := poll.next_page()) is not None: poll.add_page(read(n))``, then
    ``for i in poll.lookups(): poll.add_lookup(i, read_one(i))``, then ``poll.result()``.
    `mark` is None on the watcher's first poll (no watermark yet): one page sets the baseline.
    """

    def __init__(
        self,
        mark: Watermark | None,
        spec: WatchSpec,
        *,
        owner: str = "",
        started_at: str = "",
        rotation: int = 0,
        max_pages: int = MAX_PAGES_PER_POLL,
    ) -> None:
        self.mark = mark
        self.spec = spec
        self.owner = owner
        self.started_at = started_at
        self.rotation = rotation
        self.max_pages = max_pages
        self.runs: dict[int, TestRun] = {}  # every run on the pages read (first sighting wins)
        self.looked_up: dict[int, TestRun | None] = {}
        self.pages = 0
        self.extra_pages = 0  # pages read only to find open runs
        self.low: int | None = None  # lowest id on the pages read
        self.complete = False  # the list has no more pages
        self.stalled = False  # a page repeated the runs of an earlier one

    # -- pages --

    def add_page(self, runs: Iterable[TestRun], *, last: bool) -> None:
        """Feed the next page (newest first); `last`: the API says there is no page after it."""
        runs = list(runs)
        self.pages += 1
        ids = [run["id"] for run in runs]
        if ids and all(run_id in self.runs for run_id in ids):
            self.stalled = True  # the same runs again: the API ignores paging, stop here
        for run in runs:
            self.runs.setdefault(run["id"], run)
        if ids:
            self.low = min(ids) if self.low is None else min(self.low, *ids)
        if last or not ids:
            self.complete = True

    def add_snapshot(self, runs: Iterable[TestRun], *, pages: int, complete: bool) -> None:
        """Feed what a shared poll read (its first `pages` pages, newest first) in one go."""
        self.add_page(runs, last=complete)
        self.pages = max(1, pages)

    def _need_new(self) -> bool:
        """Pages must reach back to the watermark's window: runs above it are new."""
        if self.mark is None:
            return False
        return self.low is None or self.low > self.mark.window_low

    def _open_below(self) -> list[int]:
        """Open runs older than every run on the pages read: more pages may show them."""
        if self.mark is None or self.low is None:
            return []
        return [run_id for run_id in self.mark.open if run_id < self.low and run_id not in self.runs]

    def _open_unseen(self) -> list[int]:
        """Open runs the pages did not show (older than them, or gone from the list)."""
        if self.mark is None:
            return []
        return [run_id for run_id in self.mark.open if run_id not in self.runs]

    def next_page(self) -> int | None:
        """The page to read next, or None when this poll has seen enough."""
        if self.pages == 0:
            return 1
        if self.complete or self.stalled or self.mark is None or self.pages >= self.max_pages:
            return None
        if self._need_new():
            return self.pages + 1
        if self._open_below() and self.extra_pages < OPEN_EXTRA_PAGES:
            self.extra_pages += 1
            return self.pages + 1
        return None

    # -- single runs --

    def lookups(self) -> list[int]:
        """Open runs the pages did not show: read one by one, a few per poll, in turn."""
        if self.complete:
            return []  # the whole list was read: an open run not on it is gone
        missing = self._open_unseen()
        if len(missing) <= LOOKUPS_PER_POLL:
            return missing
        start = (self.rotation * LOOKUPS_PER_POLL) % len(missing)
        return (missing + missing)[start : start + LOOKUPS_PER_POLL]

    def add_lookup(self, run_id: int, run: TestRun | None) -> None:
        """The run read by id, or None when the API says it does not exist (404)."""
        self.looked_up[run_id] = run

    # -- the outcome --

    def result(self) -> PollResult:
        runs = sorted(self.runs.values(), key=lambda run: run["id"])
        newest = [run["id"] for run in reversed(runs)]
        if self.mark is None:  # first poll: a baseline; what already ended is not reported
            high = newest[0] if newest else 0
            running = [run["id"] for run in runs if not is_terminal(run) and self.spec.matches(run)]
            mark = Watermark(
                high=high,
                seen=tuple(newest[:SEEN_KEEP]),
                open=tuple(running),
                owner=self.owner,
                started_at=self.started_at,
            )
            baseline, overflow = _bounded(mark)
            return PollResult([], baseline, first=True, overflow=overflow)
        mark = self.mark
        known = set(mark.seen)
        low_window = mark.window_low
        open_ids = set(mark.open)
        ended: list[TestRun] = []
        for run in runs:
            run_id = run["id"]
            if run_id in open_ids:
                if is_terminal(run):
                    ended.append(run)
                    open_ids.discard(run_id)
                continue
            new = run_id > mark.high or (run_id >= low_window and run_id not in known)
            if not new or not self.spec.matches(run):
                continue
            if is_terminal(run):
                ended.append(run)
            else:
                open_ids.add(run_id)
        dropped = []
        for run_id, looked in sorted(self.looked_up.items()):
            if looked is None:
                dropped.append(run_id)
                open_ids.discard(run_id)
            elif run_id in open_ids and is_terminal(looked):
                ended.append(looked)
                open_ids.discard(run_id)
        if self.complete:  # every run is on the pages read: an open run not among them is gone
            gone = [run_id for run_id in open_ids if run_id not in self.runs and run_id not in self.looked_up]
            dropped.extend(sorted(gone))
            open_ids.difference_update(gone)
        high = max([mark.high, *newest[:1]])
        seen = sorted(known | set(newest), reverse=True)[:SEEN_KEEP]
        next_mark = replace(mark, high=high, seen=tuple(seen), open=tuple(sorted(open_ids)), owner=self.owner)
        bounded, overflow = _bounded(next_mark)
        ended.sort(key=lambda run: run["id"])
        truncated = self.pages >= self.max_pages and self._need_new()
        return PollResult(
            ended, bounded, first=False, dropped=dropped, overflow=overflow, truncated=truncated
        )


def _bounded(mark: Watermark) -> tuple[Watermark, list[int]]:
    if len(mark.open) <= MAX_OPEN:
        return mark, []
    overflow = list(mark.open[: len(mark.open) - MAX_OPEN])
    return replace(mark, open=mark.open[len(overflow) :]), overflow


# -- what an event says ------------------------------------------------------------------------------


def needs_names(run: Mapping[str, Any]) -> bool:
    """A run that ended with failed or flaky tests, whose answer (a list item) does not name them."""
    if run.get("state") != "ended" or run.get("failed_tests") is not None:
        return False
    return bool(run.get("failed_count") or run.get("flaky_count"))


def verdict_of(run: TestRun) -> Verdict:
    """The operator's verdict with its default pass policy (snoozed failures do not count)."""
    return judge(run, Policy())


def event_payload(run: TestRun, url: str | None, *, redelivered: bool = False) -> dict[str, Any]:
    """The event: the summary the operator returns (`outcome.summary_of`), its one-line
    description, and whether it may repeat an earlier event. Plain JSON."""
    policy = Policy()
    verdict = judge(run, policy)
    summary = summary_of(finished_event(run, url, policy), verdict)
    summary["message"] = describe(run, url)
    summary["redelivered"] = redelivered
    return dict(json.loads(json.dumps(summary, default=str)))


# -- errors ------------------------------------------------------------------------------------------

Severity = Literal["transient", "persistent"]


def classify(error: BaseException) -> tuple[Severity, str]:
    """Transient errors are retried at the next poll; persistent ones (a bad key, a missing
    connection, an answer that does not match the contract, a bug) are logged loudly and retried
    slowly. Nothing ends the watcher."""
    if isinstance(error, EmpiricalError):
        message = error.message
        if error.contract:
            message += (
                ". This is an API contract mismatch: please report it, with the output of "
                "`python -m airflow_provider_empirical.probe`"
            )
        if error.transient and not error.permanent:
            return "transient", message
        return "persistent", message
    return "persistent", f"{type(error).__name__}: {error}"
