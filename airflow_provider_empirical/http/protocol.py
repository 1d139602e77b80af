"""The Empirical HTTP protocol without I/O: what to send, how to read an answer, when to retry.

Everything here works on plain values (a `Call`, a status, headers, body bytes, clock readings),
the way httpx's auth flow or h11 do, so it is tested in milliseconds and shared by the two
drivers that do the I/O: `sync` (httpx, for workers) and `aio` (aiohttp, for the triggerer).
A driver only connects, sends, feeds the raw body to a `BodyReader`, sleeps, and turns its
library's exceptions into `transport_failure(...)`; every decision is made here, once. It
imports neither Airflow nor an HTTP library.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import random
import re
import ssl
import time
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_empirical.api.errors import (
    EmpiricalAuthError,
    EmpiricalContractError,
    EmpiricalError,
    EmpiricalNotFoundError,
    EmpiricalRateLimitError,
    EmpiricalServerError,
    EmpiricalTransportError,
    EmpiricalValidationError,
)
from airflow_provider_empirical.config import ApiConfig, is_loopback

log = logging.getLogger("airflow_provider_empirical.http")

MAX_RETRY_AFTER = 300.0  # never wait longer than this on a server's word
_ABSURD_RETRY_AFTER = 86_400.0  # a hint beyond a day (or a date more than a day ago) is garbage
MAX_BODY_BYTES = 4 * 1024 * 1024  # decoded; a run's status is ~1 KB, a page of 100 runs ~100 KB
MAX_CONNECT_TIMEOUT = 10.0
_MESSAGE_CHARS = 300  # server text kept in an error message (after redaction)


@dataclass(frozen=True)
class Call:
    """One API request, as plain values.

    `repeatable` says whether sending it twice is harmless; by default only GETs are. The
    trigger PUT, the re-run POST and the snooze POST are not (Empirical has no idempotency
    key); a cancel is.
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    body: Mapping[str, Any] | None = None
    repeatable: bool | None = field(default=None, kw_only=True)
    creates: str | None = field(default=None, kw_only=True)  # what it creates ("test run"), for messages

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
        if attempt >= self.attempts or not error.transient or error.permanent:
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
    undecodable: str | None = None,
    now: float | None = None,
) -> Any:
    """Return the parsed JSON of a 2xx answer, or raise the matching EmpiricalError.

    `truncated` says the driver stopped reading at `MAX_BODY_BYTES`. Every text taken from
    the answer (error bodies, a non-JSON success body, a redirect's Location) goes through
    `config.clean` (key removed first, control characters escaped, then cut to length), so no
    part of an echoed key survives the cut and no server text forges a log line.
    """
    where = f"Empirical API {call.endpoint} answered HTTP {status}"
    if undecodable and 200 <= status < 300:
        raise EmpiricalContractError(f"{where} but {undecodable}", status=status, endpoint=call.endpoint)
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
                f"{where} with a body that is not JSON: {config.clean(snippet, 200)!r}",
                status=status,
                endpoint=call.endpoint,
            ) from None
    lowered = _lowered(headers)
    if 300 <= status < 400:
        location = config.clean(lowered.get("location", "?"), 200)
        raise EmpiricalError(  # not `rejected`: a 303 may answer a request that was carried out
            f"{where}, a redirect to {location!r}; redirects are not followed so the key never "
            "reaches another host: set the connection's API URL to the final address",
            status=status,
            endpoint=call.endpoint,
        )
    cls = _STATUS_ERRORS.get(status, EmpiricalServerError if status >= 500 else EmpiricalError)
    hint = _HINTS.get(status)
    detail = config.clean(_server_message(body), _MESSAGE_CHARS) or _REASONS.get(status, "no detail")
    raise cls(
        f"Empirical API {call.endpoint} failed with HTTP {status}: {detail}" + (f" ({hint})" if hint else ""),
        status=status,
        endpoint=call.endpoint,
        retry_after=parse_retry_after(lowered.get("retry-after"), time.time() if now is None else now),
    )


PERMANENT_HINTS = {
    "tls": "the server's TLS certificate does not verify; for a private CA set the connection's "
    "ca_bundle (or SSL_CERT_FILE) on the worker and the triggerer",
    "tls-handshake": "the TLS handshake failed: check that the connection's API URL uses https only "
    "for a port that speaks TLS",
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
    `permanent` names a failure retrying will not fix ("tls", "tls-handshake", "dns"); such
    errors are not retried, and the message says what to change.
    """
    hint = f" ({PERMANENT_HINTS[permanent]})" if permanent else ""
    return EmpiricalTransportError(
        f"Empirical API {call.endpoint} at {config.base_url} failed: {kind}: "
        f"{config.clean(detail, _MESSAGE_CHARS) or 'no detail'}{hint}",
        sent=sent,
        permanent=permanent is not None,
        endpoint=call.endpoint,
    )


def permanent_tls(error: ssl.SSLError) -> str:
    """Which permanent TLS failure an `ssl.SSLError` is: a certificate, or a broken handshake."""
    return "tls" if isinstance(error, ssl.SSLCertVerificationError) else "tls-handshake"


def total_timeout(call: Call, config: ApiConfig, budget: float) -> EmpiricalTransportError:
    """The whole attempt (connect, send, headers and body) did not finish within `budget`."""
    return transport_failure(
        call,
        config,
        "Timeout",
        f"no complete answer within {budget:.1f} s (total request deadline)",
        sent=True,
    )


def mark_uncertain(call: Call, error: EmpiricalError) -> EmpiricalError:
    """Flag the final error of a non-repeatable call (trigger, re-run, snooze) that may have acted.

    Only a definite rejection is safe (`error.rejected`: a 4xx other than 408, or a request that
    never left). Anything else (3xx, 5xx, timeouts, dropped connections, a 2xx we cannot read)
    may have created what the call asked for.
    """
    if not call.idempotent and not error.rejected:
        error.may_have_created_run = True
    return error


def next_pause(
    retry: RetryPolicy, call: Call, error: EmpiricalError, attempt: int, deadline: float | None, now: float
) -> float:
    """Seconds a driver sleeps before its next attempt; raises `error` (flagged) when it is final."""
    delay = retry.delay(call, error, attempt, remaining=None if deadline is None else deadline - now)
    if delay is None:
        raise mark_uncertain(call, error)
    log.warning("%s; attempt %d of %d, retrying in %.1f s", error.message, attempt, retry.attempts, delay)
    return delay


# -- reading a body: decoded here, capped while decoding ------------------------------------------

ACCEPT_ENCODING = "gzip, deflate"  # what both drivers ask for, and all `BodyReader` decodes


class BodyReader:
    """A response body fed raw (as it came off the wire) and decoded here, never beyond a cap.

    Both drivers read the raw bytes and feed them here, so a gzip bomb costs at most `limit`
    decoded bytes of memory whatever the compression ratio, and both decode alike.
    """

    def __init__(self, content_encoding: str | None, limit: int = MAX_BODY_BYTES) -> None:
        self.limit = limit
        self.truncated = False
        self.failed: str | None = None  # why the body could not be decoded
        self._chunks: list[bytes] = []
        self._size = 0
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        self._decoder: Any = None
        self._deflate = False
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            self.failed = f"Content-Encoding {content_encoding!r} was not asked for ({ACCEPT_ENCODING})"
        elif codings and codings[0] == "deflate":
            self._deflate = True  # zlib-wrapped as the RFC says, or raw as some servers send it
            self._decoder = zlib.decompressobj()
        elif codings:
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def done(self) -> bool:
        """Reading on is pointless: the cap was reached or the body cannot be decoded."""
        return self.truncated or self.failed is not None

    def feed(self, raw: bytes) -> None:
        if self.done or not raw:
            return
        if self._decoder is None:
            self._keep(raw)
            return
        data = raw
        try:
            while data and not self.done:
                room = self.limit - self._size
                piece = self._decoder.decompress(data, room + 1)
                self._keep(piece)
                data = self._decoder.unconsumed_tail
        except zlib.error as exc:
            if self._deflate and self._size == 0 and not self._chunks:
                self._deflate = False  # a raw deflate stream: start again without the zlib header
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                self.feed(raw)
            else:
                self.failed = f"the body could not be decoded ({exc})"

    def _keep(self, piece: bytes) -> None:
        if self._size + len(piece) > self.limit:
            self.truncated = True
            return
        self._size += len(piece)
        self._chunks.append(piece)

    def body(self) -> bytes:
        return b"".join(self._chunks)


# -- where requests go: proxies and trust, decided once for both drivers --------------------------


def env_proxy(base_url: str) -> str | None:
    """The proxy the environment sets for `base_url` (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), or None.

    A loopback host is never proxied: the key would cross the proxy, in clear text for http.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if not host or is_loopback(host) or urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all") or None


def ssl_context(config: ApiConfig) -> ssl.SSLContext:
    """The CAs both drivers trust: the connection's `ca_bundle`, else SSL_CERT_FILE / SSL_CERT_DIR,
    else the system's store together with certifi's (httpx alone would use only certifi's, aiohttp
    only the system's)."""
    if config.ca_bundle:
        return ssl.create_default_context(cafile=config.ca_bundle)
    cafile, capath = os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    except (ImportError, OSError):
        pass
    return context
