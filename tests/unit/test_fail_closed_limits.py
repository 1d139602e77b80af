"""Limits that fail closed before or while reading: a decoder that never holds more than its cap,
run ids too long to be ids, and `extra_body` keys that are known fields in another spelling.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from airflow_provider_empirical.emulator import Emulator
from airflow_provider_empirical.errors import EmpiricalValidationError
from airflow_provider_empirical.hooks.empirical import EmpiricalHook
from airflow_provider_empirical.operators.empirical import EmpiricalCancelTestRunOperator
from airflow_provider_empirical.sensors.empirical import EmpiricalTestRunSensor
from tests.fail_closed_servers import gzip_bomb

MiB = 1024 * 1024


def test_the_body_reader_holds_at_most_its_cap_of_a_gzip_bomb() -> None:
    """Fed a 256 MiB bomb in 64 KiB pieces, as a driver reads it: decoding stops at the cap, and
    memory never holds much more than it (issue 20.19)."""
    from airflow_provider_empirical.http.protocol import MAX_BODY_BYTES, BodyReader

    bomb = gzip_bomb(256)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        reader = BodyReader("gzip")
        fed = 0
        while fed < len(bomb) and not reader.done:
            reader.feed(bomb[fed : fed + 65536])
            fed += 65536
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reader.truncated and len(reader.body()) <= MAX_BODY_BYTES
    assert fed < len(bomb)  # it stopped reading once the cap was reached
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"  # ~8 MiB: the cap, and zlib's output buffer


class _TI:
    dag_id, run_id, task_id, try_number = "d", "r", "t", 1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


HUGE_IDS = {"int": 10**5000, "negative int": -(10**5000), "digit string": "9" * 5000}
ASKS = {
    "hook get": lambda run_id: EmpiricalHook().get_test_run(run_id),
    "hook cancel": lambda run_id: EmpiricalHook().cancel_test_run(run_id),
    "sensor": lambda run_id: EmpiricalTestRunSensor(task_id="s", test_run_id=run_id).poke({"ti": _TI()}),
    "cancel operator": lambda run_id: EmpiricalCancelTestRunOperator(task_id="c", test_run_id=run_id).execute(
        {"ti": _TI()}
    ),
}


@pytest.mark.parametrize("ask", sorted(ASKS))
@pytest.mark.parametrize("kind", sorted(HUGE_IDS))
def test_a_5000_digit_run_id_is_refused_naming_test_run_id_before_any_request(
    empirical_conn: Emulator, ask: str, kind: str
) -> None:
    """Python refuses to write an int of more than 4,300 digits: that must not surface as a bare
    ValueError, but as the field's own error (issue 20.20)."""
    with pytest.raises(EmpiricalValidationError) as info:
        ASKS[ask](HUGE_IDS[kind])
    assert info.value.field == "test_run_id"
    assert empirical_conn.count() == 0


@pytest.mark.parametrize(
    ("key", "value", "known"),
    [
        ("Tags", ["@smoke"], "tags"),
        (" tags ", ["@smoke"], "tags"),
        ("test-case-ids", ["a30a1b2c-55e2"], "test_case_ids"),
        ("TOTAL_SHARDS", 2, "total_shards"),
        ("Environment", "staging", "environment"),
        ("rerun.only.failed", True, "rerun_only_failed"),
    ],
)
def test_extra_body_refuses_a_known_field_in_another_spelling(
    empirical_conn: Emulator, key: str, value: Any, known: str
) -> None:
    """A server that folds case, spaces or dashes would read these as the known field, bypassing
    its checks: one way to set each field, named in the error (issue 20.21)."""
    with pytest.raises(EmpiricalValidationError) as info:
        EmpiricalHook().trigger_test_run("production", extra_body={key: value})
    assert info.value.field == f"extra_body.{key}" and f"`{known}`" in str(info.value)
    assert empirical_conn.count() == 0
