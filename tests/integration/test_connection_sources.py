"""The connection works from each documented source: env var JSON (elsewhere) and a secrets backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from airflow_provider_empirical.emulator import Emulator
from tests.conftest import API_KEY, ROOT


def test_connection_from_a_secrets_backend(emulator: Emulator, tmp_path: Path) -> None:
    secrets = tmp_path / "connections.json"
    secrets.write_text(
        json.dumps(
            {
                "empirical_from_vault": {
                    "conn_type": "empirical",
                    "host": emulator.url,
                    "password": API_KEY,
                    "extra": {"project_id": 1},
                }
            }
        )
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    env.update(
        {
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps({"connections_file_path": str(secrets)}),
        }
    )
    code = (
        "from airflow_provider_empirical.hooks.empirical import EmpiricalHook; "
        "ok, message = EmpiricalHook('empirical_from_vault').test_connection(); print(ok, message)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert "True Connected to the Empirical API" in result.stdout, result.stdout + result.stderr[-2000:]
    (request,) = emulator.requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}" and request.headers["x-project-id"] == "1"
