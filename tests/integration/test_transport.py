"""Both HTTP drivers (httpx sync, aiohttp async) over real loopback HTTP: same calls, same outcomes.

The emulator injects faults; a tiny raw socket server here serves what it cannot (a gzip bomb).
Every test runs on both drivers, so they cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.emulator import Emulator, RunScript
from airflow_provider_empirical.errors import (
    EmpiricalContractError,
    EmpiricalError,
    EmpiricalRateLimitError,
    EmpiricalServerError,
    EmpiricalTransportError,
    EmpiricalValidationError,
)
from airflow_provider_empirical.http.aio import shared_async_client
from airflow_provider_empirical.http.endpoints import TEST_RUNS as TEST_RUNS_PATH
from airflow_provider_empirical.http.protocol import MAX_BODY_BYTES, Call, RetryPolicy
from airflow_provider_empirical.http.sync import EmpiricalClient
from tests.conftest import API_KEY, ROOT

FAST = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.1)
LIST = Call("GET", TEST_RUNS_PATH)
PUT = Call("PUT", TEST_RUNS_PATH, body={"environment": "production"})
DRIVERS = ["sync", "async"]


def config(url: str, timeout: float = 5.0) -> ApiConfig:
    return ApiConfig(api_key=API_KEY, base_url=url, timeout=timeout)


@contextlib.contextmanager
def no_unclosed_sessions() -> Iterator[None]:
    """Fail on aiohttp's 'Unclosed client session' / 'Unclosed connector' warnings."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    unclosed = [str(w.message) for w in seen if "Unclosed" in str(w.message)]
    assert not unclosed, unclosed


def send(
    driver: str, cfg: ApiConfig, call: Call, *, retry: RetryPolicy = FAST, deadline: float | None = None
) -> Any:
    """One `request` through the chosen driver, its client closed afterwards."""
    if driver == "sync":
        client = EmpiricalClient(cfg, retry)
        try:
            return client.request(call, deadline=deadline)
        finally:
            client.close()

    async def main() -> Any:
        async with shared_async_client(cfg, retry) as client:
            return await client.request(call, deadline=deadline)

    with no_unclosed_sessions():
        return asyncio.run(main())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    try:
        result: Any = fn()
    except Exception as exc:
        result = exc
    return result, time.monotonic() - started


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- answers -------------------------------------------------------------------------------------------


def test_same_answer_and_request_on_both_drivers(driver: str, emulator: Emulator) -> None:
    run = send(driver, config(emulator.url), PUT)["data"]["test_run"]
    page = send(
        driver, config(emulator.url), Call("GET", TEST_RUNS_PATH, params={"per_page": 5, "id": run["id"]})
    )
    assert [item["id"] for item in page["data"]["test_runs"]["items"]] == [run["id"]]
    put, get = emulator.requests
    assert put.json == {"environment": "production"} and put.headers["content-type"] == "application/json"
    assert get.query == {"per_page": "5", "id": str(run["id"])}
    for request in (put, get):
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert request.headers["user-agent"].startswith("airflow-provider-empirical/")


def test_malformed_success_is_a_contract_error_sent_once(driver: str, emulator: Emulator) -> None:
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, times=-1, malformed=True)
    error, _ = timed(lambda: send(driver, config(emulator.url), LIST))
    assert isinstance(error, EmpiricalContractError) and "answered HTTP 200" in str(error)
    assert emulator.count("GET") == 1


def test_redirect_is_not_followed_and_its_location_is_redacted(driver: str, emulator: Emulator) -> None:
    target = f"https://elsewhere.example/api/test-runs?key={API_KEY}"
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, status=302, headers={"Location": target})
    error, _ = timed(lambda: send(driver, config(emulator.url), LIST))
    assert (
        isinstance(error, EmpiricalError) and "redirect" in str(error) and "elsewhere.example" in str(error)
    )
    assert API_KEY not in str(error) and emulator.count() == 1


def test_key_echoed_in_an_error_is_redacted(driver: str, emulator: Emulator) -> None:
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, times=-1, echo_auth=True)
    error, _ = timed(lambda: send(driver, config(emulator.url), LIST))
    assert (
        isinstance(error, EmpiricalServerError) and "Bearer ***" in str(error) and API_KEY not in str(error)
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_unusable_retry_after_falls_back_to_backoff(driver: str, emulator: Emulator, value: str) -> None:
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, status=429, headers={"Retry-After": value})
    result, elapsed = timed(lambda: send(driver, config(emulator.url), LIST))
    assert isinstance(result, dict) and elapsed < 2 and emulator.count("GET") == 2


def test_backoff_never_sleeps_past_the_deadline(driver: str, emulator: Emulator) -> None:
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, times=-1, status=429, headers={"Retry-After": "6"})
    error, elapsed = timed(lambda: send(driver, config(emulator.url), LIST, deadline=time.time() + 2))
    assert isinstance(error, EmpiricalRateLimitError) and elapsed < 1.0
    assert emulator.count("GET") == 1


def test_408_is_retried_for_a_get_and_ambiguous_for_a_put(driver: str, emulator: Emulator) -> None:
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, status=408)
    assert isinstance(send(driver, config(emulator.url), LIST), dict) and emulator.count("GET") == 2
    emulator.add_fault(method="PUT", path=TEST_RUNS_PATH, status=408, after_create=True)
    error, _ = timed(lambda: send(driver, config(emulator.url), PUT))
    assert isinstance(error, EmpiricalServerError) and error.may_have_created_run
    assert emulator.count("PUT") == 1 and len(emulator.runs) == 1


def test_a_definite_4xx_on_a_put_is_not_ambiguous(driver: str, emulator: Emulator) -> None:
    bad = Call("PUT", TEST_RUNS_PATH, body={"environment": "no-such-environment"})
    error, _ = timed(lambda: send(driver, config(emulator.url), bad))
    assert isinstance(error, EmpiricalValidationError) and not error.may_have_created_run


def test_repeatable_post_is_retried_like_a_get(driver: str, emulator: Emulator) -> None:
    run_id = send(driver, config(emulator.url), PUT)["data"]["test_run"]["id"]
    path = f"{TEST_RUNS_PATH}/{run_id}/cancel"
    emulator.add_fault(method="POST", path=path, status=502, after_create=True)
    result, _ = timed(lambda: send(driver, config(emulator.url), Call("POST", path, repeatable=True)))
    assert emulator.count("POST") == 2, result


# -- deadlines -----------------------------------------------------------------------------------------


def test_a_body_dripping_one_byte_a_second_ends_at_the_timeout(driver: str, emulator: Emulator) -> None:
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, times=-1, status=None, drip=1)
    once = RetryPolicy(attempts=1)
    error, elapsed = timed(lambda: send(driver, config(emulator.url, timeout=1.0), LIST, retry=once))
    assert isinstance(error, EmpiricalTransportError) and "total request deadline" in str(error)
    assert 0.9 <= elapsed < 2.2


def test_the_callers_deadline_cuts_the_request_and_its_retries(driver: str, emulator: Emulator) -> None:
    emulator.add_fault(method="GET", path=TEST_RUNS_PATH, times=-1, status=None, drip=1)
    error, elapsed = timed(
        lambda: send(driver, config(emulator.url, timeout=30), LIST, deadline=time.time() + 1.5)
    )
    assert isinstance(error, EmpiricalTransportError) and 1.4 <= elapsed < 2.7
    error, elapsed = timed(lambda: send(driver, config(emulator.url), LIST, deadline=time.time() - 1))
    assert (
        isinstance(error, EmpiricalTransportError) and "deadline had passed" in str(error) and elapsed < 0.5
    )


def test_a_slow_put_is_ambiguous_and_sent_once(driver: str, emulator: Emulator) -> None:
    emulator.add_fault(method="PUT", path=TEST_RUNS_PATH, status=None, delay=1.5, after_create=True)
    error, elapsed = timed(lambda: send(driver, config(emulator.url, timeout=0.8), PUT))
    assert isinstance(error, EmpiricalTransportError) and error.may_have_created_run and elapsed < 1.5
    assert emulator.count("PUT") == 1


# -- size cap ------------------------------------------------------------------------------------------


class RawServer:
    """Answers every connection with the same raw bytes (for what the emulator cannot send)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.served = 0
        self.heads: list[bytes] = []  # each request's line and headers
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    self.served += 1
                    self.heads.append(data.split(b"\r\n\r\n")[0])
                    conn.sendall(self.reply)
                    conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()


def _gzip_bomb(decoded_mib: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    block = b"\0" * (1024 * 1024)
    return b"".join([*(packer.compress(block) for _ in range(decoded_mib)), packer.flush()])


@pytest.fixture(scope="module")
def bomb_server() -> Iterator[RawServer]:
    body = _gzip_bomb(512)  # ~0.5 MB on the wire, 512 MiB decoded
    assert len(body) < 1_000_000
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    server = RawServer(head + body)
    yield server
    server.close()


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def test_gzip_bomb_is_cut_at_the_size_cap(driver: str, bomb_server: RawServer) -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # restart the peak-RSS count from here
    before = _peak_rss_mib()
    error, elapsed = timed(lambda: send(driver, config(bomb_server.url), LIST))
    assert isinstance(error, EmpiricalContractError), error
    assert f"larger than {MAX_BODY_BYTES // 2**20} MiB" in str(error) and elapsed < 5
    assert _peak_rss_mib() - before < 200  # decoded 512 MiB would be GiBs with copies


# -- transport failures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    home = tmp_path_factory.mktemp("tls")
    cert, key = home / "cert.pem", home / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


def test_certificate_that_does_not_verify_is_permanent_and_fast(
    driver: str, tls_files: tuple[str, str]
) -> None:
    slow = RetryPolicy(attempts=5, base_delay=2.0, max_delay=2.0)
    with Emulator(api_keys={API_KEY: 1}, tls=tls_files) as emulator:
        error, elapsed = timed(lambda: send(driver, config(emulator.url), LIST, retry=slow))
    assert isinstance(error, EmpiricalTransportError) and error.permanent and not error.may_have_created_run
    assert "certificate" in str(error).lower() and "SSL_CERT_FILE" in str(error) and elapsed < 1.5


def test_host_that_does_not_resolve_is_permanent_and_fast(driver: str) -> None:
    slow = RetryPolicy(attempts=5, base_delay=2.0, max_delay=2.0)
    error, elapsed = timed(lambda: send(driver, config("https://no-such-host.invalid"), LIST, retry=slow))
    assert isinstance(error, EmpiricalTransportError) and error.permanent and "does not resolve" in str(error)
    assert elapsed < 1.5


def test_connection_refused_is_a_blip_retried_even_for_a_put(driver: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    error, elapsed = timed(lambda: send(driver, config(f"http://127.0.0.1:{port}"), PUT))
    assert (
        isinstance(error, EmpiricalTransportError) and not error.permanent and not error.may_have_created_run
    )
    assert elapsed >= 0.05  # FAST's backoff ran: it was retried


def test_proxy_from_the_environment_is_used_with_its_credentials(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY is honoured: the tunnel is asked for with the proxy's credentials, never the key."""
    proxy = RawServer(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://proxyuser:proxypass@127.0.0.1:{proxy.port}")
    monkeypatch.setenv("https_proxy", f"http://proxyuser:proxypass@127.0.0.1:{proxy.port}")
    try:
        error, _ = timed(lambda: send(driver, config("https://api.example.test"), LIST, retry=RetryPolicy(1)))
    finally:
        proxy.close()
    assert isinstance(error, EmpiricalTransportError)
    head = proxy.heads[0]
    assert head.startswith(b"CONNECT api.example.test:443 HTTP/1.1")
    lines = {
        line.split(b":", 1)[0].lower(): line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:]
    }
    assert lines[b"proxy-authorization"] == b"Basic cHJveHl1c2VyOnByb3h5cGFzcw=="
    assert b"authorization" not in lines and API_KEY.encode() not in b"".join(proxy.heads)  # never the key


def test_a_loopback_api_is_never_sent_through_a_proxy(
    driver: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain http is allowed for loopback only; a proxy would see the key in clear text (issue 20.21)."""
    proxy = RawServer(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
    try:
        assert "data" in send(driver, config(emulator.url), LIST)
    finally:
        proxy.close()
    assert proxy.heads == [] and emulator.count("GET") == 1


def test_both_drivers_trust_a_private_ca_from_ssl_cert_file(tls_files: tuple[str, str]) -> None:
    """SSL_CERT_FILE set in the process environment (as for a worker or triggerer) is honoured."""
    script = """
import asyncio, sys
from airflow_provider_empirical.http.aio import shared_async_client
from airflow_provider_empirical.http.protocol import Call
from airflow_provider_empirical.http.sync import EmpiricalClient
from airflow_provider_empirical.config import ApiConfig
from airflow_provider_empirical.emulator import Emulator
cert, key, api_key = sys.argv[1:4]
with Emulator(api_keys={api_key: 1}, tls=(cert, key)) as emulator:
    config = ApiConfig(api_key=api_key, base_url=emulator.url)
    call = Call("GET", "/api/test-runs")
    sync = EmpiricalClient(config).request(call)
    async def main():
        async with shared_async_client(config) as client:
            return await client.request(call)
    print(sync["data"]["project"]["id"], asyncio.run(main())["data"]["project"]["id"])
"""
    env = {**os.environ, "SSL_CERT_FILE": tls_files[0], "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script, *tls_files, API_KEY],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = out.stdout.strip().splitlines()[-1:]  # Airflow 2 logs httpx's requests to stdout too
    assert last == ["1 1"], out.stdout[-2000:] + out.stderr[-2000:]


# -- the async face at scale ---------------------------------------------------------------------------


def test_async_client_is_not_imported_with_the_operator() -> None:
    code = (
        "import sys, airflow_provider_empirical.operators.empirical, "
        "airflow_provider_empirical.sensors.empirical; print('aiohttp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_200_concurrent_requests_on_a_delayed_server_share_one_session(emulator: Emulator) -> None:
    emulator.set_response_delay(0.1)
    cfg = config(emulator.url)

    async def main() -> tuple[list[Any], float]:
        async def one() -> Any:
            async with shared_async_client(cfg, FAST) as client:
                return await client.request(LIST)

        started = time.monotonic()
        results = await asyncio.gather(*(one() for _ in range(200)))
        return results, time.monotonic() - started

    with no_unclosed_sessions():
        results, elapsed = asyncio.run(main())
    assert len(results) == 200 and all("data" in r for r in results)
    assert elapsed < 2.0  # 200 x 100 ms in parallel (~0.3 s), not 8 at a time (2.5 s); room for a busy CI


def test_200_triggers_on_a_delayed_emulator_end_within_poll_plus_1s(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: 200 triggers, every event within poll + 1 s of its run's end (100 ms round trip)."""
    from airflow_provider_empirical.triggers.empirical import EmpiricalTestRunTrigger
    from tests.conftest import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_EMPIRICAL_DEFAULT", conn_json(emulator))
    poll, n = 1.0, 200
    emulator.queue_runs(*(RunScript(queued_for=0.0, run_for=2.0 + i / n) for i in range(n)))
    ends: dict[int, float] = {}
    client = EmpiricalClient(config(emulator.url))
    try:
        for i in range(n):
            run_id = client.request(PUT)["data"]["test_run"]["id"]
            ends[run_id] = time.time() + 2.0 + i / n
    finally:
        client.close()
    emulator.set_response_delay(0.1)

    async def main() -> dict[int, tuple[float, str]]:
        async def watch(run_id: int) -> tuple[float, str]:
            trigger = EmpiricalTestRunTrigger(run_id, time.time() + 60, poll_interval=poll)
            async for event in trigger.run():
                return time.time(), str(event.payload["status"])
            raise AssertionError("no event")

        got = await asyncio.gather(*(watch(run_id) for run_id in ends))
        return dict(zip(ends, got, strict=True))

    with no_unclosed_sessions():
        events = asyncio.run(main())
    assert {status for _, status in events.values()} == {"success"}
    lags = sorted(when - ends[run_id] for run_id, (when, _) in events.items())
    assert lags[-1] <= poll + 1.0, f"max lag {lags[-1]:.2f} s, p50 {lags[n // 2]:.2f} s"
