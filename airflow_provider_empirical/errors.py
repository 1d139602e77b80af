"""One exception family for everything that can go wrong talking to Empirical.

Each error says whether retrying could help (`transient`) and whether the server surely
did not act on the request (`rejected`): the client retries a GET on any transient error,
but a trigger PUT only when it was rejected, because Empirical has no idempotency key and
a duplicate test run is worse than a failed task.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class EmpiricalError(AirflowException):
    """Base of all Empirical errors. Messages never contain the API key."""

    transient = False
    rejected = False
    contract = False  # a 2xx answer that does not match the API contract

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = message  # what went wrong, without advice a caller may word differently
        self.status = status
        self.endpoint = endpoint
        self.retry_after = retry_after
        self.may_have_created_run = False


class EmpiricalValidationError(EmpiricalError, ValueError):
    """Bad input: rejected locally before any request (status None), or by the API (400/422)."""

    def __init__(self, message: str, *, field: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.field = field


class EmpiricalAuthError(EmpiricalError):
    """401/403: the API key is wrong, revoked, or not allowed to see this project."""


class EmpiricalNotFoundError(EmpiricalError):
    """404: the test run does not exist or belongs to another project."""


class EmpiricalRateLimitError(EmpiricalError):
    """429: the server refused the request; safe to retry after `retry_after` seconds."""

    transient = True
    rejected = True


class EmpiricalServerError(EmpiricalError):
    """5xx, or a 2xx body that is not the JSON we expect. Only 503 proves nothing was done."""

    transient = True

    @property
    def rejected(self) -> bool:  # type: ignore[override]
        return self.status == 503


class EmpiricalContractError(EmpiricalError):
    """A 2xx answer this provider cannot understand: not JSON, or no run where one must be.

    Not retried by the HTTP layer: a wait tolerates a couple in a row (a truncated body can
    be a blip) and then ends, naming what it saw, instead of polling until its timeout.
    """

    contract = True


class EmpiricalTransportError(EmpiricalError):
    """No HTTP answer: connection refused, timeout, connection dropped.

    `sent` is False when the failure happened before the request could reach the server
    (connect errors and timeouts), which makes even a PUT safe to retry. `permanent` marks
    failures that retrying will not fix (a certificate that does not verify, a host name
    that does not resolve): a wait ends after a few of them in a row.
    """

    transient = True

    def __init__(self, message: str, *, sent: bool, permanent: bool = False, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.sent = sent
        self.permanent = permanent

    @property
    def rejected(self) -> bool:  # type: ignore[override]
        return not self.sent


class EmpiricalTriggerUncertainError(EmpiricalError, AirflowFailException):
    """A trigger (or re-run) request may have created a run, but no answer says which.

    An `AirflowFailException`: the task fails without Airflow's own retries, because a retry
    would send the request again and Empirical has no idempotency key (two runs, and the
    second one could pass while the first fails unseen).
    """


class EmpiricalTestRunFailed(EmpiricalError):
    """The test run finished badly: failed tests, an error, a cancellation, or a timeout."""

    __test__ = False  # not a pytest test class
