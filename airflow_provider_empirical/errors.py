"""The exceptions users catch, all importable from here.

The family itself lives in `api.errors`, free of Airflow so that the HTTP core and the parsers
import no Airflow. One class must be an Airflow exception: `EmpiricalTriggerUncertainError`
is an `AirflowFailException`, so that Airflow does not retry a task whose trigger may have
started a run.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_empirical.api.errors import (
    EmpiricalAuthError,
    EmpiricalContractError,
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalRateLimitError,
    EmpiricalServerError,
    EmpiricalTestRunFailed,
    EmpiricalTransportError,
    EmpiricalValidationError,
)

__all__ = [
    "EmpiricalAuthError",
    "EmpiricalContractError",
    "EmpiricalError",
    "EmpiricalNotFoundError",
    "EmpiricalRateLimitError",
    "EmpiricalServerError",
    "EmpiricalTestRunFailed",
    "EmpiricalTransportError",
    "EmpiricalTriggerUncertainError",
    "EmpiricalValidationError",
]


class EmpiricalTriggerUncertainError(EmpiricalError, AirflowFailException):
    """A request that creates something (trigger, re-run) may have done so, but no answer says.

    An `AirflowFailException`: the task fails without Airflow's own retries, because a retry
    would send the request again and Empirical has no idempotency key (two runs, and the
    second one could pass while the first fails unseen).
    """

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.may_have_created_run = True
