"""Failing closed, over real HTTP: deadlines that hold against slow answers, searches that end,
a task's memory across tries that neither blocks it nor starts a second run, and the API key kept
out of every message built from server text.

Each test drives public behaviour (the HTTP drivers, the hook, the waits, the sensor's poke, the
operator's execute) against the emulator or a loopback server of tests/fail_closed_servers.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.errors import (
    EmpiricalContractError,
    EmpiricalTransportError,
    EmpiricalTriggerUncertainError,
)
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
from airflow_provider_empirical.outcome import await_test_run, wait_for_test_run
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger
from tests.conftest import API_KEY, QUICK, conn_json
from tests.fail_closed_servers import (
    BS_KEY,
    HALVES,
    TRICKLES,
    PagesServer,
    TrickleServer,
    bomb_reply,
    nested_answer,
)

try:
    from airflow_provider_empirical.http.aio import shared_async_client
    from airflow_provider_empirical.http.protocol import Call, RetryPolicy
    from airflow_provider_empirical.http.sync import EmpiricalClient
except ImportError:  # the flat modules of earlier releases (so these tests can prove they failed there)
    from airflow_provider_empirical.http_async import shared_async_client  # type: ignore[no-redef]
    from airflow_provider_empirical.http_sync import EmpiricalClient  # type: ignore[no-redef]
    from airflow_provider_empirical.protocol import Call, RetryPolicy  # type: ignore[no-redef]

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1)
ONCE = RetryPolicy(attempts=1)
LIST = Call("GET", "/api/test-runs")
DRIVERS = ["sync", "async"]
MiB = 1024 * 1024


def config(url: str, timeout: float = 5.0) -> ApiConfig:
    return ApiConfig(api_key=API_KEY, base_url=url, timeout=timeout)


def send(
    driver: str, cfg: ApiConfig, call: Call, *, retry: RetryPolicy = FAST, deadline: float | None = None
) -> Any:
    """One `request` through the chosen driver, its client closed afterwards."""
    if driver == "sync":
        client = EmpiricalClient(cfg, retry)
        try:
            return client.request(call, deadline=deadline)
        finally:
            client.close()

    async def main() -> Any:
        async with shared_async_client(cfg, retry) as client:
            return await client.request(call, deadline=deadline)

    return asyncio.run(main())


def timed(fn: Any) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        result = fn()
    except Exception as exc:
        result = exc
    return result, time.monotonic() - started


class _Store:
    """The task_state_store's interface (get/set/delete); Airflow's own needs a running supervisor."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class _TI:
    dag_id, run_id, task_id = "d", "r", "t"

    def __init__(self, try_number: int = 1) -> None:
        self.try_number = try_number
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value") -> Any:
        return self.pushed.get(key)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- deadlines: every request, and every wait, ends by its deadline (issue 20.3-20.5, 20.8) ---------


@pytest.mark.parametrize("trickle", sorted(TRICKLES))
def test_an_answer_that_trickles_forever_ends_at_the_callers_deadline(driver: str, trickle: str) -> None:
    """Headers one byte per read, or a gzip body of empty deflate blocks: bytes keep coming but
    nothing is ever decoded, so only a total deadline ends the request (issue 20.3)."""
    server = TrickleServer(TRICKLES[trickle], give_up_after=15)
    try:
        error, elapsed = timed(
            lambda: send(driver, config(server.url, timeout=30), LIST, retry=ONCE, deadline=time.time() + 2)
        )
    finally:
        server.close()
    assert isinstance(error, EmpiricalTransportError), error
    assert 1.8 <= elapsed < 3.5, elapsed


@pytest.fixture
def run_that_never_ends(empirical_conn: Emulator) -> int:
    """A started run whose every read is answered `429 Retry-After: 25`."""
    empirical_conn.queue_runs(RunScript(outcome="never", queued_for=0, run_for=60))
    run_id: int = EmpiricalHook().trigger_test_run("production")["id"]
    empirical_conn.add_fault(
        method="GET", path=f"/api/test-runs/{run_id}", times=-1, status=429, headers={"Retry-After": "25"}
    )
    return run_id


def test_a_sync_wait_ends_by_its_deadline_after_a_long_retry_after(run_that_never_ends: int) -> None:
    """A 6 s wait against `Retry-After: 25` is over within 6 s, not after the pause (issue 20.5)."""
    started = time.monotonic()
    event = wait_for_test_run(
        EmpiricalHook(),
        run_that_never_ends,
        url=None,
        poll_interval=1,
        end_time=time.time() + 6,
        log=logging.getLogger(__name__),
    )
    elapsed = time.monotonic() - started
    assert event["status"] == "timeout" and elapsed <= 6.75, elapsed


def test_an_async_wait_ends_by_its_deadline_after_a_long_retry_after(run_that_never_ends: int) -> None:
    """The triggerer's twin of the wait: the same deadline (issue 20.5)."""

    async def main() -> Any:
        hook = EmpiricalHook()
        try:
            return await await_test_run(
                hook,
                run_that_never_ends,
                url=None,
                poll_interval=1,
                end_time=time.time() + 6,
                log=logging.getLogger(__name__),
            )
        finally:
            await hook.aclose()

    event, elapsed = timed(lambda: asyncio.run(main()))
    assert event["status"] == "timeout" and elapsed <= 6.75, elapsed


def test_https_to_a_plain_http_port_is_permanent_and_fast(driver: str, emulator: Emulator) -> None:
    """A TLS handshake with a server that does not speak TLS is not a blip: no retry (issue 20.8)."""
    slow = RetryPolicy(attempts=5, base_delay=2.0, max_delay=2.0)
    error, elapsed = timed(
        lambda: send(driver, config(f"https://127.0.0.1:{emulator.port}"), LIST, retry=slow)
    )
    assert isinstance(error, EmpiricalTransportError) and error.permanent, error
    assert not error.may_have_created_run and "https" in str(error) and elapsed < 1.5, elapsed


# -- memory: a gzip bomb costs the sync driver no more than the cap (issue 20.19) --------------------


def test_a_gzip_bomb_costs_the_sync_driver_at_most_a_few_mib() -> None:
    """512 MiB of zeros in 0.5 MB of gzip: decoding stops at the 4 MiB cap, and the request never
    holds much more than that (issue 20.19)."""
    server = TrickleServer(bomb_reply(512), give_up_after=60)
    client = EmpiricalClient(config(server.url), ONCE)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        error, _ = timed(lambda: client.request(LIST))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        client.close()
        server.close()
    assert isinstance(error, EmpiricalContractError) and "MiB" in str(error), error
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB"  # ~8 MiB: the cap, and zlib's output buffer


# -- searching for a run with filters (issue 20.6, 20.7) ---------------------------------------------

HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


def test_a_filter_search_keeps_waiting_through_an_outage_longer_than_one_calls_retries(
    empirical_conn: Emulator,
) -> None:
    """Seven 503s in a row on the list endpoint: more than one call's three attempts. The poke
    says "not yet" until the API answers, then finds the run and waits for it (issue 20.6)."""
    empirical_conn.queue_runs(RunScript(**QUICK))
    run_id = EmpiricalHook().trigger_test_run("production")["id"]
    empirical_conn.add_fault(method="GET", path="/api/test-runs", times=7, status=503)
    sensor = EmpiricalTestRunSensor(task_id="s", environment="production", created_after=HOUR_AGO.isoformat())
    sensor.__dict__["hook"] = EmpiricalHook(retry=FAST)
    context: Any = {"ti": _TI()}
    pokes: list[Any] = []
    for _ in range(20):
        pokes.append(sensor.poke(context))
        if pokes[-1]:
            break
        time.sleep(0.3)
    assert pokes[:2] == [False, False]  # 3 + 3 attempts: 503 each time, still waiting
    assert pokes[-1] and pokes[-1].xcom_value["id"] == run_id
    assert empirical_conn.count("GET", "/api/test-runs") - empirical_conn.count("GET", "/api/test-runs/") == 8


def _item(run_id: int, created_at: Any, environment: str = "production") -> dict[str, Any]:
    return {
        "id": run_id,
        "state": "ended",
        "created_at": created_at,
        "environment_slug": environment,
        "test_run_branch": "main",
        "total_count": 1,
        "success_count": 1,
        "failed_count": 0,
    }


@pytest.fixture
def serve_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[int], Any]], PagesServer]]:
    """Starts a PagesServer serving `items(page)` and points `empirical_default` at it; closed after."""
    servers: list[PagesServer] = []

    def start(items: Callable[[int], Any]) -> PagesServer:
        server = PagesServer(items)
        servers.append(server)
        conn = {"conn_type": "empirical", "host": server.url, "password": API_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", json.dumps(conn))
        return server

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("written", ["as a number", "as a digit string"])
def test_a_filter_search_reads_epoch_millisecond_times_and_stops_at_the_first_older_page(
    serve_pages: Callable[[Callable[[int], Any]], PagesServer], written: str
) -> None:
    """Times as epoch milliseconds: page 1 holds recent runs, every later page older ones. The
    production run is found on page 1; a search nothing matches ends after page 2 (issue 20.7)."""
    form = int if written == "as a number" else str
    now_ms = int(time.time() * 1000)
    old_ms = int(HOUR_AGO.timestamp() * 1000) - 60_000

    def items(page: int) -> list[dict[str, Any]]:
        if page == 1:
            return [_item(10_000, form(now_ms), "staging"), _item(9_999, form(now_ms - 1000))]
        return [_item(10_000 - 2 * page - i, form(old_ms - page), "staging") for i in range(2)]

    server = serve_pages(items)
    found = EmpiricalHook().latest_test_run(environment="production", branch="main", created_after=HOUR_AGO)
    assert found is not None and found["id"] == 9_999 and server.pages == [1]
    server.pages.clear()
    none = EmpiricalHook().latest_test_run(environment="development", branch="main", created_after=HOUR_AGO)
    assert none is None and server.pages == [1, 2]


def test_a_page_without_a_readable_created_at_ends_the_search_and_says_so(
    serve_pages: Callable[[Callable[[int], Any]], PagesServer], capfd: pytest.CaptureFixture[str]
) -> None:
    """1,000 distinct pages announced, none with a time that can be read: one page, a warning
    naming what it could not read, no run (issue 20.7)."""
    server = serve_pages(lambda page: [_item(100_000 - page, "last tuesday")])
    found = EmpiricalHook().latest_test_run(environment="production", created_after=HOUR_AGO)
    assert found is None and server.pages == [1]
    warnings = [line for line in capfd.readouterr().out.splitlines() if "warning" in line.lower()]
    assert any("created_at" in line and "last tuesday" in line for line in warnings), warnings


# -- a task's memory across tries (Airflow 3.3's durable task state; issue 20.11, 20.13-20.15) -------


def _try(store: _Store, try_number: int) -> dict[str, Any]:
    """The context of one try of task d.t in DAG run r, with the task's durable state."""
    return {"ti": _TI(try_number), "task_state_store": store, "run_id": "r"}


def _waits(**kwargs: Any) -> EmpiricalTriggerTestRunOperator:
    return EmpiricalTriggerTestRunOperator(
        task_id="t", environment="production", wait_for_completion=True, poll_interval=1, **kwargs
    )


def test_a_stored_run_that_answers_404_right_after_creation_is_looked_at_again(
    empirical_conn: Emulator,
) -> None:
    """Try 1 starts run 1 and times out; try 2 reads run 1 and gets a 404 twice (read-after-write
    lag): it looks again instead of starting a second run (issue 20.11)."""
    store = _Store()
    empirical_conn.queue_runs(RunScript(queued_for=0.1, run_for=8))
    with pytest.raises(Exception, match="Timed out"):
        _waits(timeout=1).execute(_try(store, 1))
    (first,) = empirical_conn.runs
    empirical_conn.add_fault(method="GET", path=f"/api/test-runs/{first['id']}", times=2, status=404)
    summary = _waits(timeout=30).execute(_try(store, 2))
    assert summary["id"] == first["id"] and summary["state"] == "ended"
    assert empirical_conn.count("PUT") == 1 and len(empirical_conn.runs) == 1


def test_a_connection_that_cannot_be_read_leaves_no_trigger_sent_mark(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Try 1 fails reading its connection: nothing was sent, so try 2 triggers (issue 20.13)."""
    store = _Store()
    monkeypatch.delenv("AIRFLOW_CONN_FAIL_CLOSED_LATER", raising=False)
    later = {"task_id": "t", "environment": "production", "empirical_conn_id": "fail_closed_later"}
    with pytest.raises(Exception, match="fail_closed_later"):
        EmpiricalTriggerTestRunOperator(**later).execute(_try(store, 1))
    assert emulator.count() == 0
    monkeypatch.setenv("AIRFLOW_CONN_FAIL_CLOSED_LATER", conn_json(emulator))
    run_id = EmpiricalTriggerTestRunOperator(**later).execute(_try(store, 2))
    assert run_id == emulator.runs[0]["id"] and emulator.count("PUT") == 1


def test_after_an_uncertain_trigger_the_first_clear_starts_a_fresh_run(empirical_conn: Emulator) -> None:
    """A 502 after the run was created: that try fails saying a run may exist; the next try (a
    user's clear, there is no Airflow retry) starts a new run at once, not one try later (issue 20.13)."""
    store = _Store()
    empirical_conn.add_fault(method="PUT", path="/api/test-runs", times=1, status=502, after_create=True)
    with pytest.raises(EmpiricalTriggerUncertainError, match="may have been created"):
        EmpiricalTriggerTestRunOperator(task_id="t", environment="production").execute(_try(store, 1))
    assert empirical_conn.count("PUT") == 1
    run_id = EmpiricalTriggerTestRunOperator(task_id="t", environment="production").execute(_try(store, 2))
    assert empirical_conn.count("PUT") == 2 and run_id == empirical_conn.runs[1]["id"]


def test_a_retry_reattaches_only_while_the_task_asks_for_the_same_run(empirical_conn: Emulator) -> None:
    """Build v1 times out; a retry for v1 re-attaches to its run; after a clear that renders v2,
    a new run starts with v2 and the result is v2's (issue 20.14)."""
    store = _Store()
    empirical_conn.queue_runs(RunScript(queued_for=0.1, run_for=3), RunScript(**QUICK))
    v1, v2 = ({"commit": commit, "version": version} for commit, version in (("c1", "v1"), ("c2", "v2")))
    with pytest.raises(Exception, match="Timed out"):
        _waits(timeout=1, build=v1).execute(_try(store, 1))
    again = _waits(timeout=30, build=v1).execute(_try(store, 2))
    (first,) = empirical_conn.runs
    assert again["id"] == first["id"] and empirical_conn.count("PUT") == 1
    cleared = _waits(timeout=30, build=v2).execute(_try(store, 3))
    assert empirical_conn.count("PUT") == 2
    second = empirical_conn.runs[1]
    assert cleared["id"] == second["id"] and cleared["commit"] == "c2"
    assert empirical_conn.trigger_body(second["id"])["build"] == v2


STALE = ["403", "abc", "-1", "no id"]


def _store_stale_run(store: _Store, case: str, op: EmpiricalTriggerTestRunOperator, context: Any) -> None:
    """What an earlier try (or an older release, or something else) left: in today's format
    (`empirical_test_run` -> {"id", "digest", "rerun_of", "stored_at"}, for the same request) and in
    the format before it (`empirical_test_run_id` -> the id), so the test runs on both."""
    try:
        from airflow_provider_empirical.durable import request_digest

        digest: str | None = request_digest(op._request_body(context))
    except ImportError:
        digest = None
    run_id: Any = {"403": 999, "abc": "abc", "-1": -1, "no id": None}[case]
    store.set(
        "empirical_test_run", {"id": run_id, "digest": digest, "rerun_of": None, "stored_at": time.time()}
    )
    store.set("empirical_test_run_id", {"id": 5} if case == "no id" else run_id)


@pytest.mark.parametrize("case", STALE)
def test_a_stale_or_corrupt_stored_run_is_forgotten_after_a_log_line(
    empirical_conn: Emulator, capfd: pytest.CaptureFixture[str], case: str
) -> None:
    """A stored run the key may not read (403), an id that is no id: logged, forgotten, and a new
    run starts, instead of every try and every clear failing (issue 20.15)."""
    store = _Store()
    op, context = _waits(timeout=30), _try(store, 2)
    _store_stale_run(store, case, op, context)
    empirical_conn.add_fault(method="GET", path="/api/test-runs/999", times=-1, status=403)
    empirical_conn.queue_runs(RunScript(**QUICK))
    summary = op.execute(context)
    assert summary["id"] == empirical_conn.runs[0]["id"] and empirical_conn.count("PUT") == 1
    warnings = [line for line in capfd.readouterr().out.splitlines() if "warning" in line.lower()]
    assert any("forget" in line.lower() for line in warnings), warnings


# -- the key in server text (issue 20.16) -----------------------------------------------------------

SERVER_TEXT = {
    "keys of an answer without a run": {BS_KEY: {"id": 1}, "data": {BS_KEY: {"id": 1}}},
    "error code": nested_answer({"id": 1, "state": "error", "error_code": BS_KEY}),
    "state": nested_answer({"id": 1, "state": BS_KEY}),
    "test names": nested_answer(
        {"id": 1, "state": "ended", "total_count": 2, "success_count": 1, "failed_count": 1},
        [
            {"name": "login", "status": "passed", "pw_test_id": "p1"},
            {"name": BS_KEY, "status": "failed", "pw_test_id": BS_KEY, "nesting": [BS_KEY]},
        ],
    ),
}


@pytest.fixture
def backslash_key_conn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """`empirical_default` with a key holding a backslash (faults answer before the key is checked)."""
    with Emulator(api_keys={BS_KEY: 1}) as emulator:
        conn = {"conn_type": "empirical", "host": emulator.url, "password": BS_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", json.dumps(conn))
        yield emulator


@pytest.mark.parametrize("case", sorted(SERVER_TEXT))
def test_the_key_in_server_text_reaches_no_message_or_log(
    backslash_key_conn: Emulator,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    case: str,
) -> None:
    """The key, raw or escaped, in JSON key names, error codes, states and test names of a run
    answer: not in the sensor's exception, the trigger's event, nor any log line (issue 20.16)."""
    backslash_key_conn.add_fault(
        method="GET", path="/api/test-runs/1", times=-1, status=200, body=SERVER_TEXT[case]
    )
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    sensor = EmpiricalTestRunSensor(task_id="s", test_run_id=1, poke_interval=1)
    for _ in range(3):  # an answer without a run ends a poke sensor's wait at the third
        try:
            if sensor.poke({"ti": _TI()}):
                break
        except Exception as exc:
            texts += [str(exc), repr(exc)]
            break

    async def first_event() -> Any:
        trigger = EmpiricalTestRunTrigger(test_run_id=1, end_time=time.time() + 2, poll_interval=0.5)
        async for event in trigger.run():
            return event.payload
        return None

    payload = asyncio.run(first_event())
    texts.append(json.dumps(payload))
    texts += [record.getMessage() for record in caplog.records]
    texts += capfd.readouterr()  # the task loggers print to the console
    assert payload is not None and payload["status"] != "success"
    leaks = [text for text in texts if any(half in text for half in HALVES)]
    assert leaks == []
    assert any("***" in text for text in texts)  # the server text did reach them, redacted
