"""The exceptions of the API layer, without Airflow: the HTTP core and the parsers raise these.

Each error says whether retrying could help (`transient`), whether retrying surely cannot
(`permanent`), whether the server surely did not act on the request (`rejected`), and whether
a 2xx answer did not match the contract (`contract`). The client retries a GET on any transient
error that is not permanent, but a request that creates something (the trigger PUT, the re-run
POST, a snooze POST) only when it was rejected: Empirical has no idempotency key, and a
duplicate test run is worse than a failed task.

Users import these from `airflow_provider_empirical.errors`, which adds the one class that
must be an Airflow exception (`EmpiricalTriggerUncertainError`).
"""

from __future__ import annotations


class EmpiricalError(Exception):
    """Base of all Empirical errors. Messages never contain the API key."""

    transient = False  # retrying could help
    permanent = False  # retrying will not help, however transient the failure looks (TLS, DNS)
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

    @property
    def rejected(self) -> bool:
        """The server surely did not act: a 4xx other than 408 (a timeout may come after the work).

        A 3xx, a 5xx (503 included: a gateway may answer it after the origin acted) and a 2xx we
        cannot read prove nothing.
        """
        return self.status is not None and 400 <= self.status < 500 and self.status != 408


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

    @property
    def rejected(self) -> bool:
        return True


class EmpiricalServerError(EmpiricalError):
    """5xx or 408: the server failed or timed out. Retried for requests that are safe to repeat."""

    transient = True


class EmpiricalContractError(EmpiricalError):
    """A 2xx answer this provider cannot understand: not JSON, or no run where one must be.

    Not retried by the HTTP layer: a wait tolerates a couple in a row (a truncated body can
    be a blip) and then ends, naming what it saw, instead of polling until its timeout.
    """

    contract = True


class EmpiricalTransportError(EmpiricalError):
    """No HTTP answer: connection refused, timeout, connection dropped, TLS or DNS failure.

    `sent` is False when the failure happened before the request could reach the server
    (connect errors, a deadline that left no time), which makes even a PUT safe to retry.
    `permanent` marks failures that retrying will not fix (a certificate that does not verify,
    a TLS handshake with something that does not speak TLS, a host name that does not resolve).
    """

    transient = True

    def __init__(self, message: str, *, sent: bool, permanent: bool = False, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.sent = sent
        self.permanent = permanent

    @property
    def rejected(self) -> bool:
        return not self.sent


class EmpiricalTestRunFailed(EmpiricalError):
    """The test run finished badly: failed tests, an error, a cancellation, or a timeout."""

    __test__ = False  # not a pytest test class
