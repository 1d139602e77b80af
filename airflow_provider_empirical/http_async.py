"""The async driver: the protocol of `protocol.py` over one shared aiohttp.ClientSession (triggerer).

One session per event loop and (connection config, retry policy), shared by every trigger that
polls with it and closed by its last user (`shared_async_client`). aiohttp is imported only when
a session is made, never at DAG parse: the operator and sensor import this module through the
hook but never run it.

Session settings: `trust_env=True` (HTTP(S)_PROXY / NO_PROXY; the default SSL context also reads
SSL_CERT_FILE / SSL_CERT_DIR), no redirects, a total deadline per attempt
(`ClientTimeout(total=...)`, connect, send, headers and body), bodies read up to
`MAX_BODY_BYTES` decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.errors import EmpiricalError, EmpiricalTransportError
from airflow_provider_empirical.protocol import (
    MAX_BODY_BYTES,
    Call,
    RetryPolicy,
    connect_timeout,
    deadline_passed,
    next_pause,
    parse_response,
    request_budget,
    total_timeout,
    transport_failure,
)

if TYPE_CHECKING:
    import aiohttp

# Connections per shared session (event loop x connection). Measured with bench figure 2
# (1,000 triggers, 1 s poll, 100 ms round trip, TLS): see docs/performance.md.
ASYNC_CONNECTIONS = 256
_CHUNK = 64 * 1024


def _permanent(exc: BaseException) -> str | None:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "tls"
        if isinstance(cause, socket.gaierror) and cause.errno != socket.EAI_AGAIN:
            return "dns"
    return None


def _connect_timeouts() -> tuple[type[Exception], ...]:
    """aiohttp >= 3.10 says when a timeout hit the connect phase (the request was not sent)."""
    import aiohttp

    kind = getattr(aiohttp, "ConnectionTimeoutError", None)
    return (kind,) if kind is not None else ()


def transport_error(call: Call, exc: BaseException, config: ApiConfig) -> EmpiricalTransportError:
    """Classify an aiohttp failure: connect-phase failures never reached the server."""
    import aiohttp

    sent = not isinstance(exc, (aiohttp.ClientConnectorError, *_connect_timeouts()))
    permanent = _permanent(exc)
    return transport_failure(call, config, type(exc).__name__, str(exc), sent=sent, permanent=permanent)


class AsyncEmpiricalClient:
    """Async face: the same calls over one aiohttp.ClientSession, made on first use."""

    def __init__(self, config: ApiConfig, retry: RetryPolicy | None = None, **session_kwargs: Any) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self._session_kwargs = session_kwargs
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.config.headers(),
                connector=aiohttp.TCPConnector(limit=ASYNC_CONNECTIONS, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=self.config.timeout, sock_connect=connect_timeout(self.config.timeout)
                ),
                trust_env=True,
                **self._session_kwargs,
            )
        return self._session

    async def request(self, call: Call, *, deadline: float | None = None) -> Any:
        """Send `call`, retrying per the policy; `deadline` (epoch seconds) bounds everything."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(call, deadline)
            except EmpiricalError as error:
                pause = next_pause(self.retry, call, error, attempt, deadline, time.time())
            await asyncio.sleep(pause)

    async def _attempt(self, call: Call, deadline: float | None) -> Any:
        import aiohttp

        budget = request_budget(self.config, deadline, time.time())
        if budget <= 0:
            raise deadline_passed(call, self.config)
        session = self._open()
        chunks: list[bytes] = []
        size, truncated = 0, False
        try:
            async with session.request(
                call.method,
                call.url(self.config),
                params=call.query(),
                data=call.content(),
                headers={"Content-Type": "application/json"} if call.body is not None else None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=budget, sock_connect=connect_timeout(budget)),
            ) as response:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        truncated = True
                        break
                    chunks.append(chunk)
                status, headers = response.status, response.headers
        except _connect_timeouts() as exc:
            raise transport_error(call, exc, self.config) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise total_timeout(call, self.config, budget) from None
        except aiohttp.ClientError as exc:
            raise transport_error(call, exc, self.config) from None
        return parse_response(call, status, headers, b"".join(chunks), self.config, truncated=truncated)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


@dataclass
class _Shared:
    client: AsyncEmpiricalClient
    users: int = 0


# One session per event loop and configuration, shared by every trigger that polls with it:
# a triggerer may hold a thousand triggers on the same connection.
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
