"""The one HTTP core for the Empirical API, with a sync face and an async face.

Requests are described once (`Call`), answers are parsed and errors classified once
(`parse_response`, `transport_error`), and one `RetryPolicy` decides what is retried.
`EmpiricalClient` (httpx.Client) and `AsyncEmpiricalClient` (httpx.AsyncClient) differ only
in how they send and sleep. Nothing here imports Airflow, so it stays cheap and testable.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.errors import (
    EmpiricalAuthError,
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalRateLimitError,
    EmpiricalServerError,
    EmpiricalTransportError,
    EmpiricalValidationError,
)

log = logging.getLogger(__name__)

TEST_RUNS_PATH = "/api/test-runs"
_MAX_RETRY_AFTER = 300.0
# Requests in flight per async pool (event loop x connection). More would only queue inside
# httpcore, which rescans its queue and connections on every request start and finish:
# quadratic with a thousand waiting triggers. 8 keeps that scan cheap (bench figure 2: CPU per
# poll 0.56x dbt Cloud's at 4, 0.76x at 16) while still serving ~80 polls/s at 100 ms RTT.
ASYNC_CONCURRENCY = 8


@dataclass(frozen=True)
class Call:
    """One API request. Only GETs are idempotent; the trigger PUT is not."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    body: Mapping[str, Any] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter, honouring Retry-After."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, call: Call, error: EmpiricalError, attempt: int) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when `error` is final."""
        if attempt >= self.attempts or not error.transient:
            return None
        if not (call.idempotent or error.rejected):
            return None  # the server may have acted: never send a second trigger
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), _MAX_RETRY_AFTER)
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def _retry_after(value: str | None) -> float | None:
    """Parse Retry-After as seconds or as an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(response: httpx.Response) -> str:
    """The server's own words, from whichever error shape it used."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        for key in ("error", "message", "detail", "errors"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value
            if value:
                return str(value)[:300]
    return str(body)[:300]


_STATUS_ERRORS: dict[int, type[EmpiricalError]] = {
    400: EmpiricalValidationError,
    401: EmpiricalAuthError,
    403: EmpiricalAuthError,
    404: EmpiricalNotFoundError,
    422: EmpiricalValidationError,
    429: EmpiricalRateLimitError,
}

_HINTS = {
    401: "check the API key in the Airflow connection",
    403: "the API key cannot access this project: check the key and the connection's project_id",
    404: "check the test run id and that the key belongs to the run's project",
    429: "rate limited by Empirical",
}


def parse_response(call: Call, response: httpx.Response, config: ApiConfig) -> Any:
    """Return the JSON body of a 2xx answer, or raise the matching EmpiricalError."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            return response.json()
        except ValueError:
            raise EmpiricalServerError(
                f"Empirical API {call.endpoint} returned HTTP {status} with a body that is not JSON: "
                f"{config.redact(response.text[:200])!r}",
                status=status,
                endpoint=call.endpoint,
            ) from None
    if 300 <= status < 400:
        raise EmpiricalError(
            f"Empirical API {call.endpoint} answered HTTP {status}, a redirect to "
            f"{response.headers.get('location', '?')!r}; redirects are not followed so the key "
            "never reaches another host: set the connection's API URL to the final address",
            status=status,
            endpoint=call.endpoint,
        )
    cls = _STATUS_ERRORS.get(status, EmpiricalServerError if status >= 500 else EmpiricalError)
    hint = _HINTS.get(status)
    message = (
        f"Empirical API {call.endpoint} failed with HTTP {status}: "
        f"{config.redact(_server_message(response)) or response.reason_phrase}"
        + (f" ({hint})" if hint else "")
    )
    raise cls(
        message,
        status=status,
        endpoint=call.endpoint,
        retry_after=_retry_after(response.headers.get("retry-after")),
    )


def transport_error(call: Call, exc: httpx.TransportError, config: ApiConfig) -> EmpiricalTransportError:
    """Classify a failure without an HTTP answer; connect-phase failures never reached the server."""
    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    kind = type(exc).__name__
    detail = config.redact(str(exc)) or "no detail"
    return EmpiricalTransportError(
        f"Empirical API {call.endpoint} at {config.base_url} failed: {kind}: {detail}",
        sent=sent,
        endpoint=call.endpoint,
    )


def _ambiguous(call: Call, error: EmpiricalError) -> EmpiricalError:
    """Mark a trigger that may have created a run, and say how to find it."""
    if call.idempotent or not error.transient or error.rejected:
        return error
    error.may_have_created_run = True
    error.message = error.args[0] + (
        ". The request may have reached Empirical, so a test run may have been created; it was NOT "
        "retried, to avoid a duplicate. Look for it in the Empirical dashboard or with "
        "EmpiricalHook.list_test_runs() before re-running this task."
    )
    error.args = (error.message,)
    return error


class _ClientBase:
    """What both faces share: configuration, request building, the retry decision."""

    def __init__(self, config: ApiConfig, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.config.base_url,
            "headers": self.config.headers(),
            "timeout": httpx.Timeout(self.config.timeout, connect=min(self.config.timeout, 10.0)),
            "follow_redirects": False,
            "trust_env": True,
        }

    def _backoff(self, call: Call, error: EmpiricalError, attempt: int) -> float:
        """Seconds to sleep before the next attempt; raises `error` when it is final."""
        delay = self.retry.delay(call, error, attempt)
        if delay is None:
            raise _ambiguous(call, error)
        log.warning(
            "%s; attempt %d of %d, retrying in %.1f s", error.message, attempt, self.retry.attempts, delay
        )
        return delay


class EmpiricalClient(_ClientBase):
    """Sync face: one pooled httpx.Client for the life of the hook."""

    def __init__(self, config: ApiConfig, retry: RetryPolicy | None = None, **httpx_kwargs: Any) -> None:
        super().__init__(config, retry)
        self._http = httpx.Client(**self._client_kwargs(), **httpx_kwargs)

    def request(self, call: Call) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    response = self._http.request(call.method, call.path, params=call.params, json=call.body)
                except httpx.TransportError as exc:
                    raise transport_error(call, exc, self.config) from None
                return parse_response(call, response, self.config)
            except EmpiricalError as error:
                delay = self._backoff(call, error, attempt)
            time.sleep(delay)

    def close(self) -> None:
        self._http.close()


class AsyncEmpiricalClient(_ClientBase):
    """Async face: the same calls over one pooled httpx.AsyncClient."""

    def __init__(self, config: ApiConfig, retry: RetryPolicy | None = None, **httpx_kwargs: Any) -> None:
        super().__init__(config, retry)
        limits = httpx.Limits(max_connections=ASYNC_CONCURRENCY, max_keepalive_connections=ASYNC_CONCURRENCY)
        self._http = httpx.AsyncClient(**self._client_kwargs(), limits=limits, **httpx_kwargs)
        self._gate = asyncio.Semaphore(ASYNC_CONCURRENCY)

    async def request(self, call: Call) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    async with self._gate:
                        response = await self._http.request(
                            call.method, call.path, params=call.params, json=call.body
                        )
                except httpx.TransportError as exc:
                    raise transport_error(call, exc, self.config) from None
                return parse_response(call, response, self.config)
            except EmpiricalError as error:
                delay = self._backoff(call, error, attempt)
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._http.aclose()


@dataclass
class _Shared:
    client: AsyncEmpiricalClient
    users: int = 0


# One connection pool per event loop and configuration, shared by every trigger that polls
# with it: a triggerer may hold a thousand triggers on the same connection.
_shared: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[ApiConfig, RetryPolicy], _Shared]
] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def shared_async_client(
    config: ApiConfig, retry: RetryPolicy | None = None
) -> AsyncIterator[AsyncEmpiricalClient]:
    """Borrow the event loop's client for `config`; the last borrower closes it."""
    key = (config, retry or RetryPolicy())
    clients = _shared.setdefault(asyncio.get_running_loop(), {})
    entry = clients.get(key)
    if entry is None:
        entry = clients[key] = _Shared(AsyncEmpiricalClient(config, key[1]))
    entry.users += 1
    try:
        yield entry.client
    finally:
        entry.users -= 1
        if entry.users == 0 and clients.get(key) is entry:
            del clients[key]
            await entry.client.aclose()
