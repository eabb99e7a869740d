"""The door: a request whose Host does not name ATOM never reaches Streamlit.

A web page can make its own name resolve to 127.0.0.1 (DNS rebinding) and then talk to ATOM as
if it were the user: read `/_stcore/host-config`, open the websocket (whose first message says
where the app lives and which Streamlit and Python run it) and drive every page. `HostGuard` is
an ASGI middleware that answers such a request itself, before any of Streamlit's routes:

- HTTP, any path (`/`, `/_stcore/health`, `/_stcore/host-config`, static files): 403 and one
  plain-text sentence;
- the websocket: refused at the handshake (403), also when its Origin names another site (a
  page elsewhere opening a socket to 127.0.0.1 sends the right Host and its own Origin).

Allowed names are localhost, 127.0.0.1 and ::1 plus ATOM_ALLOWED_HOSTS, and in class mode this
machine's own LAN names and addresses (network.admitted_hosts: the in-app check's list too).
app.py installs it the way Streamlit 1.67 supports middleware: an `st.App(..., middleware=...)`
that `streamlit run app.py` finds and serves over uvicorn. The in-app check
(pages/parts/ui.refuse_foreign_host) stays for anything that runs the script without it.
No streamlit import here: this is plain ASGI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from ..config import host_allowed, settings_from_env
from ..network import admitted_hosts

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def refusal_sentence(host: str) -> str:
    """What a browser that reached ATOM by a name it does not answer to is told."""
    port = host.rpartition(":")[2]
    local = "http://localhost" + (f":{port}" if port.isdigit() else "")
    return (f"ATOM does not answer to the name “{host}”. Open it as {local} (or add the name "
            "to ATOM_ALLOWED_HOSTS to use it over your network).")


def origin_allowed(origin: str, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether a websocket's Origin header is a page served under a name ATOM answers to
    ("null", a sandboxed or file page, is not)."""
    netloc = urlsplit(origin.strip()).netloc if "://" in origin else ""
    return bool(netloc) and host_allowed(netloc, allowed)


class HostGuard:
    """ASGI middleware: refuses foreign Hosts (HTTP and websocket) and foreign Origins (the
    websocket) before the app behind it sees the request."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self.allowed = (admitted_hosts(settings_from_env()) if allowed_hosts is None
                        else allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        hosts = _header(scope, b"host")
        host = hosts[0] if len(hosts) == 1 else None
        refused = len(hosts) > 1 or not host_allowed(host, self.allowed)
        if not refused and kind == "websocket":
            origins = _header(scope, b"origin")
            refused = len(origins) > 1 or any(not origin_allowed(o, self.allowed)
                                              for o in origins)
        if not refused:
            await self.app(scope, receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect; closing before accepting refuses with 403
            await send({"type": "websocket.close", "code": 1008})
        else:
            body = refusal_sentence(", ".join(hosts)).encode()
            await send({"type": "http.response.start", "status": 403, "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ]})
            await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers") or []
            if key.lower() == name]
