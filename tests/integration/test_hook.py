"""EmpiricalHook and the HTTP core, over real HTTP to the emulator."""

from __future__ import annotations

import asyncio
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_empirical.api.test_runs import is_terminal
from airflow_provider_empirical.api.verdict import Policy, passes
from airflow_provider_empirical.config import ApiConfig, normalize_api_url
from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.errors import (
    EmpiricalAuthError,
    EmpiricalContractError,
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalRateLimitError,
    EmpiricalServerError,
    EmpiricalTriggerUncertainError,
    EmpiricalValidationError,
)
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.http.protocol import RetryPolicy
from tests.conftest import API_KEY, conn_json

FAST = RetryPolicy(attempts=5, base_delay=0.05, max_delay=0.2)


@pytest.fixture
def hook(empirical_conn: Emulator) -> EmpiricalHook:
    return EmpiricalHook(retry=FAST)


def test_trigger_sends_only_given_fields_with_bearer_key(hook: EmpiricalHook, emulator: Emulator) -> None:
    run = hook.trigger_test_run("production", tags=["@smoke"], metadata={"sha": "abc", "n": 3})
    assert set(run) >= {"id", "state", "test_run_branch", "created_at"}
    assert run["state"] == "queued" and isinstance(run["id"], int)
    (request,) = emulator.requests
    assert request.method == "PUT" and request.path == "/api/test-runs"
    assert request.json == {
        "environment": "production",
        "tags": ["@smoke"],
        "metadata": {"sha": "abc", "n": 3},
    }
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert "x-project-id" not in request.headers


def test_trigger_every_field_reaches_the_api(hook: EmpiricalHook, emulator: Emulator) -> None:
    source = hook.trigger_test_run("staging", branch="feature/x")
    run = hook.trigger_test_run(
        "production",
        build={
            "url": "https://ci/1",
            "branch": "main",
            "commit": "abc123",
            "commit_url": "https://gh/c",
            "version": "1.2",
        },
        metadata={"k": "v"},
        environment_variables_overrides={"BASE_URL": "https://preview.example"},
        tags=["@smoke", "@critical"],
        project_id=1,
        send_notifications=False,
        total_shards=3,
        rerun_source_id=source["id"],
        rerun_only_failed=True,
        github_actor="octocat",
    )
    body = emulator.trigger_body(run["id"])
    assert body["environment_variables_overrides"] == [
        {"name": "BASE_URL", "value": "https://preview.example"}
    ]
    assert body["rerun_source_id"] == source["id"] and body["total_shards"] == 3
    assert body["send_notifications"] is False and body["github_actor"] == "octocat"
    assert run["test_run_branch"] == "main"


def test_project_id_extra_is_sent_as_header(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator, extra={"project_id": "1", "timeout": 5})
    )
    EmpiricalHook(retry=FAST).trigger_test_run("production")
    assert emulator.requests[0].headers["x-project-id"] == "1"


def test_get_and_async_get_follow_the_run_to_its_end(hook: EmpiricalHook, emulator: Emulator) -> None:
    emulator.queue_runs(RunScript(queued_for=0.05, run_for=0.2, outcome="failed"))
    run_id = hook.trigger_test_run("production")["id"]
    first = hook.get_test_run(run_id)
    assert first["id"] == run_id and not is_terminal(first)
    time.sleep(0.4)
    final = hook.get_test_run(run_id)
    assert final["state"] == "ended" and final["failed_count"] and not passes(final, Policy())
    assert final["duration"] == 200

    async def aget() -> dict:
        try:
            return dict(await hook.aget_test_run(run_id))
        finally:
            await hook.aclose()

    assert asyncio.run(aget()) == final


def test_list_test_runs_walks_every_page(hook: EmpiricalHook) -> None:
    ids = [hook.trigger_test_run("production")["id"] for _ in range(5)]
    listed = [run["id"] for run in hook.list_test_runs(per_page=2)]
    assert listed == sorted(ids, reverse=True)
    assert [r["id"] for r in hook.list_test_runs(id=ids[0])] == [ids[0]]
    with pytest.raises(EmpiricalValidationError, match="colour"):
        list(hook.list_test_runs(colour="red"))


def test_test_connection_proves_the_key(empirical_conn: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = EmpiricalHook().test_connection()
    assert ok and "Demo project" in message
    assert empirical_conn.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(empirical_conn, password="wrong-key-0000"))
    ok, message = EmpiricalHook().test_connection()
    assert not ok and "401" in message and "API key" in message


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ({"status": 401}, EmpiricalAuthError, "HTTP 401"),
        ({"status": 403}, EmpiricalAuthError, "HTTP 403"),
        ({"status": 404}, EmpiricalNotFoundError, "HTTP 404"),
        ({"status": 422, "body": {"error": {"message": "bad thing"}}}, EmpiricalValidationError, "bad thing"),
    ],
)
def test_permanent_errors_are_not_retried(
    hook: EmpiricalHook, emulator: Emulator, fault: dict, error: type, words: str
) -> None:
    run_id = hook.trigger_test_run("production")["id"]
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=-1, **fault)
    with pytest.raises(error, match=words) as info:
        hook.get_test_run(run_id)
    assert info.value.endpoint == f"GET /api/test-runs/{run_id}"
    assert emulator.count("GET") == 1


def test_server_validation_message_is_kept(hook: EmpiricalHook, emulator: Emulator) -> None:
    with pytest.raises(EmpiricalValidationError, match=r"HTTP 400: .*environment") as info:
        hook.trigger_test_run("no-such-environment")
    assert info.value.status == 400 and emulator.count("PUT") == 1


def test_unknown_run_is_not_found(hook: EmpiricalHook) -> None:
    with pytest.raises(EmpiricalNotFoundError, match="test run id"):
        hook.get_test_run(999_999)


def test_get_retries_5xx_bursts_and_429_with_retry_after(hook: EmpiricalHook, emulator: Emulator) -> None:
    run_id = hook.trigger_test_run("production")["id"]
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=3, status=503)
    assert hook.get_test_run(run_id)["id"] == run_id
    assert emulator.count("GET") == 4
    emulator.add_fault(
        method="GET", path="/api/test-runs/*", times=1, status=429, headers={"Retry-After": "1"}
    )
    started = time.monotonic()
    assert hook.get_test_run(run_id)["id"] == run_id
    assert time.monotonic() - started >= 0.95  # Retry-After honoured, not the 50 ms backoff


def test_get_gives_up_after_its_attempts(hook: EmpiricalHook, emulator: Emulator) -> None:
    run_id = hook.trigger_test_run("production")["id"]
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=502)
    with pytest.raises(EmpiricalServerError, match="HTTP 502"):
        hook.get_test_run(run_id)
    assert emulator.count("GET") == FAST.attempts


def test_get_retries_dropped_connections(hook: EmpiricalHook, emulator: Emulator) -> None:
    run_id = hook.trigger_test_run("production")["id"]
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=1, drop=True)
    assert hook.get_test_run(run_id)["id"] == run_id


def test_a_2xx_that_is_not_json_is_a_contract_error_not_retried_by_the_http_layer(
    hook: EmpiricalHook, emulator: Emulator
) -> None:
    """A wait tolerates two in a row (test_waiting_faults); a single fetch says what it saw at once."""
    run_id = hook.trigger_test_run("production")["id"]
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=1, malformed=True)
    with pytest.raises(EmpiricalContractError):
        hook.get_test_run(run_id)
    assert emulator.count("GET") == 1
    assert hook.get_test_run(run_id)["id"] == run_id


def test_trigger_is_retried_when_the_server_surely_refused(hook: EmpiricalHook, emulator: Emulator) -> None:
    emulator.add_fault(method="PUT", path="/api/test-runs", times=2, status=429, headers={"Retry-After": "0"})
    hook.trigger_test_run("production")
    assert emulator.count("PUT") == 3 and len(emulator.runs) == 1


@pytest.mark.parametrize("after_create", [False, True])
def test_a_503_to_the_trigger_is_uncertain_and_never_resent(
    hook: EmpiricalHook, emulator: Emulator, after_create: bool
) -> None:
    """A gateway may answer 503 after the origin created the run: it proves nothing (issue 20.12)."""
    emulator.add_fault(method="PUT", path="/api/test-runs", times=-1, status=503, after_create=after_create)
    with pytest.raises(EmpiricalTriggerUncertainError, match="may have been created"):
        hook.trigger_test_run("production")
    assert emulator.count("PUT") == 1 and len(emulator.runs) == int(after_create)


def test_trigger_is_retried_after_connection_refused(hook: EmpiricalHook, emulator: Emulator) -> None:
    emulator.down_for(0.3)
    time.sleep(0.05)
    run = hook.trigger_test_run("production")
    assert [r["id"] for r in emulator.runs] == [run["id"]]


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "after_create": True},
        {"status": 502, "after_create": True},
        {"status": 504, "after_create": True},
        {"malformed": True, "after_create": True},
        {"drop": True, "after_create": True},
    ],
    ids=["500", "502", "504", "malformed", "dropped"],
)
def test_ambiguous_trigger_is_never_sent_twice(hook: EmpiricalHook, emulator: Emulator, fault: dict) -> None:
    emulator.add_fault(method="PUT", path="/api/test-runs", times=1, **fault)
    with pytest.raises(EmpiricalError, match="may have been created") as info:
        hook.trigger_test_run("production")
    assert info.value.may_have_created_run
    assert emulator.count("PUT") == 1 and len(emulator.runs) == 1


def test_read_timeout_after_create_is_not_retried(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator, extra={"timeout": 1}))
    emulator.add_fault(method="PUT", path="/api/test-runs", times=1, delay=1.5, after_create=True)
    with pytest.raises(EmpiricalTriggerUncertainError, match="may have been created") as info:
        EmpiricalHook(retry=FAST).trigger_test_run("production")
    assert emulator.count("PUT") == 1 and len(emulator.runs) == 1
    assert isinstance(info.value, AirflowFailException)  # Airflow does not retry it either


def test_redirects_are_not_followed(hook: EmpiricalHook, emulator: Emulator) -> None:
    emulator.add_fault(
        method="GET",
        path="/api/test-runs/*",
        times=1,
        status=307,
        headers={"Location": "https://elsewhere.example/api/test-runs/1"},
    )
    with pytest.raises(EmpiricalError, match="redirect") as info:
        hook.get_test_run(1)
    assert API_KEY not in str(info.value)
    assert emulator.count() == 1


def test_key_echoed_by_the_server_is_redacted(hook: EmpiricalHook, emulator: Emulator) -> None:
    run_id = hook.trigger_test_run("production")["id"]
    emulator.add_fault(method="GET", path="/api/test-runs/*", times=-1, status=500, echo_auth=True)
    with pytest.raises(EmpiricalServerError) as info:
        hook.get_test_run(run_id)
    assert "***" in str(info.value) and API_KEY not in str(info.value)
    assert API_KEY not in repr(hook) + repr(hook.config) + repr(hook.client)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "https://api.empirical.run"),
        ("api.empirical.run", "https://api.empirical.run"),
        ("https://dash.empirical.run/api", "https://dash.empirical.run"),
        ("https://dash.empirical.run/api/", "https://dash.empirical.run"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:9", "http://localhost:9"),
        ("http://[::1]:9", "http://[::1]:9"),
    ],
)
def test_api_url_normalisation(url: str, expected: str) -> None:
    assert normalize_api_url(url) == expected


@pytest.mark.parametrize("url", ["http://api.empirical.run", "http://10.0.0.5:8080", "ftp://x"])
def test_clear_text_or_odd_urls_are_refused(url: str) -> None:
    with pytest.raises(EmpiricalValidationError, match=r"clear text|not an http"):
        ApiConfig(api_key="k" * 10, base_url=url)


def test_rate_limit_error_is_transient_and_rejected() -> None:
    assert EmpiricalRateLimitError("x").transient and EmpiricalRateLimitError("x").rejected


def test_trigger_auth_error_fails_at_once_without_a_run(hook: EmpiricalHook, emulator: Emulator) -> None:
    emulator.add_fault(method="PUT", path="/api/test-runs", times=-1, status=401)
    with pytest.raises(EmpiricalAuthError, match="check the API key") as info:
        hook.trigger_test_run("production")
    assert not info.value.may_have_created_run
    assert emulator.count("PUT") == 1 and emulator.runs == []
