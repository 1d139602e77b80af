"""The sync driver: the protocol of `protocol.py` over one pooled httpx.Client (workers, sensors).

httpx is already loaded by Airflow's task SDK, so this costs nothing at DAG parse. httpx's
timeouts are per socket operation, which a server dripping one byte per read (headers or body)
never trips: every socket operation of an attempt is therefore given at most the time left
before the attempt's total deadline (`_DeadlineBackend`, under httpcore's connection pool), so
an attempt ends at its deadline whatever the server does. The body is read raw and decoded by
the core's `BodyReader`, which caps what a gzip bomb can cost.
"""

from __future__ import annotations

import contextvars
import socket
import ssl
import time
from typing import Any

import httpcore
import httpx

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

# The monotonic time at which the attempt running in this thread (context) must be over.
_ATTEMPT_ENDS: contextvars.ContextVar[float | None] = contextvars.ContextVar("empirical_attempt_ends")


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` cut to what is left of the current attempt; `expired` raised when nothing is."""
    ends = _ATTEMPT_ENDS.get(None)
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise expired("the attempt's total deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _transport(config: ApiConfig) -> httpx.HTTPTransport:
    """httpx's transport with the deadline backend under its pool (httpx takes no backend argument,
    so it is put in place once here; tests/integration/test_transport.py proves it holds)."""
    transport = httpx.HTTPTransport(verify=ssl_context(config), proxy=env_proxy(config.base_url))
    pool: Any = transport._pool
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


def _permanent(exc: BaseException) -> str | None:
    """'tls', 'tls-handshake' or 'dns' when the chain of causes shows a failure retrying will not fix."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):
            return permanent_tls(seen)
        if isinstance(seen, socket.gaierror) and seen.errno != socket.EAI_AGAIN:
            return "dns"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "tls"
    if "WRONG_VERSION_NUMBER" in text or "[SSL" in text:
        return "tls-handshake"
    if "Name or service not known" in text or f"[Errno {socket.EAI_NONAME}]" in text:
        return "dns"
    return None


def transport_error(call: Call, exc: httpx.RequestError, config: ApiConfig) -> EmpiricalTransportError:
    """Classify an httpx failure: connect-phase failures never reached the server."""
    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    permanent = _permanent(exc) if isinstance(exc, httpx.ConnectError) else None
    return transport_failure(call, config, type(exc).__name__, str(exc), sent=sent, permanent=permanent)


class EmpiricalClient:
    """Sync face: one pooled httpx.Client for the life of the hook."""

    def __init__(self, config: ApiConfig, retry: RetryPolicy | None = None) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            transport=_transport(config),
            headers=config.headers(),
            timeout=httpx.Timeout(config.timeout, connect=connect_timeout(config.timeout)),
            follow_redirects=False,
            trust_env=False,  # proxies and CAs come from the environment once, in `_transport`
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def request(self, call: Call, *, deadline: float | None = None) -> Any:
        """Send `call`, retrying per the policy; `deadline` (epoch seconds) bounds everything."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._attempt(call, deadline)
            except EmpiricalError as error:
                pause = next_pause(self.retry, call, error, attempt, deadline, time.time())
            time.sleep(pause)

    def _attempt(self, call: Call, deadline: float | None) -> Any:
        budget = request_budget(self.config, deadline, time.time())
        if budget <= 0:
            raise deadline_passed(call, self.config)
        request = self._http.build_request(
            call.method,
            call.url(self.config),
            params=call.query(),
            content=call.content(),
            headers={"Content-Type": "application/json"} if call.body is not None else None,
            timeout=httpx.Timeout(budget, connect=connect_timeout(budget)),
        )
        ends = _ATTEMPT_ENDS.set(time.monotonic() + budget)
        try:
            response = self._http.send(request, stream=True)
            try:
                reader = BodyReader(response.headers.get("content-encoding"))
                for raw in response.iter_raw():
                    reader.feed(raw)
                    if reader.done:
                        break
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                raise transport_error(call, exc, self.config) from None
            raise total_timeout(call, self.config, budget) from None
        except httpx.RequestError as exc:
            raise transport_error(call, exc, self.config) from None
        finally:
            _ATTEMPT_ENDS.reset(ends)
        return parse_response(
            call,
            response.status_code,
            response.headers,
            reader.body(),
            self.config,
            truncated=reader.truncated,
            undecodable=reader.failed,
        )

    def close(self) -> None:
        self._http.close()
