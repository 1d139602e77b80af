"""The sans-I/O HTTP core on plain values: no server, no sleep, milliseconds for the whole file."""

from __future__ import annotations

import email.utils
import json
import math
from typing import Any

import pytest

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
from airflow_provider_empirical.http.protocol import (
    MAX_BODY_BYTES,
    MAX_RETRY_AFTER,
    Call,
    RetryPolicy,
    mark_uncertain,
    next_pause,
    parse_response,
    parse_retry_after,
    request_budget,
    transport_failure,
)

KEY = "emp-core-key-31415926-do-not-leak"
CONFIG = ApiConfig(api_key=KEY, base_url="https://api.example.test", timeout=30)
GET = Call("GET", "/api/test-runs/7")
PUT = Call("PUT", "/api/test-runs", body={"environment": "production"})
RERUN = Call("POST", "/api/test-runs/7/re-run", body={"only_failed": True})
CANCEL = Call("POST", "/api/test-runs/7/cancel", repeatable=True)
NOW = 1_900_000_000.0


def answer(status: int, body: bytes | str | Any = b"", call: Call = GET, **headers: str) -> Any:
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return parse_response(call, status, headers, body, CONFIG, now=NOW)


def failure(status: int, body: bytes | str | Any = b"", call: Call = GET, **headers: str) -> EmpiricalError:
    with pytest.raises(EmpiricalError) as info:
        answer(status, body, call, **headers)
    return info.value


# -- Call -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "idempotent"),
    [(GET, True), (PUT, False), (RERUN, False), (CANCEL, True), (Call("GET", "/x", repeatable=False), False)],
)
def test_idempotent_is_repeatable_when_given_else_get_only(call: Call, idempotent: bool) -> None:
    assert call.idempotent is idempotent


def test_call_encodes_query_and_body_the_same_for_both_drivers() -> None:
    call = Call("GET", "/api/test-runs", params={"page": 2, "per_page": 100, "x": None, "flag": True})
    assert call.query() == (("page", "2"), ("per_page", "100"), ("flag", "true"))
    assert call.content() is None and call.url(CONFIG) == "https://api.example.test/api/test-runs"
    assert PUT.content() == b'{"environment":"production"}'


# -- RetryPolicy.delay -----------------------------------------------------------------------------

POLICY = RetryPolicy(attempts=4, base_delay=1.0, max_delay=8.0)


def _rate_limited(retry_after: float | None) -> EmpiricalRateLimitError:
    return EmpiricalRateLimitError("429", status=429, retry_after=retry_after)


def _transport(sent: bool, permanent: bool = False) -> EmpiricalTransportError:
    return EmpiricalTransportError("x", sent=sent, permanent=permanent)


@pytest.mark.parametrize(
    ("call", "error", "attempt", "remaining", "expected"),
    [
        (GET, EmpiricalServerError("502", status=502), 1, None, (0.5, 1.0)),
        (GET, EmpiricalServerError("502", status=502), 3, None, (2.0, 4.0)),
        (GET, EmpiricalServerError("502", status=502), 4, None, None),  # attempts used up
        (GET, EmpiricalServerError("408", status=408), 1, None, (0.5, 1.0)),
        (GET, EmpiricalAuthError("401", status=401), 1, None, None),  # not transient
        (GET, EmpiricalContractError("not JSON", status=200), 1, None, None),  # never retried
        (GET, _transport(sent=True), 1, None, (0.5, 1.0)),  # reset, read timeout: a blip
        (GET, _transport(sent=False, permanent=True), 1, None, None),  # TLS / DNS
        (PUT, EmpiricalServerError("502", status=502), 1, None, None),  # may have created a run
        (PUT, EmpiricalServerError("408", status=408), 1, None, None),
        (PUT, EmpiricalServerError("503", status=503), 1, None, None),  # a gateway may say 503 after the work
        (PUT, _rate_limited(1.0), 1, None, (1.0, 1.0)),  # 429: surely refused
        (PUT, _transport(sent=False), 1, None, (0.5, 1.0)),  # never reached the server
        (PUT, _transport(sent=True), 1, None, None),
        (CANCEL, EmpiricalServerError("502", status=502), 1, None, (0.5, 1.0)),  # retried like a GET
        (GET, _rate_limited(7.0), 1, None, (7.0, 7.0)),  # Retry-After honoured
        (GET, _rate_limited(10_000.0), 1, None, (MAX_RETRY_AFTER, MAX_RETRY_AFTER)),  # capped
        (GET, _rate_limited(math.nan), 1, None, (0.5, 1.0)),  # no usable hint: own backoff
        (GET, _rate_limited(math.inf), 1, None, (0.5, 1.0)),
        (GET, _rate_limited(-3.0), 1, None, (0.5, 1.0)),
        (GET, _rate_limited(6.0), 1, 2.0, None),  # would sleep past the deadline: give up now
        (GET, _rate_limited(1.0), 1, 2.0, (1.0, 1.0)),
        (GET, EmpiricalServerError("502", status=502), 3, 1.5, None),  # 2-4 s backoff, 1.5 s left
        (GET, EmpiricalServerError("502", status=502), 1, -1.0, None),  # deadline already passed
    ],
)
def test_retry_policy_delay(
    call: Call, error: EmpiricalError, attempt: int, remaining: float | None, expected: tuple | None
) -> None:
    for _ in range(20):  # jitter
        delay = POLICY.delay(call, error, attempt, remaining=remaining)
        if expected is None:
            assert delay is None
        else:
            assert delay is not None and expected[0] <= delay <= expected[1]


def test_next_pause_raises_the_final_error_marked_for_a_trigger() -> None:
    assert next_pause(POLICY, GET, EmpiricalServerError("HTTP 502", status=502), 1, None, NOW) <= 1.0
    error = EmpiricalServerError("HTTP 502", status=502)
    with pytest.raises(EmpiricalServerError) as info:
        next_pause(POLICY, PUT, error, 1, None, NOW)
    assert info.value is error and error.may_have_created_run
    late = _rate_limited(6.0)
    with pytest.raises(EmpiricalRateLimitError) as info:
        next_pause(POLICY, GET, late, 1, NOW + 2.0, NOW)
    assert not info.value.may_have_created_run


# -- Retry-After -----------------------------------------------------------------------------------


def _date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("1", 1.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("3600", MAX_RETRY_AFTER),  # capped
        ("99999999999", None),  # absurd
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-Infinity", None),
        ("-5", None),
        ("1e3", None),
        ("0x10", None),
        ("soon", None),
        ("١٢", None),  # Arabic-Indic digits: not HTTP delay-seconds
        (_date(30), 30.0),
        (_date(-30), 0.0),  # just passed: retry now
        (_date(5_000), MAX_RETRY_AFTER),
        (_date(10 * 86_400), None),  # absurd date
        (_date(-10 * 86_400), None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", None),
        ("Mon, 01 Jan 0001 00:00:00 GMT", None),
        ("Thu, 99 Foo 2026 25:61:61 GMT", None),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: read as UTC, years ago
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    parsed = parse_retry_after(value, NOW)
    assert parsed == (pytest.approx(expected, abs=1.0) if expected is not None else None)


# -- parse_response --------------------------------------------------------------------------------


def test_success_is_the_parsed_json() -> None:
    assert answer(200, {"data": {"test_run": {"id": 7}}}) == {"data": {"test_run": {"id": 7}}}
    assert answer(204) is None


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>gateway</html>", b'{"data": {"test_run": ', b"\xff\xfe\x00garbage", b"[" * 100_000],
    ids=["empty", "html", "truncated", "binary", "deeply-nested"],
)
@pytest.mark.parametrize("call", [GET, PUT], ids=["GET", "PUT"])
def test_success_without_json_is_a_contract_error_naming_endpoint_and_status(body: bytes, call: Call) -> None:
    error = failure(201, body, call)
    assert isinstance(error, EmpiricalContractError) and error.contract and not error.transient
    assert error.status == 201 and error.endpoint == call.endpoint
    assert f"{call.endpoint} answered HTTP 201" in str(error) and "not JSON" in str(error)
    assert POLICY.delay(call, error, 1) is None


def test_success_larger_than_the_cap_is_a_contract_error() -> None:
    error = failure(200, b" " * (MAX_BODY_BYTES + 1))
    assert isinstance(error, EmpiricalContractError) and "larger than 4 MiB" in str(error)
    error = parse_response_truncated()
    assert isinstance(error, EmpiricalContractError) and "larger than 4 MiB" in str(error)


def parse_response_truncated() -> EmpiricalError:
    with pytest.raises(EmpiricalError) as info:
        parse_response(GET, 200, {}, b"{}", CONFIG, truncated=True)
    return info.value


@pytest.mark.parametrize(
    ("status", "cls", "transient", "rejected", "words"),
    [
        (400, EmpiricalValidationError, False, True, "HTTP 400"),
        (401, EmpiricalAuthError, False, True, "check the API key"),
        (403, EmpiricalAuthError, False, True, "cannot access this project"),
        (404, EmpiricalNotFoundError, False, True, "check the test run id"),
        (408, EmpiricalServerError, True, False, "timed out waiting for the request"),
        (409, EmpiricalError, False, True, "HTTP 409"),
        (412, EmpiricalError, False, True, "HTTP 412"),
        (422, EmpiricalValidationError, False, True, "HTTP 422"),
        (429, EmpiricalRateLimitError, True, True, "rate limited"),
        (500, EmpiricalServerError, True, False, "HTTP 500"),
        (502, EmpiricalServerError, True, False, "HTTP 502"),
        (503, EmpiricalServerError, True, False, "HTTP 503"),  # a gateway may answer it after the work
        (504, EmpiricalServerError, True, False, "HTTP 504"),
    ],
)
def test_error_statuses_map_to_the_error_family(
    status: int, cls: type, transient: bool, rejected: bool, words: str
) -> None:
    error = failure(status, {"error": {"message": "the server says why"}})
    assert type(error) is cls and error.transient is transient and error.rejected is rejected
    assert words in str(error) and "the server says why" in str(error) and error.status == status


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"message": "m1"}, "m1"),
        ({"detail": "d1"}, "d1"),
        ({"errors": ["e1"]}, "['e1']"),
        ({"error": "plain"}, "plain"),
        ("plain text answer", "plain text answer"),
        (b"", "Bad Gateway"),
    ],
)
def test_error_text_is_taken_from_any_shape(body: Any, words: str) -> None:
    assert words in str(failure(502, body))


def test_retry_after_header_is_read_case_insensitively_and_garbage_ignored() -> None:
    assert failure(429, b"", **{"Retry-After": "4"}).retry_after == 4.0
    assert failure(429, b"", **{"retry-after": "nan"}).retry_after is None
    assert failure(503, b"", **{"RETRY-AFTER": _date(20)}).retry_after == pytest.approx(20, abs=1)


@pytest.mark.parametrize("cut", [200, 300])
@pytest.mark.parametrize("status", [200, 500])
def test_server_text_is_redacted_before_it_is_truncated(status: int, cut: int) -> None:
    """The key straddles the cut: redacting after cutting would leak its first characters."""
    for offset in range(cut - len(KEY) + 1, cut):
        body = ("x" * (offset - 1) + " " + KEY + " tail").encode()
        error = failure(status, body)
        assert KEY[:4] not in str(error) and KEY[-4:] not in str(error), offset


def test_echoed_key_in_json_error_and_plain_success_is_redacted() -> None:
    echo = {"error": {"message": f"internal error (authorization: Bearer {KEY})"}}
    assert "Bearer ***" in str(failure(500, echo)) and KEY not in str(failure(500, echo))
    error = failure(200, f"<pre>Authorization: Bearer {KEY}</pre>")
    assert isinstance(error, EmpiricalContractError) and KEY not in str(error) and "***" in str(error)


def test_redirect_names_its_redacted_location() -> None:
    error = failure(307, b"", Location=f"https://elsewhere.example/?token={KEY}&x=" + "y" * 300)
    assert "redirect" in str(error) and "elsewhere.example" in str(error)
    assert KEY not in str(error) and "token=***" in str(error)
    assert not error.transient and failure(302, b"").status == 302


# -- transport failures and the no-duplicate rule -------------------------------------------------------


def test_transport_failure_is_redacted_and_names_permanent_causes() -> None:
    blip = transport_failure(GET, CONFIG, "ReadError", f"reset while sending Bearer {KEY}", sent=True)
    assert blip.transient and not blip.permanent and KEY not in str(blip)
    tls = transport_failure(
        GET, CONFIG, "ConnectError", "CERTIFICATE_VERIFY_FAILED", sent=False, permanent="tls"
    )
    assert tls.permanent and "SSL_CERT_FILE" in str(tls) and POLICY.delay(GET, tls, 1) is None
    dns = transport_failure(
        GET, CONFIG, "ConnectError", "Name or service not known", sent=False, permanent="dns"
    )
    assert dns.permanent and "does not resolve" in str(dns)


@pytest.mark.parametrize(
    ("make", "marked"),
    [
        (lambda: EmpiricalServerError("HTTP 500", status=500), True),
        (lambda: EmpiricalServerError("HTTP 408", status=408), True),
        (lambda: EmpiricalServerError("HTTP 503", status=503), True),
        (lambda: EmpiricalError("HTTP 303", status=303), True),
        (lambda: EmpiricalRateLimitError("HTTP 429", status=429), False),
        (lambda: EmpiricalValidationError("HTTP 400", status=400), False),
        (lambda: EmpiricalError("HTTP 409", status=409), False),
        (lambda: EmpiricalAuthError("HTTP 401", status=401), False),
        (lambda: EmpiricalContractError("HTTP 200 not JSON", status=200), True),
        (lambda: EmpiricalTransportError("read timeout", sent=True), True),
        (lambda: EmpiricalTransportError("refused", sent=False), False),
        (lambda: EmpiricalTransportError("tls", sent=False, permanent=True), False),
    ],
)
@pytest.mark.parametrize("call", [PUT, RERUN, CANCEL, GET], ids=["PUT", "re-run", "cancel", "GET"])
def test_only_non_repeatable_calls_not_surely_rejected_may_have_created_a_run(
    make: Any, marked: bool, call: Call
) -> None:
    error = make()
    result = mark_uncertain(call, error)
    expected = marked and not call.idempotent
    assert result is error and error.may_have_created_run is expected


def test_request_budget_is_the_timeout_cut_at_the_deadline() -> None:
    assert request_budget(CONFIG, None, NOW) == 30
    assert request_budget(CONFIG, NOW + 5, NOW) == 5
    assert request_budget(CONFIG, NOW + 500, NOW) == 30
    assert request_budget(CONFIG, NOW - 1, NOW) < 0
