"""The connection's settings as one checked value: where the API is, the key, and how to link runs.

Nothing here does I/O or imports Airflow. `ApiConfig.from_connection` is the only place that
reads and normalises a connection's fields (the hook hands it what Airflow stored); both HTTP
drivers use the result, and its `clean` is the one place that hides the key and makes server
text safe to log.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import SplitResult, quote, quote_plus, urlsplit

from airflow_provider_empirical import __version__
from airflow_provider_empirical.api.errors import EmpiricalValidationError
from airflow_provider_empirical.get_provider_info import API_URL, DASHBOARD_URL
from airflow_provider_empirical.validation import positive_int, positive_number

DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 3600.0
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for addresses that never leave this machine, where plain http cannot leak the key."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _checked_url(url: str, field: str, what: str) -> SplitResult:
    """An http(s) URL with a host and no credentials (they would leak in links and errors)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EmpiricalValidationError(f"{what} {url[:100]!r} is not an http(s) URL with a host", field=field)
    if parts.username is not None or parts.password is not None:
        raise EmpiricalValidationError(
            f"{what} must not contain a user name or password (put the API key in the password field)",
            field=field,
        )
    return parts


def normalize_api_url(url: str | None, port: int | None = None) -> str:
    """Return the API base URL without a trailing `/api`, refusing clear text off this machine.

    Both documented bases work: `https://api.empirical.run` and `https://dash.empirical.run/api`.
    """
    url = (url or "").strip() or API_URL
    if "://" not in url:
        url = "https://" + url
    parts = _checked_url(url, "host", "API URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        raise EmpiricalValidationError(
            f"API URL {url!r} uses plain http: the API key would travel in clear text. "
            "Use https (plain http is allowed only for loopback hosts such as a local emulator).",
            field="host",
        )
    netloc = f"{parts.netloc}:{port}" if port and parts.port is None else parts.netloc
    base = f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
    return base.removesuffix("/api")


def _api_key(value: Any) -> str:
    """The key, stripped once; characters an HTTP header cannot carry are refused, never shown."""
    if not isinstance(value, str) or not value.strip():
        raise EmpiricalValidationError(
            "has no API key: set its password (labelled 'API key' in the UI)", field="password"
        )
    key = value.strip()
    if not all(33 <= ord(char) < 127 for char in key):
        raise EmpiricalValidationError(
            "has an API key (password field) with characters an HTTP header cannot carry (a line "
            "break, a space, a control or non-ASCII character): copy the key from the Empirical "
            "dashboard again",
            field="password",
        )
    return key


def _timeout(value: Any) -> float:
    seconds = positive_number(value, "timeout")
    if not math.isfinite(seconds) or seconds > MAX_TIMEOUT:
        raise EmpiricalValidationError(
            f"extra field `timeout` must be at most {MAX_TIMEOUT:.0f} seconds", field="timeout"
        )
    return seconds


def _slug(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value.strip()):
        raise EmpiricalValidationError(
            "extra field `project_slug` must be the project's slug as in its dashboard URL (letters, "
            "digits, '.', '_' and '-')",
            field="project_slug",
        )
    return value.strip()


def _ca_bundle(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not os.path.isfile(value):
        raise EmpiricalValidationError(
            "extra field `ca_bundle` must be the path of a PEM file of trusted CA certificates "
            "that exists on the worker and the triggerer",
            field="ca_bundle",
        )
    return value


@dataclass(frozen=True)
class ApiConfig:
    """Everything needed to talk to one Empirical project, checked once. The key is kept out of `repr`.

    Values may arrive raw from a connection's extra (strings from a form); each is checked and
    normalised here, and an error names the connection field to fix, never a secret value.
    """

    api_key: str = field(repr=False)
    base_url: str = API_URL
    project_id: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    dashboard_url: str = DASHBOARD_URL
    project_slug: str | None = None
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("api_key", _api_key(self.api_key))
        put("base_url", normalize_api_url(self.base_url))
        project_id: Any = self.project_id  # raw from a form: "42" or ""
        if project_id not in (None, ""):
            try:
                put("project_id", positive_int(project_id, "project_id"))
            except EmpiricalValidationError as exc:
                raise EmpiricalValidationError(f"extra field {exc.message}", field="project_id") from None
        else:
            put("project_id", None)
        timeout: Any = self.timeout
        timeout = DEFAULT_TIMEOUT if timeout in (None, "") else timeout
        try:
            put("timeout", _timeout(timeout))
        except EmpiricalValidationError as exc:
            message = exc.message if exc.message.startswith("extra") else f"extra field {exc.message}"
            raise EmpiricalValidationError(message, field="timeout") from None
        dashboard = str(self.dashboard_url or DASHBOARD_URL).strip()
        _checked_url(dashboard, "dashboard_url", "extra field `dashboard_url`")
        put("dashboard_url", dashboard.rstrip("/"))
        put("project_slug", _slug(self.project_slug))
        put("ca_bundle", _ca_bundle(self.ca_bundle))

    @classmethod
    def from_connection(
        cls, conn_id: str, host: str | None, port: int | None, password: str | None, extra: Any
    ) -> ApiConfig:
        """The configuration of a connection's fields; an error names the field to fix.

        `extra` is the parsed extra (a dict), or the raw text Airflow stored when it is not JSON.
        """
        try:
            if isinstance(extra, str):
                extra = _extra_json(extra)
            if extra is None:
                extra = {}
            if not isinstance(extra, Mapping):
                raise EmpiricalValidationError("extra is not a JSON object", field="extra")
            return cls(
                api_key=password or "",
                base_url=normalize_api_url(host, port),
                project_id=extra.get("project_id"),
                timeout=extra.get("timeout") or DEFAULT_TIMEOUT,
                dashboard_url=extra.get("dashboard_url") or "",
                project_slug=extra.get("project_slug"),
                ca_bundle=extra.get("ca_bundle"),
            )
        except EmpiricalValidationError as exc:
            raise EmpiricalValidationError(f"Connection {conn_id!r} {exc.message}", field=exc.field) from None

    def run_url(self, test_run_id: int, project_slug: str | None = None) -> str:
        """The run's page: `<dashboard>/<project slug>/test-runs/<id>`, as Empirical's own tooling links it.

        The connection's `project_slug` wins over a slug learned from the API. Without any slug
        the link falls back to `<dashboard>/test-runs/<id>`, a guess that may not resolve.
        """
        slug = self.project_slug or project_slug
        if slug:
            return f"{self.dashboard_url}/{quote(slug, safe='')}/test-runs/{test_run_id}"
        return f"{self.dashboard_url}/test-runs/{test_run_id}"

    def headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",  # all the drivers' BodyReader decodes
            "User-Agent": f"airflow-provider-empirical/{__version__}",
        }
        if self.project_id is not None:
            headers["x-project-id"] = str(self.project_id)
        return headers

    @cached_property
    def _key_forms(self) -> tuple[str, ...]:
        """The key as it may appear in text: raw, JSON-escaped, repr-escaped, URL-encoded."""
        key = self.api_key
        forms = {key, json.dumps(key)[1:-1], repr(key)[1:-1], quote(key, safe=""), quote_plus(key)}
        return tuple(sorted(forms, key=len, reverse=True))  # longest first: no form left half-replaced

    def redact(self, text: str) -> str:
        """Remove the key, in every form it can take, from text that came from elsewhere.

        Call it before shortening a text: a key cut in two by truncation would no longer match.
        """
        for form in self._key_forms:
            text = text.replace(form, "***")
        return text

    def clean(self, text: str, limit: int | None = None) -> str:
        """Server text made safe for a log line or a message: the key removed FIRST, control
        characters escaped (no forged log lines, no terminal escapes), then cut to `limit`."""
        # redacted again after escaping: a key holding a backslash and "n" could be rebuilt from a
        # real newline in the text
        safe = self.redact(printable(self.redact(text)))
        return safe if limit is None or len(safe) <= limit else safe[: max(0, limit - 3)] + "..."


def _extra_json(raw: str) -> Any:
    """A connection's extra stored as text: it must be JSON (Airflow would silently drop it)."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise EmpiricalValidationError(
            "its extra is not valid JSON, so project_id, timeout and the other extra fields cannot be read",
            field="extra",
        ) from None


_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def printable(text: str) -> str:
    """`text` with every control, format or separator character escaped (\\n, \\x1b, \\u202e...).

    Server text ends up in task logs and exception messages: a newline or an ANSI escape in a
    test name must not forge a log line or rewrite a terminal.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or unicodedata.category(char) not in _UNPRINTABLE:
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)
