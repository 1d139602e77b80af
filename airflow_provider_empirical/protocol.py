"""The Empirical HTTP protocol without I/O: what to send, how to read an answer, when to retry.

Everything here works on plain values (a `Call`, a status, headers, body bytes, clock readings),
the way httpx's auth flow or h11 do, so it is tested in milliseconds and shared by the two
drivers that do the I/O: `http_sync` (httpx, for workers) and `http_async` (aiohttp, for the
triggerer). A driver only sends, reads (at most `MAX_BODY_BYTES`), sleeps, and turns its
library's exceptions into `transport_failure(...)`; every decision is made here, once.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.errors import (
    EmpiricalAuthError,
    EmpiricalContractError,
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalRateLimitError,
    EmpiricalServerError,
    EmpiricalTransportError,
    EmpiricalValidationError,
)

log = logging.getLogger("airflow_provider_empirical.client")

TEST_RUNS_PATH = "/api/test-runs"
MAX_RETRY_AFTER = 300.0  # never wait longer than this on a server's word
_ABSURD_RETRY_AFTER = 86_400.0  # a hint beyond a day (or a date more than a day ago) is garbage
MAX_BODY_BYTES = 4 * 1024 * 1024  # decoded; a run's status is ~1 KB, a page of 100 runs ~100 KB
MAX_CONNECT_TIMEOUT = 10.0
_MESSAGE_CHARS = 300  # server text kept in an error message (after redaction)


@dataclass(frozen=True)
class Call:
    """One API request, as plain values.

    `repeatable` says whether sending it twice is harmless; by default only GETs are. The
    trigger PUT and the re-run POST are not (Empirical has no idempotency key); a cancel is.
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    body: Mapping[str, Any] | None = None
    repeatable: bool | None = field(default=None, kw_only=True)

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def idempotent(self) -> bool:
        return self.repeatable if self.repeatable is not None else self.method == "GET"

    def url(self, config: ApiConfig) -> str:
        return config.base_url + self.path

    def query(self) -> tuple[tuple[str, str], ...]:
        """Query parameters as strings, the same for both drivers (booleans as true/false)."""
        items: list[tuple[str, str]] = []
        for key, value in (self.params or {}).items():
            if value is None:
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            items.append((str(key), text))
        return tuple(items)

    def content(self) -> bytes | None:
        """The JSON body as bytes (sent with Content-Type: application/json), or None."""
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, honouring Retry-After, never past a deadline."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(
        self, call: Call, error: EmpiricalError, attempt: int, *, remaining: float | None = None
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when `error` is final.

        `remaining` is the time left before the caller's deadline: a pause that would reach it
        is not taken (the error is final instead), so backoff never overruns a wait.
        """
        if attempt >= self.attempts or not error.transient or getattr(error, "permanent", False):
            return None
        if not (call.idempotent or error.rejected):
            return None  # the server may have acted: never send a second trigger
        hint = error.retry_after
        if hint is not None and math.isfinite(hint) and hint >= 0:
            pause = min(hint, MAX_RETRY_AFTER)
        else:
            ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
            pause = ceiling / 2 + random.uniform(0, ceiling / 2)
        if remaining is not None and pause >= remaining:
            return None
        return pause


_DELAY_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a Retry-After header asks for, or None when it gives no usable hint.

    Accepts delay-seconds and HTTP dates. Garbage, NaN, infinities, negative numbers and absurd
    dates (over a day away, or over a day ago) are no hint: the caller falls back to its own
    backoff. A usable hint is capped at `MAX_RETRY_AFTER`; a recent past date means now.
    """
    if not value:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
            seconds = when.timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError, OSError):
            return None
    if not math.isfinite(seconds) or not -_ABSURD_RETRY_AFTER <= seconds <= _ABSURD_RETRY_AFTER:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def request_budget(config: ApiConfig, deadline: float | None, now: float) -> float:
    """The total time one attempt may take: the connection's timeout, cut at `deadline` (epoch s)."""
    budget = config.timeout if deadline is None else min(config.timeout, deadline - now)
    return budget


def connect_timeout(budget: float) -> float:
    return min(budget, MAX_CONNECT_TIMEOUT)


def deadline_passed(call: Call, config: ApiConfig) -> EmpiricalTransportError:
    """The caller's deadline left no time to send `call` (so it was not sent)."""
    return EmpiricalTransportError(
        f"Empirical API {call.endpoint} at {config.base_url} was not sent: the deadline had passed",
        sent=False,
        endpoint=call.endpoint,
    )


def _clip(text: str, config: ApiConfig, limit: int = _MESSAGE_CHARS) -> str:
    """Server text made safe for a message: the key removed FIRST, then cut to `limit`."""
    return config.redact(text)[:limit]


def _server_message(body: bytes) -> str:
    """The server's own words, from whichever error shape it used (not yet redacted)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if isinstance(payload, dict):
        for key in ("error", "message", "detail", "errors"):
            value = payload.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value
            if value:
                return str(value)
    return str(payload)


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in headers.items()}


_STATUS_ERRORS: dict[int, type[EmpiricalError]] = {
    400: EmpiricalValidationError,
    401: EmpiricalAuthError,
    403: EmpiricalAuthError,
    404: EmpiricalNotFoundError,
    408: EmpiricalServerError,  # transient; for a PUT it is ambiguous (the server may have acted)
    422: EmpiricalValidationError,
    429: EmpiricalRateLimitError,
}

_HINTS = {
    401: "check the API key in the Airflow connection",
    403: "the API key cannot access this project: check the key and the connection's project_id",
    404: "check the test run id and that the key belongs to the run's project",
    408: "the server timed out waiting for the request",
    429: "rate limited by Empirical",
}

_REASONS = {400: "Bad Request", 408: "Request Timeout", 500: "Internal Server Error", 502: "Bad Gateway"}


def parse_response(
    call: Call,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    config: ApiConfig,
    *,
    truncated: bool = False,
    now: float | None = None,
) -> Any:
    """Return the parsed JSON of a 2xx answer, or raise the matching EmpiricalError.

    `truncated` says the driver stopped reading at `MAX_BODY_BYTES`. Every text taken from
    the answer (error bodies, a non-JSON success body, a redirect's Location) is redacted with
    `config.redact` before it is cut to length, so no part of an echoed key survives the cut.
    """
    where = f"Empirical API {call.endpoint} answered HTTP {status}"
    if 200 <= status < 300:
        if truncated or len(body) > MAX_BODY_BYTES:
            raise EmpiricalContractError(
                f"{where} with a body larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB (decoded); "
                "not read further",
                status=status,
                endpoint=call.endpoint,
            )
        if status == 204 and not body:
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            snippet = body.decode("utf-8", errors="replace")
            raise EmpiricalContractError(
                f"{where} with a body that is not JSON: {_clip(snippet, config, 200)!r}",
                status=status,
                endpoint=call.endpoint,
            ) from None
    lowered = _lowered(headers)
    if 300 <= status < 400:
        location = _clip(lowered.get("location", "?"), config, 200)
        raise EmpiricalError(
            f"{where}, a redirect to {location!r}; redirects are not followed so the key never "
            "reaches another host: set the connection's API URL to the final address",
            status=status,
            endpoint=call.endpoint,
        )
    cls = _STATUS_ERRORS.get(status, EmpiricalServerError if status >= 500 else EmpiricalError)
    hint = _HINTS.get(status)
    detail = _clip(_server_message(body), config) or _REASONS.get(status, "no detail")
    raise cls(
        f"Empirical API {call.endpoint} failed with HTTP {status}: {detail}" + (f" ({hint})" if hint else ""),
        status=status,
        endpoint=call.endpoint,
        retry_after=parse_retry_after(lowered.get("retry-after"), time.time() if now is None else now),
    )


PERMANENT_HINTS = {
    "tls": "the server's TLS certificate does not verify; for a private CA set SSL_CERT_FILE "
    "(or SSL_CERT_DIR) in the environment of the worker and the triggerer",
    "dns": "the API host name does not resolve: check the connection's host",
}


def transport_failure(
    call: Call,
    config: ApiConfig,
    kind: str,
    detail: str,
    *,
    sent: bool,
    permanent: str | None = None,
) -> EmpiricalTransportError:
    """An attempt without an HTTP answer, as classified by a driver.

    `sent` is False when the request surely never reached the server (connect phase).
    `permanent` names a failure retrying will not fix ("tls", "dns"); such errors are not
    retried, and the message says what to change.
    """
    hint = f" ({PERMANENT_HINTS[permanent]})" if permanent else ""
    error = EmpiricalTransportError(
        f"Empirical API {call.endpoint} at {config.base_url} failed: {kind}: "
        f"{_clip(detail, config) or 'no detail'}{hint}",
        sent=sent,
        permanent=permanent is not None,
        endpoint=call.endpoint,
    )
    return error


def total_timeout(call: Call, config: ApiConfig, budget: float) -> EmpiricalTransportError:
    """The whole attempt (connect, send, headers and body) did not finish within `budget`."""
    return transport_failure(
        call,
        config,
        "Timeout",
        f"no complete answer within {budget:.1f} s (total request deadline)",
        sent=True,
    )


def ambiguous(call: Call, error: EmpiricalError) -> EmpiricalError:
    """Mark a failed non-repeatable call (trigger, re-run) that may have created a run.

    Only a definite rejection is safe: a transient error the server surely refused (429, 503,
    connect failure), or a 4xx other than 408/429. Anything else (5xx, timeouts, dropped
    connections, a 2xx we cannot read) may have started a run.
    """
    if call.idempotent or not (error.contract or (error.transient and not error.rejected)):
        return error
    error.may_have_created_run = True
    error.message = error.args[0] + (
        ". The request may have reached Empirical, so a test run may have been created; it was NOT "
        "retried, to avoid a duplicate. Look for it in the Empirical dashboard or with "
        "EmpiricalHook.list_test_runs() before re-running this task."
    )
    error.args = (error.message,)
    return error


def next_pause(
    retry: RetryPolicy, call: Call, error: EmpiricalError, attempt: int, deadline: float | None, now: float
) -> float:
    """Seconds a driver sleeps before its next attempt; raises `error` (marked) when it is final."""
    delay = retry.delay(call, error, attempt, remaining=None if deadline is None else deadline - now)
    if delay is None:
        raise ambiguous(call, error)
    log.warning("%s; attempt %d of %d, retrying in %.1f s", error.message, attempt, retry.attempts, delay)
    return delay
