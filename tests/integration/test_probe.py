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
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def summary(out: str, label: str) -> str:
    """The text after `label: ` on the report's summary lines at its end."""
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(label))


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
    assert finding(out, "run.failed_count_after_snoozing") == "ok 0"
    assert finding(out, "run.environment_id") == "ok 1"
    assert finding(out, "snoozes") == "info no failure in this run: nothing to tell apart"
    assert summary(out, "Provider verdict") == (
        "success: a task would pass, tests were executed and none failed; "
        "failures that count: 0 of 0 (basis: failed_count_after_snoozing)"
    )
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
        assert finding(out, "per-test rows") == "info found: list of 24, pw_test_id in 24, snooze_info in 0"
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
    assert finding(out, "unknown keys in the answer", run_section) == "info ***, debug"  # key redacted
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


# -- snoozes, keys the provider does not read, the provider's verdict (issue 23.6) ---------------

ALL_SNOOZED = RunScript(
    queued_for=0,
    run_for=0,
    outcome="failed",
    total=24,
    failed_tests=["signs in with email"],
    snoozed_tests=True,
)
PARTLY_SNOOZED = RunScript(
    queued_for=0,
    run_for=0,
    outcome="failed",
    total=24,
    failed_tests=["signs in with email", "pays with card"],
    snoozed_tests=["pays with card"],
)


def start_scripted(emulator: Emulator, script: RunScript) -> int:
    emulator.queue_runs(script)
    answer = httpx.put(
        f"{emulator.url}/api/test-runs",
        json={"environment": "production"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    return int(answer.json()["data"]["test_run"]["id"])


def real_answer(emulator: Emulator, run_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The emulator's own answer for a run, and the run's fields in it (either shape), to edit."""
    answer = httpx.get(
        f"{emulator.url}/api/test-runs/{run_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    body: dict[str, Any] = answer.json()
    wrapper = body["data"]["test_run"]
    return body, wrapper.get("testRun", wrapper)


@pytest.mark.parametrize("details", [False, True], ids=["snooze_id", "snooze_details"])
def test_an_all_snoozed_run_is_judged_passed_from_the_snooze_fields(
    env_key: Emulator,
    shape: str,
    details: bool,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env_key.set_switches(snooze_info_details=details)
    run_id = start_scripted(env_key, ALL_SNOOZED)
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id))
    assert code == 0, out
    assert finding(out, "run.failed_count") == "ok 1"
    assert finding(out, "run.failed_count_after_snoozing") == "ok 0"
    assert finding(out, "snoozes") == "ok honoured: failures counted from failed_count_after_snoozing"
    assert summary(out, "Provider verdict") == (
        "success: a task would pass, every failure (1) is snoozed, as Empirical judges it; "
        "failures that count: 0 of 1 (basis: failed_count_after_snoozing)"
    )
    if shape == "nested":
        keys = "description, snooze_id, snooze_until" if details else "snooze_id"
        assert (
            finding(out, "row.snooze_info") == f"ok in 24/24 rows (list), non-empty in 1; item keys: {keys}"
        )
        assert finding(out, "row.nesting") == "ok in 24/24 rows"
        assert finding(out, "row.test_project") == "ok in 24/24 rows"
    assert "Scripted for test run" not in out  # keys of snooze_info, never its values


def test_a_partly_snoozed_run_fails_on_the_unsnoozed_failure(
    env_key: Emulator, shape: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = start_scripted(env_key, PARTLY_SNOOZED)
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["judgement"].startswith("failed: a task would fail, 1 test(s) failed")
    assert report["judgement"].endswith("failures that count: 1 of 2 (basis: failed_count_after_snoozing)")
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["judge"]["status"] == "info" and checks["judge"]["section"] == "provider"
    if shape == "nested":
        assert checks["row.snooze_info"]["detail"].startswith("in 24/24 rows (list), non-empty in 1;")
    else:  # no rows in the answer: the provider asks the per-test endpoint, as the hook does
        assert checks["per-test rows"]["detail"] == "found: list of 24, pw_test_id in 24, snooze_info in 0"


def test_snoozes_judged_from_the_rows_without_the_run_level_count(
    env_key: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = start_scripted(env_key, PARTLY_SNOOZED)
    body, run = real_answer(env_key, run_id)
    del run["failed_count_after_snoozing"]
    env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=body, times=-1)
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id))
    assert code == 0, out
    assert finding(out, "run.failed_count_after_snoozing") == "warn missing"
    assert finding(out, "snoozes") == "ok honoured: failures counted from the per-test rows' snooze_info"
    assert summary(out, "Provider verdict").endswith(
        "failures that count: 1 of 2 (basis: the per-test rows' snooze_info)"
    )


def test_failures_without_either_snooze_field_warn(
    env_key: Emulator, shape: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = start_scripted(env_key, PARTLY_SNOOZED)
    body, run = real_answer(env_key, run_id)
    del run["failed_count_after_snoozing"]
    for row in body["data"]["test_run"].get("flattenedSummaryDetails", []):
        del row["snooze_info"]
    env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=body, times=-1)
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id))
    assert code == 0, out  # the provider still works: it fails closed on every failure
    assert finding(out, "snoozes") == (
        "warn failures, but neither failed_count_after_snoozing nor snooze_info: "
        "the provider cannot honour snoozes (every failure counts)"
    )
    assert summary(out, "Provider verdict").startswith("failed: a task would fail, 2 test(s) failed")
    verdict = summary(out, "Verdict")
    assert verdict.startswith("OK: everything the provider needs was found (") and "snoozes" in verdict


def test_keys_the_provider_does_not_read_are_listed_and_named_in_the_verdict(
    env_key: Emulator, shape: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = start_scripted(env_key, PARTLY_SNOOZED)
    body, run = real_answer(env_key, run_id)
    run["shard_summary"] = {"total": 4}
    for row in body["data"]["test_run"].get("flattenedSummaryDetails", []):
        row["retries"] = 0
    env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=body, times=-1)
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id))
    assert code == 0, out
    ignored = "environment_name, environment_variables_overrides, metadata, rerun_source_id, shard_summary"
    assert finding(out, "run keys not read") == f"info {ignored}, tags, test_case_ids"
    assert (
        finding(out, "item keys not read")
        == "info environment_name, environment_variables_overrides, rerun_source_id"
    )
    run_keys = [f"run.{key}" for key in ignored.split(", ")] + ["run.tags", "run.test_case_ids"]
    row_keys = ["row.retries", "row.slug"] if shape == "nested" else []
    if shape == "nested":
        assert finding(out, "row keys not read") == "info retries, slug"
    else:  # the per-test endpoint's rows carry only keys the provider reads
        assert finding(out, "row keys not read") == "info none"
    verdict = summary(out, "Verdict")
    unread = sorted(run_keys + row_keys)
    assert verdict.endswith(f"it does not read {len(unread)} key(s) of the answers: {', '.join(unread)}")
    assert verdict.startswith("OK: everything the provider needs was found")


def test_unknown_per_test_statuses_are_a_mismatch(
    env_key: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = start_scripted(env_key, PARTLY_SNOOZED)
    body, _ = real_answer(env_key, run_id)
    rows = body["data"]["test_run"]["flattenedSummaryDetails"]
    rows[0]["status"], rows[1]["status"] = "FAILURE", "Passed"  # case does not matter: Passed is known
    del rows[2]["status"]
    env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=body, times=-1)
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id))
    assert code == 1, out
    assert finding(out, "unknown per-test statuses") == (
        "MISSING 'FAILURE' in 1 row(s), 'missing' in 1 row(s): "
        "the provider fails closed on a finished run with them"
    )
    assert finding(out, "row statuses") == "info FAILURE 1, Passed 1, missing 1, passed 21"
    assert summary(out, "Provider verdict").startswith(
        "unreadable: a task would fail, its result cannot be read (fail closed) "
        "(cannot read: per-test status 'FAILURE', 'missing')"
    )
    assert summary(out, "Verdict").startswith("MISMATCH: required unknown per-test statuses, judge missing")


def test_a_run_still_going_is_not_judged(
    env_key: Emulator, shape: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run_id = start_scripted(env_key, RunScript(queued_for=0, run_for=0, outcome="never"))
    code, out, _ = probe(capsys, caplog, "--run-id", str(run_id))
    assert code == 0, out
    assert summary(out, "Provider verdict") == (
        "not judged: the run is started, not finished (probe a finished one with --run-id)"
    )
    assert env_key.count("GET", "/api/v2/") == 0


# -- the documented samples are real reports -------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "contract-probe.md"
DOC_URL = "http://127.0.0.1:8123"


def doc_samples() -> list[str]:
    """The fenced blocks of the doc's sample output section, in order."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Sample output", 1)[1].split("\n## ", 1)[0]
    return [block.strip("\n") for block in section.split("```")[1::2]]


@pytest.mark.parametrize(
    ("sample", "answer_shape", "scenario"),
    [
        (0, "nested", "as served"),
        (1, "flat", "as served"),
        (2, "nested", "no snooze fields"),
        (3, "nested", "no run"),
    ],
)
def test_the_documented_samples_are_what_the_probe_prints(
    env_key: Emulator,
    sample: int,
    answer_shape: str,
    scenario: str,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/contract-probe.md shows real reports: the first whole, the others as excerpts whose
    lines (between `...`) appear in this order in the report of the same scenario."""
    env_key.set_shape(answer_shape)
    start_scripted(env_key, RunScript(queued_for=0, run_for=0))
    run_id = start_scripted(env_key, PARTLY_SNOOZED)
    if scenario == "no snooze fields":
        body, run = real_answer(env_key, run_id)
        del run["failed_count_after_snoozing"]
        for row in body["data"]["test_run"]["flattenedSummaryDetails"]:
            del row["snooze_info"]
        env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=body, times=-1)
    elif scenario == "no run":
        body = {"data": {"run": {"id": run_id}}, "meta": {}}
        env_key.add_fault(path=f"/api/test-runs/{run_id}", status=200, body=body, times=-1)
    _, out, _ = probe(capsys, caplog)
    out = out.replace(env_key.url, DOC_URL).rstrip("\n")
    documented = doc_samples()[sample]
    if sample == 0:
        assert documented == out
        return
    lines = out.splitlines()
    at = 0
    for line in (each for each in documented.splitlines() if each != "  ..."):
        assert line in lines[at:], f"documented line {line!r} is not in the report (in order):\n{out}"
        at = lines.index(line, at) + 1


# -- the key and control characters in server text (issue 20.17 and 20.18) ------------------------

# A key with the two characters JSON escapes, so its JSON-escaped form differs from the raw one;
# its backslash and `n` are also what escaping a newline writes, so a text holding the key with a
# real newline there becomes the key once escaped (after the redaction looked for it).
ODD_KEY = 'emp-probe"Qz7\\n9d3e71-Xw'
ODD_FORMS = (ODD_KEY, json.dumps(ODD_KEY)[1:-1])
UNESCAPED = ODD_KEY.replace("\\n", "\n")
FORGED = "\nMarking task as SUCCESS\x1b[2J"


def key_leaks(text: str) -> list[str]:
    """Every run of 8 consecutive characters of any form of the odd key found in `text`."""
    return [form[i : i + 8] for form in ODD_FORMS for i in range(len(form) - 7) if form[i : i + 8] in text]


def hostile_answers(run_id: int) -> tuple[dict[str, object], dict[str, object]]:
    """A list and a run answer that put the key (raw, JSON-escaped, after padding that a cut would
    keep) and forged lines into key names, states, statuses, slugs and snooze_info keys."""
    raw, escaped = ODD_FORMS
    pad = "p" * 12
    hostile_keys = {pad + raw: 1, pad + escaped: 2, "k" + FORGED: 3, pad * 2 + UNESCAPED: 4}
    item = {"id": run_id, "state": pad + raw, "total_count": 1, **hostile_keys}
    listed = {
        "data": {
            "test_runs": {
                "items": [item, {**item, "state": pad + escaped}, {**item, "state": pad + UNESCAPED}]
            },
            "project": {"slug": raw},
        },
        "pagination": {"total_pages": 1},
        pad + raw: None,
    }
    row = {"name": "t", "pw_test_id": "a", "status": pad + raw, "snooze_info": [hostile_keys], **hostile_keys}
    run = {
        "id": run_id,
        "state": "s" + FORGED + escaped,
        "failed_count": 1,
        "project": {"slug": pad + escaped},
        **hostile_keys,
    }
    rows = [row, {**row, "status": "x" + FORGED}, {**row, "status": pad + UNESCAPED}]
    answer = {"data": {"test_run": {"testRun": run, "flattenedSummaryDetails": rows, **hostile_keys}}}
    return listed, answer


def no_control_characters(value: object) -> bool:
    """No string in a parsed JSON report holds a control character."""
    if isinstance(value, str):
        return not any(unicodedata.category(char) == "Cc" for char in value)
    if isinstance(value, dict):
        return all(no_control_characters(k) and no_control_characters(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_control_characters(item) for item in value)
    return True


def test_the_key_and_control_characters_never_reach_the_report(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Server text is redacted first, then escaped, then cut: a cut key is no longer found by the
    redaction, so cutting first printed most of it (and newlines forged report lines)."""
    monkeypatch.setenv("EMPIRICAL_API_KEY", ODD_KEY)
    monkeypatch.setenv("EMPIRICAL_API_URL", emulator.url)
    listed, answer = hostile_answers(7)
    emulator.add_fault(path="/api/test-runs", status=200, body=listed, times=-1)
    emulator.add_fault(path="/api/test-runs/7", status=200, body=answer, times=-1)
    emulator.add_fault(path="/api/v2/test-runs/7/cases", status=200, body={"data": []}, times=-1)
    code, text, err = probe(capsys, caplog)
    code_json, out_json, _ = probe(capsys, caplog, "--json")
    assert code == code_json == 1, text  # the statuses are unknown: a mismatch
    assert key_leaks(text + err + caplog.text) == [] and key_leaks(out_json) == []
    assert "***" in text  # the key was there, and replaced
    for line in text.splitlines():
        assert not line.startswith("Marking task"), line
        assert no_control_characters(line), repr(line)
    assert "Marking task as SUCCESS\\x1b[2J" in text  # escaped, on the line it belongs to
    assert no_control_characters(json.loads(out_json))
