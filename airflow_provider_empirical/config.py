"""The connection's settings as one checked value: where the API is, the key, and how to link runs.

Nothing here does I/O or imports Airflow: `ApiConfig` is built from a connection by the hook
and used by both HTTP drivers, and its `redact` is the one place that hides the key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_provider_empirical import __version__
from airflow_provider_empirical.errors import EmpiricalValidationError
from airflow_provider_empirical.get_provider_info import API_URL, DASHBOARD_URL

DEFAULT_TIMEOUT = 30.0
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for addresses that never leave this machine, where plain http cannot leak the key."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_api_url(url: str | None, port: int | None = None) -> str:
    """Return the API base URL without a trailing `/api`, refusing clear text off this machine.

    Both documented bases work: `https://api.empirical.run` and `https://dash.empirical.run/api`.
    """
    url = (url or "").strip() or API_URL
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EmpiricalValidationError(f"API URL {url!r} is not an http(s) URL with a host", field="host")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise EmpiricalValidationError(
            f"API URL {url!r} uses plain http: the API key would travel in clear text. "
            "Use https (plain http is allowed only for loopback hosts such as a local emulator).",
            field="host",
        )
    netloc = f"{parts.netloc}:{port}" if port and parts.port is None else parts.netloc
    base = f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")
    return base.removesuffix("/api")


@dataclass(frozen=True)
class ApiConfig:
    """Everything needed to talk to one Empirical project. The key is kept out of `repr`."""

    api_key: str = field(repr=False)
    base_url: str = API_URL
    project_id: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    dashboard_url: str = DASHBOARD_URL

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str) or not self.api_key.strip():
            raise EmpiricalValidationError("the API key is empty", field="password")
        object.__setattr__(self, "base_url", normalize_api_url(self.base_url))
        object.__setattr__(self, "dashboard_url", self.dashboard_url.rstrip("/"))

    def run_url(self, test_run_id: int) -> str:
        """Link to the run's page in the dashboard (the URL scheme is undocumented; see README)."""
        return f"{self.dashboard_url}/test-runs/{test_run_id}"

    def headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.api_key.strip()}",
            "Accept": "application/json",
            "User-Agent": f"airflow-provider-empirical/{__version__}",
        }
        if self.project_id is not None:
            headers["x-project-id"] = str(self.project_id)
        return headers

    def redact(self, text: str) -> str:
        """Remove the key from text that came from elsewhere (a server may echo headers back)."""
        return text.replace(self.api_key.strip(), "***") if self.api_key.strip() else text
