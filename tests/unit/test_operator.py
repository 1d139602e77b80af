"""The operator's contract without a DAG run: templated fields, validation before any request."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator
from airflow_provider_empirical.errors import EmpiricalValidationError
from airflow_provider_empirical.operators.empirical import EmpiricalTriggerTestRunOperator
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
from airflow_provider_empirical.validation import TRIGGER_FIELDS
from tests.unit.test_validation import BAD_TRIGGERS


def test_every_api_field_is_a_template_field_assigned_verbatim() -> None:
    raw = {name: "{{ params.x }}" for name in (*TRIGGER_FIELDS, "extra_body")}
    op = EmpiricalTriggerTestRunOperator(task_id="t", **raw)
    assert set(op.template_fields) == {
        *TRIGGER_FIELDS,
        "extra_body",
        "test_files",
        "test_names",
        "test_project",
        *op.policy_fields,
    }
    assert all(getattr(op, name) == "{{ params.x }}" for name in raw)


def test_the_explicit_signatures_agree_with_the_one_table_of_fields() -> None:
    import inspect

    operator_args = set(inspect.signature(EmpiricalTriggerTestRunOperator.__init__).parameters)
    assert set(TRIGGER_FIELDS) <= operator_args
    assert list(TRIGGER_FIELDS)[:6] == [
        "environment",
        "build",
        "branch",
        "metadata",
        "environment_variables_overrides",
        "tags",
    ]
    assert "test_case_ids" in TRIGGER_FIELDS
    assert EmpiricalTestRunSensor.template_fields == (
        "test_run_id",
        "environment",
        "branch",
        "created_after",
        "fail_on_test_failure",
        "fail_on_empty_run",
        "honor_snoozes",
        "max_failed_tests",
        "fail_on_flaky",
    )


@pytest.mark.parametrize(
    ("kwargs", "field"), BAD_TRIGGERS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_TRIGGERS)]
)
def test_operator_rejects_bad_input_before_any_request(
    empirical_conn: Emulator, kwargs: dict[str, Any], field: str
) -> None:
    op = EmpiricalTriggerTestRunOperator(task_id="t", **{"environment": "production", **kwargs})
    with pytest.raises(EmpiricalValidationError) as info:
        op.execute({})
    assert info.value.field == field
    assert empirical_conn.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"test_files": "checkout/"}, "test_files"),  # a string, not a list
        ({"test_files": ["checkout/", ""]}, "test_files[1]"),
        ({"test_names": [3]}, "test_names[0]"),
        ({"test_project": "chromium"}, "test_project"),  # narrows nothing
        ({"test_files": ["a/"], "test_project": " "}, "test_project"),
        ({"check_environment": "maybe"}, "check_environment"),
        ({"reuse_passed_run": True}, "build.commit"),  # only an exact build is reused
        ({"reuse_passed_run": True, "build": {"version": "v1"}}, "build.commit"),
        ({"reuse_passed_run": "yes", "build": {"commit": "c"}}, "reuse_passed_run"),
        ({"reuse_within": 0, "build": {"commit": "c"}}, "reuse_within"),
        ({"max_failed_tests": -1}, "max_failed_tests"),
        ({"max_failed_tests": "two"}, "max_failed_tests"),
        ({"max_failed_tests": True}, "max_failed_tests"),
        ({"max_failed_tests": 1.5}, "max_failed_tests"),
        ({"honor_snoozes": "perhaps"}, "honor_snoozes"),
        ({"fail_on_flaky": 1}, "fail_on_flaky"),
    ],
)
def test_choosing_and_policy_parameters_are_checked_before_any_request(
    empirical_conn: Emulator, kwargs: dict[str, Any], field: str
) -> None:
    op = EmpiricalTriggerTestRunOperator(task_id="t", environment="production", **kwargs)
    with pytest.raises(EmpiricalValidationError) as info:
        op.execute({})
    assert info.value.field == field and f"`{field}`" in str(info.value)
    assert empirical_conn.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poll_interval": -1}, "poll_interval"),
        ({"timeout": 0}, "timeout"),
        ({"poll_interval": "soon"}, "poll_interval"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": 0.2}, "poll_interval"),
        ({"timeout": float("inf")}, "timeout"),
    ],
)
def test_bad_wait_settings_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(EmpiricalValidationError, match=f"`{field}`"):
        EmpiricalTriggerTestRunOperator(task_id="t", environment="production", **kwargs)


@pytest.mark.parametrize("bad_id", ["None", "abc", "", "0", "-3", 1.5, True, None])
def test_sensor_rejects_bad_run_ids_before_any_request(empirical_conn: Emulator, bad_id: Any) -> None:
    sensor = EmpiricalTestRunSensor(task_id="s", test_run_id=bad_id)
    with pytest.raises(EmpiricalValidationError, match="`test_run_id`"):
        sensor.poke({})
    assert empirical_conn.count() == 0


def test_on_kill_cancels_its_run_once_and_names_the_task(empirical_conn: Emulator) -> None:
    from airflow_provider_empirical.hooks.empirical import EmpiricalHook

    run_id = EmpiricalHook().trigger_test_run("production")["id"]
    op = EmpiricalTriggerTestRunOperator(task_id="t", environment="production")
    op.on_kill()  # nothing triggered yet: nothing to cancel
    assert empirical_conn.count("POST") == 0
    op.waited_run_id = run_id
    op.on_kill()
    (cancel,) = [r for r in empirical_conn.requests if r.method == "POST"]
    assert cancel.path == f"/api/test-runs/{run_id}/cancel" and "t was killed" in cancel.json["reason"]


def test_on_kill_leaves_the_run_when_told(
    empirical_conn: Emulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    op = EmpiricalTriggerTestRunOperator(task_id="t", environment="production", cancel_on_kill=False)
    op.waited_run_id = 41
    op.on_kill()
    assert empirical_conn.count("POST") == 0
    out, err = capfd.readouterr()
    assert "test run 41 keeps going" in out + err + caplog.text
