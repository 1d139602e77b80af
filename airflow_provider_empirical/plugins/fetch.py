"""The plugin's calls to Empirical, and what it remembers of their answers (per API-server process).

Cost, whatever the number of viewers:

- a task's run: one ``GET /api/test-runs/{id}`` per view; a finished run is then served from
  memory (keyed by connection and run id, for `FINISHED_TTL`, at most `RUN_CACHE_SIZE` runs); a
  run still going is never kept. Concurrent first views of one run share one call.
- the project page: one snapshot per connection per `PROJECT_TTL` (a minute), failures included:
  the environments, one list page per environment (one unfiltered page when the environments
  endpoint does not answer), and the analytics. Concurrent viewers share one snapshot.

Requests go through the connection's `EmpiricalHook` (its client, retry rules and key
redaction); nothing here forwards a path or a query that came from a browser. Two endpoints
have no hook method yet, so their calls are built here from the paths in `http.endpoints`
(they belong in `http/endpoints.py` + `http/operations.py`): the environments list and the
test-run analytics.

Imported when a view is first requested, never at API-server start: it loads the hook and httpx.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

from airflow_provider_empirical.api.errors import EmpiricalError
from airflow_provider_empirical.api.test_runs import (
    RunPage,
    TestRun,
    int_or_none,
    is_terminal,
    link_tests,
    parse_run_page,
)
from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.http import endpoints
from airflow_provider_empirical.http.protocol import Call, RetryPolicy
from airflow_provider_empirical.plugins import views

T = TypeVar("T")

VIEW_DEADLINE = 10.0  # seconds a view waits for Empirical, retries included
PROJECT_DEADLINE = 20.0  # seconds a project snapshot may take, all its calls included
FINISHED_TTL = 600.0  # seconds a finished run is served from memory (snoozes are evaluated live)
PROJECT_TTL = 60.0  # seconds a project snapshot is served from memory
HOOK_TTL = 300.0  # seconds before a connection is read again (a rotated key, an edited extra)
RUN_CACHE_SIZE = 128
LIST_PAGE = endpoints.MAX_PER_PAGE  # runs per list call (the documented maximum)
# A view is a person waiting: one quick retry of a transient error, not five.
RETRY = RetryPolicy(attempts=2, base_delay=0.5, max_delay=2.0)


class PluginError(Exception):
    """A view cannot be served; `message` is safe to show (no key, no control character)."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- memory ----------------------------------------------------------------------------------------


class _Flights:
    """One lock per key: concurrent callers for the same key wait for the first one's answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Any, threading.Lock] = {}

    def lock(self, key: Any) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def done(self, key: Any) -> None:
        with self._lock:
            self._locks.pop(key, None)


class FinishedRuns:
    """Finished runs by key, least recently used out first, each for `ttl` seconds."""

    def __init__(
        self,
        size: int = RUN_CACHE_SIZE,
        ttl: float = FINISHED_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size, self.ttl, self.clock = size, ttl, clock
        self._runs: OrderedDict[Any, tuple[float, TestRun]] = OrderedDict()
        self._lock = threading.Lock()
        self._flights = _Flights()

    def _cached(self, key: Any) -> tuple[TestRun, float] | None:
        with self._lock:
            entry = self._runs.get(key)
            if entry is None:
                return None
            if self.clock() - entry[0] > self.ttl:
                del self._runs[key]
                return None
            self._runs.move_to_end(key)
            return entry[1], entry[0]

    def get(self, key: Any, fetch: Callable[[], TestRun]) -> tuple[TestRun, float | None]:
        """(the run, when it was fetched (monotonic clock) if it came from memory, else None)."""
        cached = self._cached(key)
        if cached is not None:
            return cached
        flight = self._flights.lock(key)
        with flight:
            cached = self._cached(key)  # fetched by the caller this one waited for
            if cached is not None:
                return cached
            try:
                run = fetch()
            finally:
                self._flights.done(key)
            if is_terminal(run):
                with self._lock:
                    self._runs[key] = (self.clock(), run)
                    self._runs.move_to_end(key)
                    while len(self._runs) > self.size:
                        self._runs.popitem(last=False)
            return run, None

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()


@dataclass
class _Timed:
    """A value computed at most once per `ttl` seconds; concurrent callers share one computation."""

    ttl: float
    clock: Callable[[], float] = time.monotonic
    value: Any = None
    at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, compute: Callable[[], T]) -> tuple[T, bool]:
        """(the value, whether it came from memory)."""
        with self.lock:
            if self.at is not None and self.clock() - self.at <= self.ttl:
                return self.value, True
            self.value = compute()
            self.at = self.clock()
            return self.value, False


# -- one connection --------------------------------------------------------------------------------


def same_run_link(url: str, config: ApiConfig, run: TestRun) -> bool:
    """Whether the dashboard link the task pushed can be this connection's link to this run.

    The task's connection is not recorded anywhere the API server can read it (see lookup.py):
    this check keeps the page from showing another project's run that happens to have the id.
    Both links must be under the connection's dashboard, end with ``test-runs/<id>``, and name
    the same project slug when both name one.
    """
    prefix = config.dashboard_url + "/"
    if not url.startswith(prefix):
        return False
    parts = url[len(prefix) :].split("?")[0].split("/")
    if parts[-2:] != ["test-runs", str(run["id"])] or len(parts) not in (2, 3):
        return False
    slug = unquote(parts[0]) if len(parts) == 3 else None
    known = config.project_slug or run.get("project_slug")
    return slug is None or known is None or slug == known


class Source:
    """Empirical as one Airflow connection sees it, for the views of this API-server process."""

    def __init__(self, conn_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.conn_id = conn_id
        self.clock = clock
        self._hook: tuple[float, EmpiricalHook] | None = None
        self._hook_lock = threading.Lock()
        self.runs = FinishedRuns(clock=clock)
        self._project = _Timed(PROJECT_TTL, clock)

    def hook(self) -> EmpiricalHook:
        """The connection's hook, read again every `HOOK_TTL` seconds; only an `empirical` connection."""
        with self._hook_lock:
            if self._hook is not None and self.clock() - self._hook[0] <= HOOK_TTL:
                return self._hook[1]
            try:
                conn = EmpiricalHook.get_connection(self.conn_id)
            except Exception as exc:
                raise PluginError(
                    f"Connection {self.conn_id!r} cannot be read ({type(exc).__name__})"
                ) from None
            if getattr(conn, "conn_type", None) != "empirical":
                raise PluginError(f"Connection {self.conn_id!r} is not of type 'empirical'", status=409)
            hook = EmpiricalHook(self.conn_id, retry=RETRY)
            try:
                hook.config  # noqa: B018  # a broken connection fails here, naming the field
            except EmpiricalError as exc:
                raise PluginError(exc.message, status=409) from None
            hook.client  # noqa: B018  # one pooled client, made here (under the lock) for every thread
            if self._hook is not None:
                self._hook[1].close()
            self._hook = (self.clock(), hook)
            return hook

    # -- a task's run --

    def run(self, test_run_id: int, task_url: str | None) -> tuple[TestRun, float | None]:
        """The run (from memory when it finished less than `FINISHED_TTL` ago) and, when it came
        from memory, when it was fetched (monotonic clock).

        PluginError (409) when the link the task pushed is not this connection's link to the run.
        """

        def fetch() -> TestRun:
            hook = self.hook()
            try:
                run = hook.get_test_run(test_run_id, deadline=time.time() + VIEW_DEADLINE)
            except EmpiricalError as exc:
                status = 404 if exc.status == 404 else 502
                raise PluginError(
                    f"Empirical did not answer with test run {test_run_id}: {exc.message}", status
                ) from None
            if task_url and same_run_link(task_url, hook.config, run):
                link_tests(run, task_url)  # the task's own link knows the project slug
            return run

        run, fetched = self.runs.get(test_run_id, fetch)
        config = self.hook().config
        if task_url and not same_run_link(task_url, config, run):
            raise PluginError(
                f"The task's run link ({config.clean(task_url, 300)}) is not connection "
                f"{self.conn_id!r}'s link to test run {test_run_id}: the task used another "
                "connection, which the API server cannot tell. Nothing is shown.",
                status=409,
            )
        return run, fetched

    def run_url(self, run: TestRun, task_url: str | None) -> str:
        return task_url or self.hook().config.run_url(run["id"], run.get("project_slug"))

    def snoozes_url(self, run: TestRun, task_url: str | None) -> str | None:
        """The project's snoozes page (``<dashboard>/<slug>/snoozes``), when the slug is known."""
        config = self.hook().config
        slug = config.project_slug or run.get("project_slug")
        if not slug and task_url and task_url.startswith(config.dashboard_url + "/"):
            parts = task_url[len(config.dashboard_url) + 1 :].split("/")
            slug = unquote(parts[0]) if len(parts) == 3 else None
        return f"{config.dashboard_url}/{slug}/snoozes" if slug else None

    # -- the project page --

    def project(self) -> tuple[dict[str, Any], bool]:
        """The project page's data (at most once per `PROJECT_TTL`) and whether it came from memory."""
        return self._project.get(self._snapshot)

    def _snapshot(self) -> dict[str, Any]:
        fetched_at = time.time()
        try:
            hook = self.hook()
        except PluginError as exc:
            return {"error": exc.message, "fetched_at": fetched_at}
        config, client = hook.config, hook.client
        deadline = time.time() + PROJECT_DEADLINE
        notes: list[str] = []

        def get(call: Call) -> Any:
            return client.request(call, deadline=deadline)

        environments: list[dict[str, Any]] | None
        try:
            environments = read_environments(
                get(Call("GET", endpoints.ENVIRONMENTS, params={"is_disabled": False}))
            )
        except (EmpiricalError, ValueError) as exc:
            environments = None
            notes.append(f"environments list: {_why(exc)}; one list of the newest runs is shown instead")
        pages: list[tuple[dict[str, Any] | None, RunPage | None, str | None]] = []
        filters: dict[str, Any] = {"interval_in_days": views.PASS_RATE_DAYS}
        for environment in environments if environments is not None else [None]:
            if environment is not None:
                filters = {**filters, "environment_ids": environment["id"]}
            try:
                answer = get(endpoints.list_test_runs(1, LIST_PAGE, filters))
                pages.append((environment, parse_run_page(answer, config.clean), None))
            except (EmpiricalError, ValueError) as exc:
                pages.append((environment, None, _why(exc)))
        slug = config.project_slug or next(
            (
                str(page.project["slug"])
                for _, page, _ in pages
                if page and isinstance(page.project.get("slug"), str)
            ),
            None,
        )
        groups: dict[str, dict[str, Any]] = {}
        every_run: list[TestRun] = []
        for environment, listed, error in pages:
            runs = listed.runs if listed else []
            every_run.extend(runs)
            if environment is not None:
                key = environment["slug"]
                grouped = {key: runs[: views.RUNS_PER_ENVIRONMENT]}
                names = {key: environment.get("name") or key}
            else:
                grouped = views.group_by_environment(runs)
                names = {key: key for key in grouped}
            for key, group in grouped.items():
                groups[key] = {
                    "slug": key,
                    "name": names[key],
                    "error": error,
                    "runs": [
                        views.run_row(run, config.run_url(run["id"], slug or run.get("project_slug")))
                        for run in group
                    ],
                }
            if error and environment is None:
                groups["(all)"] = {"slug": "(all)", "name": "(all)", "error": error, "runs": []}
        try:
            pass_rate = views.pass_rate_from_analytics(
                get(Call("GET", endpoints.TEST_RUN_ANALYTICS, params={"days": views.PASS_RATE_DAYS}))
            )
        except (EmpiricalError, ValueError) as exc:
            pass_rate = views.pass_rate_from_runs(every_run)
            notes.append(
                f"analytics: {_why(exc)}; the pass rate is computed from the {len(every_run)} newest runs "
                f"(up to {LIST_PAGE} per environment) of the last {views.PASS_RATE_DAYS} days"
            )
        return {
            "connection": self.conn_id,
            "project": slug,
            "dashboard": f"{config.dashboard_url}/{slug}/test-runs" if slug else config.dashboard_url,
            "environments": list(groups.values()),
            "pass_rate": pass_rate,
            "notes": notes,
            "fetched_at": fetched_at,
        }


def read_environments(payload: Any) -> list[dict[str, Any]]:
    """`data.environments[]` of ``GET /api/environments/list``: id, slug, name of the enabled ones."""
    data = payload.get("data") if isinstance(payload, Mapping) else None
    items = data.get("environments") if isinstance(data, Mapping) else None
    if not isinstance(items, list):
        raise ValueError("no data.environments in the answer")
    found = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("is_disabled") is True:
            continue
        ident, slug = int_or_none(item.get("id")), item.get("slug")
        if ident is None or not isinstance(slug, str) or not slug:
            raise ValueError("an environment without a readable id and slug")
        name = item.get("name")
        found.append(
            {"id": ident, "slug": slug[:200], "name": name[:200] if isinstance(name, str) else slug[:200]}
        )
    return found


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, EmpiricalError) else str(exc)


# -- every connection of this process ---------------------------------------------------------------

_SOURCES: dict[str, Source] = {}
_SOURCES_LOCK = threading.Lock()


def source(conn_id: str) -> Source:
    with _SOURCES_LOCK:
        found = _SOURCES.get(conn_id)
        if found is None:
            found = _SOURCES[conn_id] = Source(conn_id)
        return found


def forget() -> None:
    """Drop every connection's memory (tests)."""
    with _SOURCES_LOCK:
        _SOURCES.clear()
