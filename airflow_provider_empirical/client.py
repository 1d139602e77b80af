"""The HTTP layer of the provider: one I/O-free protocol, two thin drivers.

- `protocol`: what to send (`Call`), how to read any answer (`parse_response` on plain status,
  headers and bytes), when to retry (`RetryPolicy`), error mapping and redaction. No I/O.
- `http_sync`: `EmpiricalClient`, the protocol over httpx (workers: operator, sensor poke).
- `http_async`: `AsyncEmpiricalClient` and `shared_async_client`, the protocol over one shared
  aiohttp session per event loop (triggerer). aiohttp is imported only when a session is made.

This module only gathers the names the hook uses, so imports stay stable.
"""

from __future__ import annotations

from airflow_provider_empirical.http_async import AsyncEmpiricalClient, _shared, shared_async_client
from airflow_provider_empirical.http_sync import EmpiricalClient
from airflow_provider_empirical.protocol import (
    MAX_BODY_BYTES,
    MAX_RETRY_AFTER,
    TEST_RUNS_PATH,
    Call,
    RetryPolicy,
    parse_response,
    parse_retry_after,
)

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_RETRY_AFTER",
    "TEST_RUNS_PATH",
    "AsyncEmpiricalClient",
    "Call",
    "EmpiricalClient",
    "RetryPolicy",
    "_shared",
    "parse_response",
    "parse_retry_after",
    "shared_async_client",
]
