"""Settings from the environment: the same for the app, the command line and the tests.

This module is the one reader of the environment (tests/unit/test_public_api.py checks that no
other module touches ``os.environ``). Everything else takes a ``Settings`` (or calls
``settings_from_env()``), so a test passes a dict instead of patching the process environment.

Variables:
- ATOM_SERVER_URL        the server a session starts on (default http://localhost:1234)
- ATOM_API_TOKEN         its token (LM_API_TOKEN too, as LM Studio's SDKs read it)
- ATOM_DATA_DIR          history and settings (default ~/.atom)
- ATOM_EXTRA_SERVERS     more servers to pick models from, comma-separated
- ATOM_DEMO              0 keeps `make run` from starting the bundled demo engine
- ATOM_DEMO_ENGINE       the servers that are the demo engine (set by the launcher; "1" means
                         ATOM_SERVER_URL and ATOM_EXTRA_SERVERS are)
- ATOM_DEMO_VENV, ATOM_WHEEL_CACHE, ATOM_CACHE_DIR, XDG_CACHE_HOME   where the engine lives
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER_URL = "http://localhost:1234"
_OFF = ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    server_url: str  # normalized base URL, no trailing /v1
    server_url_set: bool = False  # ATOM_SERVER_URL was given: it wins over a saved default
    api_token: str | None  # never logged or exported
    data_dir: Path
    extra_servers: tuple[str, ...] = ()  # normalized, in the order given, no repeats
    demo_enabled: bool = True  # ATOM_DEMO
    demo_engine: tuple[str, ...] = ()  # the URLs that are the bundled demo engine
    demo_venv: Path | None = None  # None: .venv-demo beside the code
    wheel_cache: Path = Path.home() / ".cache" / "atom-wheels"
    cache_dir: Path = Path.home() / ".cache" / "atom"


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads the variables listed in this module's docstring (from `environ` when given)."""
    env = os.environ if environ is None else environ
    token = (env.get("ATOM_API_TOKEN") or env.get("LM_API_TOKEN") or "").strip() or None
    data_dir = env.get("ATOM_DATA_DIR", "").strip()
    server_set = bool(env.get("ATOM_SERVER_URL", "").strip())
    server_url = normalize_base_url(env.get("ATOM_SERVER_URL", "") or DEFAULT_SERVER_URL)
    extra = url_list(env.get("ATOM_EXTRA_SERVERS", ""))
    xdg = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    venv = env.get("ATOM_DEMO_VENV", "").strip()
    return Settings(
        server_url=server_url,
        server_url_set=server_set,
        api_token=token,
        data_dir=Path(data_dir).expanduser() if data_dir else Path.home() / ".atom",
        extra_servers=extra,
        demo_enabled=env.get("ATOM_DEMO", "1").strip().lower() not in _OFF,
        demo_engine=_demo_engine(env.get("ATOM_DEMO_ENGINE", ""), server_url, extra),
        demo_venv=Path(venv).expanduser() if venv else None,
        wheel_cache=Path(env.get("ATOM_WHEEL_CACHE") or xdg / "atom-wheels").expanduser(),
        cache_dir=Path(env.get("ATOM_CACHE_DIR") or xdg / "atom").expanduser(),
    )


def process_environ() -> dict[str, str]:
    """A copy of this process's environment, for building a child process's (the launcher)."""
    return dict(os.environ)


def _demo_engine(value: str, server_url: str, extra: tuple[str, ...]) -> tuple[str, ...]:
    value = value.strip()
    if not value or value.lower() in _OFF:
        return ()
    if "://" not in value:  # "1": the configured servers are the engine
        return tuple(dict.fromkeys((server_url, *extra)))
    return url_list(value)


def url_list(value: str) -> tuple[str, ...]:
    """'a:1, http://b:2/v1,' -> ('http://a:1', 'http://b:2'): normalized, no repeats."""
    return tuple(dict.fromkeys(normalize_base_url(u) for u in value.split(",") if u.strip()))


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
