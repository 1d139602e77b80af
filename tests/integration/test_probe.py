"""The contract probe, over real loopback HTTP to the emulator, in-process and as the command itself.

Every test checks that the key never reaches stdout, stderr or the log: both keys used are
distinctive strings that cannot appear by accident.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.probe import main
from tests.conftest import API_KEY, conn_json

WRONG_KEY = "emp-wrong-key-5e1f0b-do-not-leak"
SHAPES = {"nested": "nested data.test_run.testRun", "flat": "flat data.test_run"}


def make_runs(emulator: Emulator, *outcomes: str) -> list[int]:
    """Trigger runs that end at once with the given outcomes; returns their ids, oldest first."""
    emulator.queue_runs(*(RunScript(queued_for=0, run_for=0, outcome=o) for o in outcomes))
    ids = []
    for _ in outcomes:
        answer = httpx.put(
            f"{emulator.url}/api/test-runs",
            json={"environment": "production"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        ids.append(answer.json()["data"]["test_run"]["id"])
    return ids


@pytest.fixture(params=sorted(SHAPES))
def shape(request: pytest.FixtureRequest, emulator: Emulator) -> Iterator[str]:
    """Each run-answer shape the emulator can serve (skipped until the emulator serves it)."""
    if hasattr(emulator, "set_shape"):
        emulator.set_shape(request.param)
    elif request.param != "flat":  # an emulator without the switch answers the flat shape
        pytest.skip("this emulator does not serve the nested shape yet")
    yield request.param
    if hasattr(emulator, "set_shape"):
        emulator.set_shape("nested")


@pytest.fixture
def env_key(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The probe configured the way a person with a real key would: environment variables."""
    monkeypatch.setenv("EMPIRICAL_API_KEY", API_KEY)
    monkeypatch.setenv("EMPIRICAL_API_URL", emulator.url)
    monkeypatch.delenv("EMPIRICAL_PROJECT_ID", raising=False)
    return emulator


def probe(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, *args: str
) -> tuple[int, str, str]:
    """Run main() in-process; returns (exit code, stdout, stderr) after checking nothing leaked."""
    code = main(list(args))
    out, err = capsys.readouterr()
    assert_no_key(out, err, caplog.text)
    return code, out, err


def finding(out: str, name: str, section: str = "") -> str:
    """`status detail` of the report line for one check name (in a section), whitespace collapsed."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(section)) if section else 0
    for line in lines[start:]:
        match = re.fullmatch(rf"\s+(\S+)\s+{re.escape(name)}(?:\s+(.*))?", line)
        if match:
            return " ".join(filter(None, match.groups()))
    raise AssertionError(f"no line for {name!r} in:\n{out}")


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text and WRONG_KEY not in text
        assert "Bearer" not in text and "authorization" not in text.lower()


def run_command(*args: str, key: str, url: str) -> subprocess.CompletedProcess[str]:
    """The command exactly as documented, as a subprocess."""
    env = {**os.environ, "EMPIRICAL_API_KEY": key, "EMPIRICAL_API_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_empirical.probe", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_no_key(result.stdout, result.stderr)
    return result


def test_healthy_emulator_passes_and_names_the_shape(
    env_key: Emulator, shape: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    make_runs(env_key, "failed", "passed")
    before = len(env_key.requests)
    code, out, _ = probe(capsys, caplog)
    assert code == 0, out
    assert f"Run answer shape: {SHAPES[shape]}" in out
    assert "Provider parser (parse_test_run): reads run 2, state ended" in out
    assert out.rstrip().splitlines()[-1].startswith("Verdict: OK")
    assert "MISSING" not in out
    assert finding(out, "data.project.slug") == "ok 'demo'"
    assert {r.method for r in env_key.requests[before:]} == {"GET"}  # read-only


def test_failed_run_per_test_rows_or_cases_fallback(
    env_key: Emulator, shape: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (run_id,) = make_runs(env_key, "failed")
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id))
    assert code == 0, out
    assert finding(out, "run.failed_count") == "ok 3"
    cases_calls = env_key.count("GET", "/api/v2/")
    if finding(out, "flattenedSummaryDetails").startswith("ok"):  # rows came: no extra request
        assert finding(out, "row.pw_test_id") == "ok in 24/24 rows" and cases_calls == 0
    else:
        assert shape == "flat"
        assert finding(out, "per-test rows") == "info found: list of 24, pw_test_id in 24"
        assert cases_calls == 1


def test_json_report_from_the_command(emulator: Emulator, shape: str) -> None:
    make_runs(emulator, "passed")
    result = run_command("--json", key=API_KEY, url=emulator.url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["exit_code"] == 0 and report["shape"] == SHAPES[shape]
    assert report["verdict"].startswith("OK")
    assert {c["status"] for c in report["checks"]} <= {"ok", "warn", "info"}
    names = {c["name"] for c in report["checks"]}
    assert {"data.test_runs.items", "shape", "run.id", "run.state", "parse_test_run"} <= names


def test_wrong_key_exits_2_without_printing_it(emulator: Emulator) -> None:
    result = run_command(key=WRONG_KEY, url=emulator.url)
    assert result.returncode == 2
    assert "401" in result.stderr and "check the key" in result.stderr
    assert result.stdout == ""


def test_2xx_without_a_run_is_a_mismatch(
    env_key: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (run_id,) = make_runs(env_key, "passed")
    body = {"data": {"status": "ok", "echo": API_KEY}, "debug": API_KEY, API_KEY: 1}
    env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=body, times=-1)
    code, out, _ = probe(capsys, caplog)
    assert code == 1, out
    assert finding(out, "shape") == "MISSING none"
    assert "Run answer shape: none" in out
    assert "Provider parser (parse_test_run): cannot read the run" in out
    assert out.rstrip().splitlines()[-1].startswith("Verdict: MISMATCH")
    run_section = f"GET /api/test-runs/{run_id}"
    assert finding(out, "unknown keys in the answer", run_section) == "info debug, ***"  # key redacted
    assert finding(out, "unknown keys in data", run_section) == "info echo, status"


def test_list_without_items_is_a_mismatch(
    env_key: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    env_key.add_fault(path="/api/test-runs", status=200, body={"data": {"runs": []}})
    code, out, _ = probe(capsys, caplog)
    assert code == 1
    assert finding(out, "data.test_runs.items") == "MISSING missing"
    assert finding(out, "unknown keys in data") == "info runs"


def test_2xx_that_is_not_json_is_a_mismatch(
    env_key: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (run_id,) = make_runs(env_key, "passed")
    env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=f"<html>{API_KEY}</html>", times=-1)
    code, out, _ = probe(capsys, caplog)
    assert code == 1, out
    assert finding(out, "JSON body").startswith("MISSING HTTP 200")
    assert "Verdict: MISMATCH" in out


def test_unknown_states_and_error_code_are_reported(
    env_key: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    (run_id,) = make_runs(env_key, "error")
    item = {"id": run_id, "state": "paused", "total_count": 1}
    env_key.add_fault(path="/api/test-runs", status=200, body={"data": {"test_runs": {"items": [item]}}})
    code, out, _ = probe(capsys, caplog)
    assert code == 0, out  # counts, slug and pagination are nice to have: warnings only
    assert finding(out, "unknown state values") == "warn paused"
    assert finding(out, "item.duration") == "warn in 0/1 items ()"
    assert finding(out, "error code key").startswith("info error_code (string) at data.test_run")


def test_empty_project_is_incomplete(
    env_key: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    code, out, _ = probe(capsys, caplog)
    assert code == 1
    assert "Verdict: INCOMPLETE" in out


def test_connection_id_from_airflow_env(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("EMPIRICAL_API_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_PROBE_TARGET", conn_json(emulator))
    make_runs(emulator, "passed")
    code, out, _ = probe(capsys, caplog, "--conn-id", "probe_target")
    assert code == 0, out
    assert f"probe: {emulator.url} (read-only" in out
    code, out, err = probe(capsys, caplog, "--conn-id", "no_such_connection")
    assert code == 2 and "no_such_connection" in err and out == ""


def test_usage_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("EMPIRICAL_API_KEY", raising=False)
    code, _, err = probe(capsys, caplog)
    assert code == 2 and "EMPIRICAL_API_KEY" in err
    monkeypatch.setenv("EMPIRICAL_API_KEY", API_KEY)
    monkeypatch.setenv("EMPIRICAL_API_URL", "http://example.com")  # clear text off this machine
    code, _, err = probe(capsys, caplog)
    assert code == 2 and "plain http" in err
    with pytest.raises(SystemExit) as exc:
        main(["--run-id", "0"])
    assert exc.value.code == 2
    assert_no_key(*capsys.readouterr())
