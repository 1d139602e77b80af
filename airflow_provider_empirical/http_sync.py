"""The sync driver: the protocol of `protocol.py` over one pooled httpx.Client (workers, sensors).

httpx is already loaded by Airflow's task SDK, so this costs nothing at DAG parse. Its timeouts
are per socket operation; the total deadline of an attempt is enforced here by streaming the
body and checking the clock after every chunk (and by giving each read at most what is left).
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import httpx

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


def _permanent(exc: BaseException) -> str | None:
    """'tls' or 'dns' when the chain of causes shows a failure retrying will not fix."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return "tls"
        if isinstance(seen, socket.gaierror) and seen.errno != socket.EAI_AGAIN:
            return "dns"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "tls"
    if "Name or service not known" in text or f"[Errno {socket.EAI_NONAME}]" in text:
        return "dns"
    return None


def transport_error(call: Call, exc: httpx.RequestError, config: ApiConfig) -> EmpiricalTransportError:
    """Classify an httpx failure: connect-phase failures never reached the server."""
    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    permanent = _permanent(exc) if isinstance(exc, httpx.ConnectError) else None
    return transport_failure(call, config, type(exc).__name__, str(exc), sent=sent, permanent=permanent)


class _TotalTimeout(Exception):
    pass


class EmpiricalClient:
    """Sync face: one pooled httpx.Client for the life of the hook."""

    def __init__(self, config: ApiConfig, retry: RetryPolicy | None = None, **httpx_kwargs: Any) -> None:
        self.config = config
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            headers=config.headers(),
            timeout=httpx.Timeout(config.timeout, connect=connect_timeout(config.timeout)),
            follow_redirects=False,
            trust_env=True,
            # the connection's private CA, else the default (trust_env: honours SSL_CERT_FILE / _DIR)
            verify=ssl.create_default_context(cafile=config.ca_bundle) if config.ca_bundle else True,
            **httpx_kwargs,
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
        ends = time.monotonic() + budget
        request = self._http.build_request(
            call.method,
            call.url(self.config),
            params=call.query(),
            content=call.content(),
            headers={"Content-Type": "application/json"} if call.body is not None else None,
            timeout=httpx.Timeout(budget, connect=connect_timeout(budget)),
        )
        chunks: list[bytes] = []
        size, truncated = 0, False
        try:
            response = self._http.send(request, stream=True)
            try:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        truncated = True
                        break
                    chunks.append(chunk)
                    if time.monotonic() > ends:
                        raise _TotalTimeout
            finally:
                response.close()
        except _TotalTimeout:
            raise total_timeout(call, self.config, budget) from None
        except httpx.RequestError as exc:
            connecting = isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            if isinstance(exc, httpx.TimeoutException) and not connecting and time.monotonic() >= ends - 0.05:
                raise total_timeout(call, self.config, budget) from None
            raise transport_error(call, exc, self.config) from None
        return parse_response(
            call, response.status_code, response.headers, b"".join(chunks), self.config, truncated=truncated
        )

    def close(self) -> None:
        self._http.close()
