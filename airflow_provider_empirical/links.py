"""The "Empirical test run" button on a task: the run's dashboard page, read from XCom."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

DEFAULT_CONN_ID = "empirical_default"  # the hook's default_conn_name, without importing the hook
TEST_RUN_ID_KEY = "test_run_id"
TEST_RUN_URL_KEY = "test_run_url"
CONN_ID_KEY = "empirical_conn_id"  # which connection the task used (the UI plugin reads the run with it)


class EmpiricalTestRunLink(BaseOperatorLink):
    """Reads the URL the task pushed; never calls the API (the UI may ask at any time)."""

    name = "Empirical test run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        url = XCom.get_value(ti_key=ti_key, key=TEST_RUN_URL_KEY)
        return url if isinstance(url, str) else ""
