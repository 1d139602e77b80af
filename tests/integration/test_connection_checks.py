"""Connections are checked once, when read (issue 13): each problem names the field to fix, never a
secret value, and nothing is sent. Real Airflow connections from AIRFLOW_CONN_* environment variables.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator
from airflow_provider_empirical.errors import EmpiricalTriggerUncertainError, EmpiricalValidationError
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from tests.conftest import API_KEY, conn_json


def _use(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", value)


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"password": f"{API_KEY}\nX-Injected: 1"}, "password", "line break"),
    ({"password": "emp-kéy-ünicode-123"}, "password", "non-ASCII"),
    ({"password": "emp key with spaces"}, "password", "space"),
    ({"password": "   "}, "password", "no API key"),
    ({"host": "https://user:pw@api.example.com"}, "host", "user name or password"),
    ({"extra": {"dashboard_url": "javascript:alert(1)"}}, "dashboard_url", "http(s)"),
    ({"extra": {"dashboard_url": "data:text/html,hi"}}, "dashboard_url", "http(s)"),
    (
        {"extra": {"dashboard_url": "https://me:secret@dash.example"}},
        "dashboard_url",
        "user name or password",
    ),
    ({"extra": {"timeout": "inf"}}, "timeout", "finite"),
    ({"extra": {"timeout": 1e9}}, "timeout", "at most"),
    ({"extra": {"timeout": "soon"}}, "timeout", "number of seconds"),
    ({"extra": {"project_id": "one"}}, "project_id", "integer"),
    ({"extra": {"project_slug": "../../evil"}}, "project_slug", "slug"),
    ({"extra": {"ca_bundle": "/nonexistent/ca.pem"}}, "ca_bundle", "PEM file"),
]


@pytest.mark.parametrize(
    ("change", "field", "words"), BAD, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD)]
)
def test_bad_connections_name_the_field_and_send_nothing(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], field: str, words: str
) -> None:
    conn = json.loads(conn_json(emulator))
    extra = {**conn["extra"], **change.pop("extra", {})}
    _use(monkeypatch, json.dumps({**conn, **change, "extra": extra}))
    with pytest.raises(EmpiricalValidationError) as info:
        EmpiricalHook().get_test_run(1)
    message = str(info.value)
    assert info.value.field == field and words in message and "'empirical_default'" in message
    assert message.count("Connection 'empirical_default'") == 1  # said once, not twice
    assert API_KEY not in message and "secret" not in message
    assert emulator.count() == 0


def test_extra_that_is_not_json_is_an_error_not_silently_dropped(emulator: Emulator) -> None:
    """Airflow's `extra_dejson` logs and drops an extra that is not JSON: the hook refuses it."""
    from airflow.providers.common.compat.sdk import Connection

    conn = Connection(conn_id="broken", conn_type="empirical", host=emulator.url, password=API_KEY)
    conn.extra = "{project_id: 1"  # a hand-edited extra, as the UI's raw JSON box allows
    hook = EmpiricalHook("broken")
    hook.get_connection = lambda conn_id: conn  # type: ignore[method-assign]  # the lookup, not the check
    with pytest.raises(EmpiricalValidationError, match="extra is not valid JSON") as info:
        hook.get_test_run(1)
    assert info.value.field == "extra" and emulator.count() == 0


def test_unknown_extra_keys_are_named_in_a_warning(
    empirical_conn: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: Any
) -> None:
    _use(monkeypatch, conn_json(empirical_conn, extra={"dashboard_url": empirical_conn.url, "projectid": 1}))
    with caplog.at_level(logging.WARNING):
        assert EmpiricalHook().test_connection()[0] is True
    said = caplog.text + "".join(capfd.readouterr())
    assert "unknown extra field(s) ['projectid']" in said


def test_a_key_with_surrounding_whitespace_is_stripped_once_and_redacted(
    empirical_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's masker misses the key when the stored password has whitespace around it: we redact."""
    _use(monkeypatch, conn_json(empirical_conn, password=f"  {API_KEY}\t"))
    empirical_conn.add_fault(method="PUT", path="/api/test-runs", times=1, status=200, echo_auth=True)
    with pytest.raises(EmpiricalTriggerUncertainError) as info:
        EmpiricalHook().trigger_test_run("production")
    assert API_KEY not in str(info.value) and API_KEY[:12] not in str(info.value)
    assert empirical_conn.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_test_connection_never_raises(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, conn_json(emulator, password="bad\nkey"))
    ok, message = EmpiricalHook().test_connection()
    assert ok is False and "password" in message and "bad" not in message
    ok, message = EmpiricalHook("no_such_connection").test_connection()
    assert ok is False and "no_such_connection" in message


def test_a_private_ca_bundle_is_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ca_bundle` points both drivers at a private CA (an https emulator with a self-signed cert)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    with Emulator(api_keys={API_KEY: 1}, tls=(str(cert), str(key))) as emulator:
        _use(monkeypatch, conn_json(emulator, extra={"ca_bundle": str(cert), "dashboard_url": emulator.url}))
        ok, message = EmpiricalHook().test_connection()
        assert ok, message

        async def fetch() -> int:
            hook = EmpiricalHook()
            try:
                return (await hook.aget_test_run(run_id))["id"]
            finally:
                await hook.aclose()

        run_id = EmpiricalHook().trigger_test_run("production")["id"]
        assert asyncio.run(fetch()) == run_id
        _use(monkeypatch, conn_json(emulator))  # without it, the same server does not verify
        assert EmpiricalHook().test_connection()[0] is False
