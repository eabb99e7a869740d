"""Settings from the environment: the same for the app, the command line and the tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER_URL = "http://localhost:1234"
# Names a browser on this machine uses to reach ATOM. Any other Host header is refused (see
# host_allowed): a web page whose own name is made to resolve to 127.0.0.1 (DNS rebinding) would
# otherwise talk to ATOM as if it were the user.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server_url: str  # normalized base URL, no trailing /v1
    api_token: str | None  # never logged or exported
    data_dir: Path
    # Extra names ATOM answers to (ATOM_ALLOWED_HOSTS, comma-separated) for use over a LAN;
    # "*" answers to any name. Loopback names are always allowed.
    allowed_hosts: frozenset[str] = frozenset()

    def token_for(self, url: str) -> str | None:
        """The environment's token, for ATOM_SERVER_URL only: no other server ever gets it."""
        return self.api_token if normalize_base_url(url) == self.server_url else None


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads ATOM_SERVER_URL, ATOM_API_TOKEN (or LM_API_TOKEN, as LM Studio's SDKs do) and
    ATOM_DATA_DIR (default ~/.atom), and ATOM_ALLOWED_HOSTS (extra names to answer to)."""
    env = os.environ if environ is None else environ
    token = (env.get("ATOM_API_TOKEN") or env.get("LM_API_TOKEN") or "").strip() or None
    data_dir = env.get("ATOM_DATA_DIR", "").strip()
    return Settings(
        server_url=normalize_base_url(env.get("ATOM_SERVER_URL", "") or DEFAULT_SERVER_URL),
        api_token=token,
        data_dir=Path(data_dir).expanduser() if data_dir else Path.home() / ".atom",
        allowed_hosts=frozenset(
            h for h in (_host_name(x) for x in env.get("ATOM_ALLOWED_HOSTS", "").split(",")) if h),
    )


def host_allowed(host_header: str | None, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether a request's Host header names ATOM by a name it answers to: localhost,
    127.0.0.1, ::1, or one of `allowed` (any name if it holds "*"). No header at all (not a
    browser: AppTest, scripts) is allowed; a browser always sends one."""
    if host_header is None:
        return True
    name = _host_name(host_header)
    return bool(name) and (name in LOOPBACK_HOSTS or name in allowed or "*" in allowed)


def _host_name(host: str) -> str:
    """'LocalHost.:8501' -> 'localhost'; '[::1]:8501' -> '::1'. The port never matters."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def normalize_base_url(url: str) -> str:
    """'localhost:1234/v1/' -> 'http://localhost:1234'. People paste URLs with the OpenAI
    suffix; ATOM adds route prefixes itself."""
    url = url.strip() or DEFAULT_SERVER_URL
    if "://" not in url:
        url = "http://" + url
    url = url.rstrip("/")
    for suffix in ("/api/v1", "/api/v0", "/v1"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    return url.rstrip("/")
