"""Settings from the environment: the same for the app, the command line and the tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER_URL = "http://localhost:1234"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLimits:
    """When ATOM gives up on a streamed reply. Keep-alive comments are not progress: only a
    token (reasoning or answer) resets the stall clock."""

    stall_timeout_s: float = 60.0  # no new token for this long, once tokens have begun
    first_token_timeout_s: float = 300.0  # no first token for this long (prompt, JIT load)
    request_deadline_s: float = 1800.0  # the whole request, sent to last byte
    # waiting for a free client connection; load runs size their pools so this never happens
    pool_timeout_s: float = 30.0


DEFAULT_LIMITS = StreamLimits()


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server_url: str  # normalized base URL, no trailing /v1
    api_token: str | None  # never logged or exported
    data_dir: Path
    limits: StreamLimits = DEFAULT_LIMITS  # ATOM_STALL_TIMEOUT_S, ATOM_REQUEST_DEADLINE_S


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads ATOM_SERVER_URL, ATOM_API_TOKEN (or LM_API_TOKEN, as LM Studio's SDKs do) and
    ATOM_DATA_DIR (default ~/.atom), and the stream limits ATOM_STALL_TIMEOUT_S,
    ATOM_FIRST_TOKEN_TIMEOUT_S and ATOM_REQUEST_DEADLINE_S (seconds; a bad value is ignored)."""
    env = os.environ if environ is None else environ
    token = (env.get("ATOM_API_TOKEN") or env.get("LM_API_TOKEN") or "").strip() or None
    data_dir = env.get("ATOM_DATA_DIR", "").strip()
    return Settings(
        server_url=normalize_base_url(env.get("ATOM_SERVER_URL", "") or DEFAULT_SERVER_URL),
        api_token=token,
        data_dir=Path(data_dir).expanduser() if data_dir else Path.home() / ".atom",
        limits=StreamLimits(
            stall_timeout_s=_seconds(env, "ATOM_STALL_TIMEOUT_S", DEFAULT_LIMITS.stall_timeout_s),
            first_token_timeout_s=_seconds(env, "ATOM_FIRST_TOKEN_TIMEOUT_S",
                                           DEFAULT_LIMITS.first_token_timeout_s),
            request_deadline_s=_seconds(env, "ATOM_REQUEST_DEADLINE_S",
                                        DEFAULT_LIMITS.request_deadline_s),
        ),
    )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if value > 0 else default


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
