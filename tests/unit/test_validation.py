"""Bad input: each case fails with an error naming the field, before any request is sent."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator
from airflow_provider_empirical.errors import EmpiricalValidationError
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.validation import trigger_request_body
from tests.conftest import conn_json

# (trigger kwargs, field named in the error)
BAD_TRIGGERS: list[tuple[dict[str, Any], str]] = [
    ({"environment": ""}, "environment"),
    ({"environment": "   "}, "environment"),
    ({"environment": None}, "environment"),
    ({"environment": 42}, "environment"),
    ({"build": {"url": "u"}, "branch": "main"}, "branch"),
    ({"build": "main"}, "build"),
    ({"build": {"sha": "abc"}}, "build"),
    ({"build": {"commit": None}}, "build.commit"),
    ({"metadata": ["a"]}, "metadata"),
    ({"metadata": {"nested": {"a": 1}}}, "metadata.nested"),
    ({"metadata": {"none": None}}, "metadata.none"),
    ({"metadata": {"flag": True}}, "metadata.flag"),
    ({"environment_variables_overrides": [{"value": "x"}]}, "environment_variables_overrides[0].name"),
    (
        {"environment_variables_overrides": [{"name": "A", "value": None}]},
        "environment_variables_overrides[0].value",
    ),
    ({"environment_variables_overrides": "BASE_URL=x"}, "environment_variables_overrides"),
    (
        {"environment_variables_overrides": [{"name": "A", "value": "1", "extra": 2}]},
        "environment_variables_overrides[0]",
    ),
    ({"tags": "@smoke"}, "tags"),
    ({"tags": ["@smoke", 3]}, "tags[1]"),
    ({"project_id": 0}, "project_id"),
    ({"project_id": -4}, "project_id"),
    ({"project_id": 1.5}, "project_id"),
    ({"project_id": True}, "project_id"),
    ({"total_shards": 0}, "total_shards"),
    ({"total_shards": "two"}, "total_shards"),
    ({"total_shards": 2.0}, "total_shards"),
    ({"rerun_source_id": -1}, "rerun_source_id"),
    ({"rerun_source_id": "None"}, "rerun_source_id"),
    ({"rerun_only_failed": True}, "rerun_only_failed"),
    ({"rerun_source_id": 1, "rerun_only_failed": "yes"}, "rerun_only_failed"),
    ({"send_notifications": "maybe"}, "send_notifications"),
    ({"github_actor": ""}, "github_actor"),
    ({"branch": 7}, "branch"),
    ({"test_case_ids": "a30a-55e2"}, "test_case_ids"),
    ({"test_case_ids": ["a30a-55e2", ""]}, "test_case_ids[1]"),
    ({"test_case_ids": [None]}, "test_case_ids[0]"),
    ({"metadata": {"ratio": float("nan")}}, "metadata.ratio"),
    ({"metadata": {"ratio": float("inf")}}, "metadata.ratio"),
    ({"total_shards": "³"}, "total_shards"),
    ({"project_id": "٣"}, "project_id"),
    ({"extra_body": ["x"]}, "extra_body"),
    ({"extra_body": {"tags": ["@smoke"]}}, "extra_body.tags"),
    ({"extra_body": {"new_field": float("nan")}}, "extra_body.new_field"),
    ({"extra_body": {"new_field": object()}}, "extra_body.new_field"),
]


@pytest.mark.parametrize(
    ("kwargs", "field"), BAD_TRIGGERS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_TRIGGERS)]
)
def test_bad_trigger_input_names_the_field_and_sends_nothing(
    empirical_conn: Emulator, kwargs: dict[str, Any], field: str
) -> None:
    kwargs = {"environment": "production", **kwargs}
    with pytest.raises(EmpiricalValidationError) as info:
        EmpiricalHook().trigger_test_run(**kwargs)
    assert info.value.field == field
    assert f"`{field}`" in str(info.value)
    assert empirical_conn.count() == 0


def test_secret_override_values_are_not_echoed() -> None:
    with pytest.raises(EmpiricalValidationError) as info:
        trigger_request_body(
            {
                "environment": "production",
                "environment_variables_overrides": [{"name": "TOKEN", "value": ["s3cr3t-value"]}],
            }
        )
    assert "s3cr3t-value" not in str(info.value)


def test_rendered_strings_are_converted() -> None:
    body = trigger_request_body(
        {
            "environment": "  production ",
            "total_shards": "3",
            "rerun_source_id": "12",
            "rerun_only_failed": "True",
            "send_notifications": "false",
            "environment_variables_overrides": {"PORT": 8080},
            "test_case_ids": [" a30a-55e2 "],
        }
    )
    assert body == {
        "environment": "production",
        "total_shards": 3,
        "rerun_source_id": 12,
        "rerun_only_failed": True,
        "send_notifications": False,
        "environment_variables_overrides": [{"name": "PORT", "value": "8080"}],
        "test_case_ids": ["a30a-55e2"],
    }


def test_extra_body_is_merged_after_the_known_fields_and_sent_as_given(empirical_conn: Emulator) -> None:
    run = EmpiricalHook().trigger_test_run(
        "production", tags=["@smoke"], extra_body={"new_api_field": {"x": [1, True]}}
    )
    (request,) = [r for r in empirical_conn.requests if r.method == "PUT"]
    assert request.json == {
        "environment": "production",
        "tags": ["@smoke"],
        "new_api_field": {"x": [1, True]},
    }
    assert run["id"] >= 1


@pytest.mark.parametrize("bad_id", [0, -1, "None", "abc", "", None, 1.5, True])
def test_bad_test_run_id_for_get(empirical_conn: Emulator, bad_id: Any) -> None:
    with pytest.raises(EmpiricalValidationError, match="`test_run_id`"):
        EmpiricalHook().get_test_run(bad_id)
    assert empirical_conn.count() == 0


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"password": None}, "no API key"),
        ({"password": "   "}, "no API key"),
        ({"host": "http://api.empirical.run"}, "clear text"),
        ({"extra": {"project_id": "zero"}}, "project_id"),
        ({"extra": {"project_id": 0}}, "project_id"),
        ({"extra": {"timeout": -3}}, "timeout"),
    ],
)
def test_bad_connections_fail_before_any_request(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, overrides: dict[str, Any], words: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator, **overrides))
    with pytest.raises(EmpiricalValidationError, match=words) as info:
        EmpiricalHook().get_test_run(1)
    assert "empirical_default" in str(info.value)
    assert emulator.count() == 0


def test_missing_connection_is_named(emulator: Emulator) -> None:
    with pytest.raises(Exception, match="no_such_conn"):
        EmpiricalHook("no_such_conn").get_test_run(1)
    assert emulator.count() == 0


def test_the_hook_refuses_a_field_the_api_does_not_have(empirical_conn: Emulator) -> None:
    with pytest.raises(EmpiricalValidationError, match="`colour` is not a field") as info:
        EmpiricalHook().trigger_test_run("production", colour="blue")
    assert info.value.field == "colour" and empirical_conn.count() == 0
