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
- ATOM_DEMO_STATUS       the launcher's progress file while it builds or starts the engine
- ATOM_ALLOWED_HOSTS     names besides localhost/127.0.0.1/::1 the app answers to (LAN use)
- ATOM_CLASS             1: class mode (`ATOM_CLASS=1 make run`): phones vote at /vote, every
                         other page needs the teacher key (see atom_core/arena/classroom.py)
- ATOM_TEACHER_KEY       the teacher key in class mode (else a new random one per start)
- ATOM_STALL_TIMEOUT_S, ATOM_FIRST_TOKEN_TIMEOUT_S, ATOM_REQUEST_DEADLINE_S   when a streamed
                         reply is given up (seconds; a bad or non-positive value is ignored)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .url import ServerURL

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")
# Names a browser on this machine uses to reach ATOM. Any other Host header is refused (see
# host_allowed): a web page whose own name is made to resolve to 127.0.0.1 (DNS rebinding) would
# otherwise talk to ATOM as if it were the user.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


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
    server_url: ServerURL  # ATOM_SERVER_URL, else the default
    server_url_set: bool = False  # ATOM_SERVER_URL was given: it wins over a saved default
    api_token: str | None  # never logged or exported
    data_dir: Path
    extra_servers: tuple[ServerURL, ...] = ()  # in the order given, no repeats
    demo_enabled: bool = True  # ATOM_DEMO
    demo_engine: tuple[ServerURL, ...] = ()  # the URLs that are the bundled demo engine
    demo_venv: Path | None = None  # None: .venv-demo beside the code
    wheel_cache: Path = Path.home() / ".cache" / "atom-wheels"
    cache_dir: Path = Path.home() / ".cache" / "atom"
    demo_status: Path | None = None  # ATOM_DEMO_STATUS: the launcher's engine progress file
    # Extra names ATOM answers to (ATOM_ALLOWED_HOSTS, comma-separated) for use over a LAN;
    # "*" answers to any name. Loopback names are always allowed.
    allowed_hosts: frozenset[str] = frozenset()
    class_mode: bool = False  # ATOM_CLASS: phones vote at /vote; other pages need the key
    teacher_key: str | None = field(default=None, repr=False)  # ATOM_TEACHER_KEY; never logged

    def token_for(self, url: ServerURL) -> str | None:
        """The environment's token, for ATOM_SERVER_URL only: no other server ever gets it."""
        return self.api_token if ServerURL(url) == self.server_url else None
    # ATOM_STALL_TIMEOUT_S, ATOM_FIRST_TOKEN_TIMEOUT_S, ATOM_REQUEST_DEADLINE_S
    limits: StreamLimits = DEFAULT_LIMITS
    # which of the limits' fields the environment set (they win over Settings)
    limits_set: frozenset[str] = frozenset()


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Reads the variables listed in this module's docstring (from `environ` when given)."""
    env = os.environ if environ is None else environ
    token = (env.get("ATOM_API_TOKEN") or env.get("LM_API_TOKEN") or "").strip() or None
    data_dir = env.get("ATOM_DATA_DIR", "").strip()
    server_set = bool(env.get("ATOM_SERVER_URL", "").strip())
    server_url = ServerURL(env.get("ATOM_SERVER_URL", ""))
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
        demo_status=Path(status) if (status := env.get("ATOM_DEMO_STATUS", "").strip()) else None,
        allowed_hosts=frozenset(
            h for h in (_host_name(x) for x in env.get("ATOM_ALLOWED_HOSTS", "").split(",")) if h),
        class_mode=env.get("ATOM_CLASS", "").strip().lower() in _ON,
        teacher_key=env.get("ATOM_TEACHER_KEY", "").strip() or None,
        limits=StreamLimits(
            stall_timeout_s=_seconds(env, "ATOM_STALL_TIMEOUT_S", DEFAULT_LIMITS.stall_timeout_s),
            first_token_timeout_s=_seconds(env, "ATOM_FIRST_TOKEN_TIMEOUT_S",
                                           DEFAULT_LIMITS.first_token_timeout_s),
            request_deadline_s=_seconds(env, "ATOM_REQUEST_DEADLINE_S",
                                        DEFAULT_LIMITS.request_deadline_s),
        ),
        limits_set=frozenset(field for field, name in LIMIT_VARIABLES.items()
                             if _seconds(env, name, 0.0) > 0),
    )


# The stream limits' fields and the variables that set them.
LIMIT_VARIABLES = {"stall_timeout_s": "ATOM_STALL_TIMEOUT_S",
                   "first_token_timeout_s": "ATOM_FIRST_TOKEN_TIMEOUT_S",
                   "request_deadline_s": "ATOM_REQUEST_DEADLINE_S"}


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, "").strip() or default)
    except ValueError:
        return default
    return value if value > 0 else default


def process_environ() -> dict[str, str]:
    """A copy of this process's environment, for building a child process's (the launcher)."""
    return dict(os.environ)


def _demo_engine(value: str, server_url: ServerURL,
                 extra: tuple[ServerURL, ...]) -> tuple[ServerURL, ...]:
    value = value.strip()
    if not value or value.lower() in _OFF:
        return ()
    if "://" not in value:  # "1": the configured servers are the engine
        return tuple(dict.fromkeys((server_url, *extra)))
    return url_list(value)


def url_list(value: str) -> tuple[ServerURL, ...]:
    """'a:1, http://b:2/v1,' -> ('http://a:1', 'http://b:2'): normalized, no repeats."""
    return tuple(dict.fromkeys(ServerURL(u) for u in value.split(",") if u.strip()))


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


def normalize_base_url(url: str) -> ServerURL:
    """'localhost:1234/v1/' -> 'http://localhost:1234' (see atom_core/url.py: where a URL enters
    ATOM, make a ServerURL and pass that on)."""
    return ServerURL(url)
