"""Shared fixtures: a throwaway AIRFLOW_HOME (set before Airflow is imported) and the emulator.

Everything runs against real things: real Airflow, real HTTP over loopback to the
Empirical emulator. The API key is distinctive so leak checks can grep for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "emp-test-key-7f9c2a-do-not-leak"

# pytest imports this file as `conftest`, and test modules import it again as `tests.conftest`:
# the second import must reuse the first one's Airflow home, not make (and switch to) another.
_FIRST = next(
    (m for m in (sys.modules.get("conftest"), sys.modules.get("tests.conftest")) if hasattr(m, "_HOME")), None
)
_HOME: Path = _FIRST._HOME if _FIRST is not None else Path(tempfile.mkdtemp(prefix="empirical-airflow-home-"))
DAGS_FOLDER = _HOME / "dags"
if _FIRST is None:
    DAGS_FOLDER.mkdir()
    for source in [
        *sorted((ROOT / "example_dags").glob("*.py")),
        *sorted((ROOT / "tests" / "dags").glob("*.py")),
    ]:
        (DAGS_FOLDER / source.name).symlink_to(source)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_HOME / "logs"),
        "EMPIRICAL_POLL_INTERVAL": "1",  # read by the example DAGs at parse time
    }
)

from airflow_provider_empirical.emulator import Emulator  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


_E2E_SECONDS: list[float] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    started = time.monotonic()
    yield
    if item.get_closest_marker("e2e"):
        _E2E_SECONDS.append(time.monotonic() - started)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _E2E_SECONDS:
        terminalreporter.write_line(
            f"end-to-end DAG-run tests: {len(_E2E_SECONDS)} in {sum(_E2E_SECONDS):.1f} s wall time"
        )


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def _emulator() -> Iterator[Emulator]:
    emulator = Emulator(api_keys={API_KEY: 1, "other-project-key-1234": 2})
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(_emulator: Emulator) -> Iterator[Emulator]:
    """The emulator, reset before each test so request counts are per test."""
    _emulator.reset()
    yield _emulator
    _emulator.reset()


def conn_json(emulator: Emulator, **overrides: object) -> str:
    conn: dict[str, object] = {
        "conn_type": "empirical",
        "host": emulator.url,
        "password": API_KEY,
        "extra": {"dashboard_url": emulator.url},
    }
    conn.update(overrides)
    return json.dumps(conn)


@pytest.fixture
def empirical_conn(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """`empirical_default` pointing at the emulator through AIRFLOW_CONN_EMPIRICAL_DEFAULT."""
    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator))
    return emulator


# -- real DAG runs (dag.test()) against the emulator, shared by the end-to-end test modules --

QUICK = {"queued_for": 0.1, "run_for": 0.5}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from tests.airflow_helpers import load_dags  # imports Airflow: after the environment above is set

    bag = load_dags(str(DAGS_FOLDER))
    assert bag.import_errors == {}
    return bag


@pytest.fixture
def run_dag(dagbag: Any, empirical_conn: Emulator) -> Any:
    def run(dag_id: str, conf: dict[str, Any] | None = None) -> Any:
        _task_console_to_current_stdout()
        return dagbag.get_dag(dag_id).test(run_conf=conf)

    return run


def _task_console_to_current_stdout() -> None:
    """Airflow 2's dag.test() adds one StreamHandler(sys.stdout) to the task logger per process,
    bound to the stdout of the first test that ran a DAG: point it at this test's stdout so that
    capsys/capfd see the task logs (Airflow 3 prints to the current stdout anyway)."""
    for handler in logging.getLogger("airflow.task").handlers:
        if type(handler) is logging.StreamHandler:
            try:
                handler.setStream(sys.stdout)
            except ValueError:  # the old stream (an earlier test's capture) is closed
                handler.stream = sys.stdout
