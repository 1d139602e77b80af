"""The async driver: the protocol of `protocol.py` over one shared aiohttp.ClientSession (triggerer).

One session per event loop and (connection config, retry policy), shared by every trigger that
polls with it and closed by its last user (`shared_async_client`). aiohttp is imported only when
a session is made, never at DAG parse: the operator and sensor import this module through the
hook but never run it.

Session settings: the proxy from the environment (`protocol.env_proxy`, read once per session:
the API host never changes, and aiohttp's `trust_env=True` would look it and ~/.netrc up again
in a thread on every request, twice the CPU per poll); the CAs of `protocol.ssl_context`; no
redirects; a total deadline per attempt (`ClientTimeout(total=...)`: connect, send, headers and
body); bodies read raw and decoded by the core's `BodyReader` (capped while decoding).
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

from airflow_provider_empirical.api.errors import EmpiricalError, EmpiricalTransportError
from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.http.protocol import (
    BodyReader,
    Call,
    RetryPolicy,
    connect_timeout,
    deadline_passed,
    env_proxy,
    next_pause,
    parse_response,
    permanent_tls,
    request_budget,
    ssl_context,
    total_timeout,
    transport_failure,
)

if TYPE_CHECKING:
    import aiohttp

# Connections per shared session (event loop x connection), i.e. requests in flight; how this
# number was chosen is in docs/performance.md (figure 2).
ASYNC_CONNECTIONS = 256
_CHUNK = 64 * 1024


def _permanent(exc: BaseException) -> str | None:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, ssl.SSLError):
            return permanent_tls(cause)
        if isinstance(cause, socket.gaierror) and cause.errno != socket.EAI_AGAIN:
            return "dns"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls-handshake"
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

    def __init__(self, config: ApiConfig, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}
        self._headers = config.headers()
        self._json_headers = {**self._headers, "Content-Type": "application/json"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp
        from yarl import URL  # an aiohttp dependency

        if self._session is None:
            proxy = env_proxy(self.config.base_url)
            if proxy:  # credentials in the proxy URL go in Proxy-Authorization, not in the URL
                url = URL(proxy)
                self._proxy = {"proxy": str(url.with_user(None))}
                auth = aiohttp.BasicAuth.from_url(url)
                if auth is not None:  # on the CONNECT for https; on each request for plain http
                    credentials = {"Proxy-Authorization": auth.encode()}
                    if self.config.base_url.startswith("https://"):
                        self._proxy["proxy_headers"] = credentials
                    else:
                        self._headers.update(credentials)
                        self._json_headers.update(credentials)
            # The key goes in each request's headers, never in the session's defaults: aiohttp
            # merges session defaults into the proxy's headers and turns an Authorization found
            # there into Proxy-Authorization, which would hand the API key to the proxy.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=ASYNC_CONNECTIONS, ttl_dns_cache=300, ssl=ssl_context(self.config)
                ),
                timeout=aiohttp.ClientTimeout(
                    total=self.config.timeout, sock_connect=connect_timeout(self.config.timeout)
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # the API sets none; no per-request cookie filtering
                auto_decompress=False,  # the core's BodyReader decodes, capped
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
        try:
            async with session.request(
                call.method,
                call.url(self.config),
                params=call.query(),
                data=call.content(),
                headers=self._json_headers if call.body is not None else self._headers,
                allow_redirects=False,
                **self._proxy,
                timeout=aiohttp.ClientTimeout(total=budget, sock_connect=connect_timeout(budget)),
            ) as response:
                reader = BodyReader(response.headers.get("Content-Encoding"))
                async for chunk in response.content.iter_chunked(_CHUNK):
                    reader.feed(chunk)
                    if reader.done:
                        break
                status, headers = response.status, response.headers
        except _connect_timeouts() as exc:
            raise transport_error(call, exc, self.config) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise total_timeout(call, self.config, budget) from None
        except aiohttp.ClientError as exc:
            raise transport_error(call, exc, self.config) from None
        return parse_response(
            call,
            status,
            headers,
            reader.body(),
            self.config,
            truncated=reader.truncated,
            undecodable=reader.failed,
        )

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
