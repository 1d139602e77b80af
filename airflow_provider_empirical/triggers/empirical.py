"""Triggers: wait for a test run without holding a worker slot (EmpiricalTestRunTrigger), and
watch for runs that end anywhere to schedule DAGs on an asset (EmpiricalTestRunEndedTrigger)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Hashable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_empirical import watching
from airflow_provider_empirical.api.errors import EmpiricalError, EmpiricalNotFoundError
from airflow_provider_empirical.api.test_runs import RunPage, TestRun, is_terminal, link_tests
from airflow_provider_empirical.api.verdict import Policy
from airflow_provider_empirical.http.protocol import RetryPolicy
from airflow_provider_empirical.links import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

try:
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # Airflow 2.11: no event-driven scheduling; the class still imports
    BaseEventTrigger = BaseTrigger  # type: ignore[misc,assignment]


class EmpiricalTestRunTrigger(BaseTrigger):
    """Poll a test run until it ends or `end_time` passes, then yield exactly one event.

    Its kwargs are plain JSON (a connection id, never a key or a client) and `end_time` is
    wall-clock epoch seconds, so it can be rebuilt in another process after a restart.
    Transient API errors are retried and logged; they never end the wait. Anything else
    ends it with an `error` event that says what to fix. The event is a `WaitEvent` dict.

    :param test_run_id: the run to wait for.
    :param end_time: when to stop waiting, as a UNIX timestamp.
    :param empirical_conn_id: connection of type ``empirical``.
    :param poll_interval: seconds between two status checks.
    :param test_run_url: the run's dashboard page, for messages (computed by the task).
    :param policy: the task's pass policy (`api.verdict.Policy.to_dict()`), so the event's status
        counts failures as the task will (the task judges the run again when it resumes).
    :param created_at: when the task created the run (epoch seconds), if it just did: a 404 from
        read-after-write lag then keeps the wait going for a moment.
    :param cancel_on_kill: on Airflow 3.3+, cancel the run when a user marks the deferred task
        failed or success, or clears it (not when the triggerer restarts or the wait times out).
    :param cancel_reason: the reason recorded with that cancel (names the DAG, run and task).
    """

    def __init__(
        self,
        test_run_id: int,
        end_time: float,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        test_run_url: str | None = None,
        cancel_on_kill: bool = False,
        cancel_reason: str | None = None,
        created_at: float | None = None,
        policy: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.test_run_id = int(test_run_id)
        self.end_time = float(end_time)
        self.empirical_conn_id = empirical_conn_id
        self.poll_interval = float(poll_interval)
        self.test_run_url = test_run_url
        self.cancel_on_kill = bool(cancel_on_kill)
        self.cancel_reason = cancel_reason
        self.created_at = float(created_at) if created_at is not None else None
        self.policy = dict(policy) if policy else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "test_run_id": self.test_run_id,
                "end_time": self.end_time,
                "empirical_conn_id": self.empirical_conn_id,
                "poll_interval": self.poll_interval,
                "test_run_url": self.test_run_url,
                "cancel_on_kill": self.cancel_on_kill,
                "cancel_reason": self.cancel_reason,
                "created_at": self.created_at,
                "policy": self.policy,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if self.cancel_on_kill:  # so that a kill hook gets its answer about the task in time
            from airflow_provider_empirical.triggers.kill import warm_up

            warm_up(self)
        from airflow_provider_empirical.outcome import await_test_run

        hook = _hook(self.empirical_conn_id)
        try:
            event = await await_test_run(
                hook,
                self.test_run_id,
                url=self.test_run_url,
                poll_interval=self.poll_interval,
                end_time=self.end_time,
                log=self.log,
                # the task checked the run just before deferring; a random phase within the second
                # half of the interval keeps a thousand triggers deferred together from polling in waves
                first_delay=self.poll_interval * random.uniform(0.5, 1.0),
                created_at=self.created_at,
                policy=Policy.from_dict(self.policy),
            )
        finally:
            await hook.aclose()
        yield TriggerEvent(dict(event))  # type: ignore[no-untyped-call]

    async def on_kill(self) -> None:
        """Airflow 3.3+ calls this when the triggerer drops the trigger (after `run` was cancelled).

        That is a user's mark-failed/success or clear, or, on 3.3.2, a reassignment after this
        triggerer stalled (apache/airflow PR #73454): `kill.kill_hook` asks the task's state first
        (a task still deferred was only moved) and cancels within the time Airflow really gives.
        """
        if not self.cancel_on_kill:
            return
        from airflow_provider_empirical.triggers.kill import kill_hook

        await kill_hook(self)

    def __repr__(self) -> str:
        return (
            f"EmpiricalTestRunTrigger(test_run_id={self.test_run_id}, "
            f"empirical_conn_id={self.empirical_conn_id!r}, poll_interval={self.poll_interval}, "
            f"ends_in={max(0.0, self.end_time - time.time()):.0f}s)"
        )


# -- event-driven scheduling: runs that end anywhere ----------------------------------------------

COMMIT_DELAY = 3.0  # seconds between handing events to Airflow and recording them as delivered
SLOW_RETRY = 300.0  # seconds between polls while a bad key or a contract mismatch persists
DETAIL_TTL = 300.0  # seconds a run answer fetched for its test names is shared between watchers
SHARED_STREAM = "empirical-test-runs"  # first element of the shared-stream key
# Within a poll a failed read is retried a little (the next poll is the real retry), and no poll
# outlives max(poll_interval, POLL_DEADLINE) seconds, retries and their pauses included.
WATCH_RETRY = RetryPolicy(attempts=3)


def _hook(conn_id: str, retry: RetryPolicy | None = None) -> EmpiricalHook:
    """The hook, imported when a trigger runs: a DAG that only declares a watcher (parsed every
    cycle) does not load the hook and the HTTP layer."""
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

    return EmpiricalHook(conn_id, retry=retry)


POLL_DEADLINE = 30.0


class EmpiricalTestRunEndedTrigger(BaseEventTrigger):
    """Yield one event per matching Empirical test run that ends, wherever it was started.

    For ``AssetWatcher``: each event becomes an asset event that schedules the DAGs on the
    asset. It reads ``GET /api/test-runs`` (newest first) every ``poll_interval``: one page per
    poll in the steady state, and watchers of the same connection and interval share one poll
    on Airflow 3.3 (``shared_stream_key``). Runs that ended before the watcher first started
    are not reported; runs it saw running are reported when they end, even across a triggerer
    restart or a hand-over to another triggerer (the watermark lives in Airflow 3.3's asset
    state store; on 3.0-3.2 it lives in memory: see docs/event-driven.md).

    The event's payload is the summary the operator returns (``outcome.summary_of``: id,
    ``url``, ``state``, ``outcome``, the counts, ``failed_tests`` / ``snoozed_tests`` /
    ``flaky_tests`` with their pages when the API names them, ``commit``, ``build_url``...),
    plus ``message`` and ``redelivered`` (True when the event may repeat one a triggerer that
    died was handing over). DAGs read it as ``triggering_asset_events[asset][i].extra["payload"]``.

    Errors never end the watcher: a transient one is retried at the next poll; a bad key, a
    missing connection or an answer that does not match the contract is logged as an error and
    retried every 5 minutes. Bad parameters raise when the DAG is parsed, naming the parameter.

    :param environment: environment slug to watch, e.g. ``production``; None: every environment.
    :param branch: test-repo branch (``test_run_branch``) to watch; None: every branch.
    :param result: ``"passed"``, ``"failed"`` or None (any), judged as the operator judges a run
        with its default policy (snoozed failures do not count; a run that executed no test, errored
        or was cancelled has not passed).
    :param empirical_conn_id: connection of type ``empirical``.
    :param poll_interval: seconds between two polls of the list (at least 1; default 60).
    :param fetch_test_names: read a run that ended with failed or flaky tests once more
        (``GET /api/test-runs/{id}``) to name them in the event.
    """

    def __init__(
        self,
        environment: str | None = None,
        branch: str | None = None,
        result: str | None = None,
        empirical_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        fetch_test_names: bool = True,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.spec = watching.WatchSpec.checked(environment, branch, result)
        self.environment = self.spec.environment
        self.branch = self.spec.branch
        self.result = self.spec.result
        self.empirical_conn_id = watching.conn_id_of(empirical_conn_id)
        self.poll_interval = watching.poll_interval_of(poll_interval)
        self.fetch_test_names = watching.flag_of(fetch_test_names, "fetch_test_names")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "environment": self.environment,
                "branch": self.branch,
                "result": self.result,
                "empirical_conn_id": self.empirical_conn_id,
                "poll_interval": self.poll_interval,
                "fetch_test_names": self.fetch_test_names,
            },
        )

    @property
    def state_key(self) -> str:
        """The watermark's key in the asset state store: what the watcher watches, not how often
        (a new poll interval or result filter keeps the watermark)."""
        key = f"empirical_watermark:{self.empirical_conn_id}:{self.environment or '*'}:{self.branch or '*'}"
        if len(key) <= 200:
            return key
        return f"empirical_watermark:{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    # -- standalone: one poll loop per watcher (Airflow 3.0-3.2, or no shared stream) --

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = _Watch(self)
        try:
            while True:
                started = time.monotonic()
                async for event in watch.poll(None):
                    yield event
                # polls start every poll_interval: the time a poll took is not slept again
                await asyncio.sleep(max(0.0, watch.delay() - (time.monotonic() - started)))
        finally:
            await watch.close()

    # -- Airflow 3.3: watchers of one connection and interval share one poll of the list --

    def shared_stream_key(self) -> Hashable | None:
        return (SHARED_STREAM, self.empirical_conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """Read the list every poll interval and hand every watcher of the group the same
        snapshot (plain data: the runs read, newest first, and how far back they go)."""
        interval = watching.poll_interval_of(kwargs.get("poll_interval", 60.0))
        conn_id = kwargs.get("empirical_conn_id") or DEFAULT_CONN_ID
        hook = _hook(conn_id, retry=WATCH_RETRY)
        everything = watching.WatchSpec()
        mark: watching.Watermark | None = None
        try:
            while True:
                started = time.time()
                delay = interval
                hook.deadline = started + max(interval, POLL_DEADLINE)
                try:
                    poll = watching.Poll(mark, everything)
                    pages = 0
                    project: dict[str, Any] = {}
                    while (number := poll.next_page()) is not None:
                        page = await hook.alist_test_runs_page(number, per_page=watching.PER_PAGE)
                        project = project or dict(page.project)
                        poll.add_page(page.runs, last=_last_page(page, number))
                        pages = number
                    found = poll.result()
                    mark = found.mark
                    snapshot: dict[str, Any] = {
                        "runs": sorted(poll.runs.values(), key=lambda run: -run["id"]),
                        "pages": pages,
                        "complete": poll.complete,
                        "project": project,
                        "polled_at": started,
                    }
                except Exception as exc:
                    severity, message = watching.classify(exc)
                    if severity == "persistent":
                        delay = max(interval, SLOW_RETRY)
                    snapshot = {"error": message, "severity": severity, "retry_in": delay}
                yield snapshot
                await asyncio.sleep(max(0.0, delay - (time.time() - started)))
        finally:
            await hook.aclose()

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        watch = _Watch(self)
        try:
            async for snapshot in shared_stream:
                async for event in watch.poll(snapshot):
                    yield event
        finally:
            await watch.close()


def _last_page(page: RunPage, number: int) -> bool:
    """The API says no page follows (a page without `total_pages` proves nothing)."""
    return not page.runs or (page.total_pages is not None and number >= page.total_pages)


class _MemoryStore:
    """Where the watermark lives without Airflow 3.3's asset state store: this process only."""

    durable = False

    def __init__(self) -> None:
        self.value: Any = None

    async def load(self) -> Any:
        return self.value

    async def save(self, value: dict[str, Any]) -> None:
        self.value = value


class _AssetStore:
    """The watermark in the asset state store of the asset(s) the watcher watches (Airflow 3.3).

    A trigger whose kwargs are used by the watchers of several assets is one trigger watching
    all of them: the same watermark is written to each, and read from the first that has one.
    """

    durable = True

    def __init__(self, accessors: Any, key: str) -> None:
        self.key = key
        self.accessors = _accessors_of(accessors)

    async def load(self) -> Any:
        for accessor in self.accessors:
            value = await accessor.aget(self.key)
            if value is not None:
                return value
        return None

    async def save(self, value: dict[str, Any]) -> None:
        for accessor in self.accessors:
            await accessor.aset(self.key, value)


def _accessors_of(store: Any) -> list[Any]:
    """Airflow 3.3's `AssetStateStoreAccessors`: its one accessor, or one per watched asset."""
    try:
        return [store._single_accessor()]
    except ValueError:  # several assets: Airflow offers no public way to list them
        return [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
    except AttributeError:  # something else that reads and writes like one accessor
        return [store]


# One run answer per (event loop, connection, run) while watchers share it: several watchers
# that report the same failed run read its test names once.
_DETAILS: dict[tuple[int, str, int], tuple[float, asyncio.Task[TestRun]]] = {}


async def _run_answer(hook: EmpiricalHook, conn_id: str, run_id: int) -> TestRun:
    now = time.monotonic()
    for key, (created, task) in list(_DETAILS.items()):
        if now - created > DETAIL_TTL or (task.done() and (task.cancelled() or task.exception())):
            del _DETAILS[key]
    key = (id(asyncio.get_running_loop()), conn_id, run_id)
    if key not in _DETAILS:
        _DETAILS[key] = (now, asyncio.ensure_future(hook.aget_test_run(run_id)))
    return await asyncio.shield(_DETAILS[key][1])


class _StoodDown(Exception):
    """Another instance of this watcher writes its watermark now."""


class _Watch:
    """One watcher's I/O around `watching.Poll`: the list, the watermark store, the events."""

    def __init__(self, trigger: EmpiricalTestRunEndedTrigger) -> None:
        self.trigger = trigger
        self.spec = trigger.spec
        self.log = trigger.log
        self.hook = _hook(trigger.empirical_conn_id, retry=WATCH_RETRY)
        accessors = getattr(trigger, "asset_state_store", None)
        self.store: _MemoryStore | _AssetStore = (
            _AssetStore(accessors, trigger.state_key) if accessors is not None else _MemoryStore()
        )
        self.owner = uuid.uuid4().hex
        self.started_at = datetime.now(timezone.utc).isoformat()
        self.mark: watching.Watermark | None = None
        self.loaded = False
        self.redeliver: list[int] = []
        self.name_attempts: dict[int, int] = {}
        self.rotation = 0
        self.stood_down = False
        self.failing: str | None = None  # the persistent error of the last poll, if any
        self.slow = False

    def delay(self) -> float:
        """Seconds until the next poll: slower while a persistent error lasts."""
        return max(self.trigger.poll_interval, SLOW_RETRY) if self.slow else self.trigger.poll_interval

    async def close(self) -> None:
        await self.hook.aclose()

    # -- the watermark --

    async def _load(self) -> None:
        raw = await self.store.load()
        mark = None
        if raw is not None:
            try:
                mark = watching.Watermark.from_json(raw)
            except ValueError as exc:
                self.log.error(
                    "The stored watermark %r of this Empirical watcher cannot be read (%s): starting "
                    "afresh, so runs that ended before now are not reported.",
                    self.trigger.state_key,
                    exc,
                )
        if not self.store.durable:
            self.log.warning(
                "No asset state store (Airflow < 3.3, or the trigger is not run by an asset watcher): "
                "this watcher remembers what it reported in memory only. Runs that end while no "
                "triggerer runs it are not reported (docs/event-driven.md)."
            )
        if mark is None:
            self.log.info(
                "Empirical watcher starting (%s): first poll sets the baseline", self.spec.describe()
            )
        else:
            self.log.info(
                "Empirical watcher resuming (%s) after run %s, %d run(s) still open%s",
                self.spec.describe(),
                mark.high,
                len(mark.open),
                f", {len(mark.pending)} possibly unreported" if mark.pending else "",
            )
            if mark.pending:
                self.log.warning(
                    "Run(s) %s were being handed to Airflow when this watcher last stopped; Airflow may or "
                    "may not have stored them: reporting them again, with redelivered=True.",
                    list(mark.pending),
                )
                self.redeliver = list(mark.pending)
            mark = replace(mark, owner=self.owner)
            await self.store.save(mark.to_json())  # take over: an older instance stands down
        self.mark = mark
        self.loaded = True

    async def _save(self, mark: watching.Watermark) -> None:
        if self.store.durable:
            current = await self.store.load()  # also a round trip: see COMMIT_DELAY in docs
            owner = current.get("owner") if isinstance(current, dict) else None
            if owner and owner != self.owner:
                raise _StoodDown()
        await self.store.save(mark.to_json())
        self.mark = mark

    # -- one poll --

    async def poll(self, snapshot: Mapping[str, Any] | None) -> AsyncIterator[TriggerEvent]:
        """One poll (of the list, or of a shared snapshot of it); yields the events to fire."""
        if self.stood_down:
            return
        try:
            reports, mark = await self._find(snapshot)
            if reports:
                ids = tuple(sorted(payload["id"] for payload in reports))
                await self._save(replace(mark, pending=ids))
                for payload in reports:
                    self.log.info("Reporting: %s", payload["message"])
                    yield TriggerEvent(payload)  # type: ignore[no-untyped-call]
                # Airflow stores the events at its next sync with this process (every second):
                # only then is the watermark advanced past them (see docs/event-driven.md)
                await asyncio.sleep(COMMIT_DELAY)
                await self._save(mark)
            elif mark != self.mark:
                await self._save(mark)
            self.redeliver = []
            if self.failing:
                self.log.info("Empirical watcher polling normally again")
            self.failing = None
            self.slow = False
        except _StoodDown:
            self.stood_down = True
            self.log.warning(
                "Another instance of this watcher (%s) now keeps its watermark (a triggerer that stalled "
                "was replaced): this one stands down and reports nothing more.",
                self.trigger.state_key,
            )
        except Exception as exc:
            self._failed(exc)

    def _failed(self, error: BaseException) -> None:
        severity, message = watching.classify(error)
        if severity == "transient":
            self.log.warning(
                "Empirical watcher: %s; next poll in %.0f s", message, self.trigger.poll_interval
            )
            return
        self.slow = True
        self.failing = message
        self.log.error(
            "Empirical watcher (%s) cannot poll: %s. Retrying every %.0f s; nothing is reported until this "
            "is fixed (runs that end meanwhile are reported then).",
            self.spec.describe(),
            message,
            self.delay(),
        )

    async def _find(
        self, snapshot: Mapping[str, Any] | None
    ) -> tuple[list[dict[str, Any]], watching.Watermark]:
        """The payloads to report and the watermark after them."""
        if snapshot is not None and snapshot.get("error"):
            if snapshot.get("severity") == "transient":
                raise _SharedPollError(str(snapshot["error"]), transient=True)
            raise _SharedPollError(str(snapshot["error"]), transient=False)
        self.hook.deadline = time.time() + max(self.trigger.poll_interval, POLL_DEADLINE)
        if not self.loaded:
            await self._load()
        config = await self.hook.aconfig()
        poll = watching.Poll(
            self.mark, self.spec, owner=self.owner, started_at=self.started_at, rotation=self.rotation
        )
        self.rotation += 1
        slug = config.project_slug
        if snapshot is not None:
            poll.add_snapshot(
                snapshot["runs"], pages=int(snapshot["pages"]), complete=bool(snapshot["complete"])
            )
            slug = slug or _slug_of(snapshot.get("project"), config.clean)
        while (number := poll.next_page()) is not None:
            page = await self.hook.alist_test_runs_page(number, per_page=watching.PER_PAGE)
            slug = slug or _slug_of(page.project, config.clean)
            poll.add_page(page.runs, last=_last_page(page, number))
        for run_id in poll.lookups():
            poll.add_lookup(run_id, await self._read(run_id))
        found = poll.result()
        if found.first:
            self.log.info(
                "Baseline: run %s is the newest; %d matching run(s) still open are reported when they end",
                found.mark.high or "(none)",
                len(found.mark.open),
            )
        for run_id in found.dropped:
            self.log.warning("Test run %s, seen running, is no longer known to the API: not reported", run_id)
        if found.overflow:
            self.log.warning(
                "More than %d open runs: no longer following %s", watching.MAX_OPEN, found.overflow
            )
        if found.truncated:
            self.log.warning(
                "More than %d pages of new runs since the last poll: older ones were skipped",
                watching.MAX_PAGES_PER_POLL,
            )
        ended = list(found.ended)
        redelivered = set()
        for run_id in self.redeliver:
            if run_id in {run["id"] for run in ended}:
                redelivered.add(run_id)
                continue
            run = await self._read(run_id)
            if run is not None and is_terminal(run):
                ended.append(run)
                redelivered.add(run_id)
        reports, postponed = [], []
        for run in sorted(ended, key=lambda item: item["id"]):
            run, wait = await self._named(run)
            if wait:
                postponed.append(run["id"])
                continue
            url = config.run_url(run["id"], slug)
            link_tests(run, url)
            verdict = watching.verdict_of(run)
            if not self.spec.wants(verdict):
                self.log.info(
                    "Test run %s ended (%s): not a %r run, not reported",
                    run["id"],
                    verdict.outcome,
                    self.spec.result,
                )
                continue
            reports.append(watching.event_payload(run, url, redelivered=run["id"] in redelivered))
        mark = replace(found.mark.with_open(postponed), pending=())
        return reports, mark

    async def _read(self, run_id: int) -> TestRun | None:
        """One run by id; None when the API says it does not exist."""
        try:
            return await self.hook.aget_test_run(run_id)
        except EmpiricalNotFoundError:
            return None

    async def _named(self, run: TestRun) -> tuple[TestRun, bool]:
        """The run with its failed tests named (one more read), or (run, True) to try again at the
        next poll; after `NAME_ATTEMPTS` polls it is reported with counts only."""
        if not self.trigger.fetch_test_names or not watching.needs_names(run):
            return run, False
        try:
            named = await _run_answer(self.hook, self.trigger.empirical_conn_id, run["id"])
        except Exception as exc:
            attempts = self.name_attempts.get(run["id"], 0) + 1
            self.name_attempts[run["id"]] = attempts
            _, message = watching.classify(exc)
            if attempts < watching.NAME_ATTEMPTS and not isinstance(exc, EmpiricalNotFoundError):
                self.log.warning(
                    "Test run %s ended; its test names could not be read yet (%s)", run["id"], message
                )
                return run, True
            self.log.warning("Test run %s: reported without test names (%s)", run["id"], message)
            return run, False
        self.name_attempts.pop(run["id"], None)
        return copy.deepcopy(named), False  # shared with other watchers: theirs stays untouched


class _SharedPollError(EmpiricalError):
    """The shared poll of the list failed; each watcher of the group logs it."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _slug_of(project: Any, clean: Any) -> str | None:
    slug = project.get("slug") if isinstance(project, Mapping) else None
    return clean(slug) if isinstance(slug, str) and slug else None
