"""atom_core.launch.host_guard: a foreign Host or Origin is answered before the app behind the
guard sees the request (issue 23 §4). Plain ASGI, driven without sockets."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from atom_core.launch.host_guard import HostGuard, origin_allowed, refusal_sentence


def run(scope: dict[str, Any], allowed: frozenset[str] = frozenset()
        ) -> tuple[list[dict[str, Any]], list[str]]:
    """What the guard sent, and which scopes reached the app behind it."""
    sent: list[dict[str, Any]] = []
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    # A thread of its own: the test must not depend on whether the thread that runs it already
    # has an event loop running (Playwright's sync API leaves one in pytest's main thread).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, HostGuard(app, allowed)(scope, receive, send)).result()
    return sent, reached


def scope(kind: str, *headers: tuple[str, str]) -> dict[str, Any]:
    return {"type": kind, "path": "/_stcore/host-config",
            "headers": [(k.encode(), v.encode()) for k, v in headers]}


@pytest.mark.parametrize("host", ["127.0.0.1:8501", "localhost:8501", "LocalHost.", "[::1]:8501"])
def test_loopback_names_reach_the_app(host: str) -> None:
    assert run(scope("http", ("host", host))) == ([], ["http"])
    assert run(scope("websocket", ("host", host), ("origin", f"http://{host}"))) == (
        [], ["websocket"])


def test_a_foreign_host_gets_403_and_one_sentence_over_http() -> None:
    sent, reached = run(scope("http", ("host", "evil.example:8501")))
    assert reached == []
    assert sent[0]["status"] == 403
    assert (b"content-type", b"text/plain; charset=utf-8") in sent[0]["headers"]
    assert sent[1]["body"].decode() == refusal_sentence("evil.example:8501")
    assert "http://localhost:8501" in sent[1]["body"].decode()


@pytest.mark.parametrize("headers", [
    (("host", "evil.example"),),
    (("host", "127.0.0.1"), ("origin", "http://evil.example")),
    (("host", "127.0.0.1"), ("origin", "null")),
    (("host", "127.0.0.1"), ("origin", "http://127.0.0.1"), ("origin", "http://evil.example")),
])
def test_the_websocket_is_refused_for_a_foreign_host_or_origin(
        headers: tuple[tuple[str, str], ...]) -> None:
    sent, reached = run(scope("websocket", *headers))
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]


def test_two_host_headers_are_refused_and_other_scopes_pass() -> None:
    sent, reached = run(scope("http", ("host", "127.0.0.1"), ("host", "evil.example")))
    assert reached == [] and sent[0]["status"] == 403
    assert run({"type": "lifespan"}) == ([], ["lifespan"])
    assert run(scope("http")) == ([], ["http"])  # no Host at all: not a browser


def test_allowed_hosts_open_the_door() -> None:
    lan = frozenset({"atom-box.lan"})
    assert run(scope("http", ("host", "atom-box.lan:8501")), lan)[1] == ["http"]
    assert run(scope("websocket", ("host", "atom-box.lan"), ("origin", "https://atom-box.lan")),
               lan)[1] == ["websocket"]
    assert run(scope("http", ("host", "evil.example")), frozenset({"*"}))[1] == ["http"]
    assert not origin_allowed("evil.example", lan)  # not a URL


def test_class_mode_admits_this_machines_lan_names_at_the_door(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Phones open the teacher's machine by its LAN address: the guard in front of Streamlit
    admits what the in-app check admits (network.admitted_hosts), or no phone gets in."""
    from atom_core import network

    monkeypatch.setattr(network, "class_hosts", lambda: frozenset({"192.168.1.20", "atom-box"}))

    def reached(host: str) -> list[str]:
        sent: list[dict[str, Any]] = []
        got: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            got.append(scope["type"])

        async def send(message: Any) -> None:
            sent.append(dict(message))

        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        asyncio.run(HostGuard(app)(scope("http", ("host", host)), receive, send))
        return got

    monkeypatch.setenv("ATOM_CLASS", "1")
    assert reached("192.168.1.20:8501") == ["http"] and reached("atom-box:8501") == ["http"]
    assert reached("evil.example") == []  # a name another machine controls: still refused
    monkeypatch.delenv("ATOM_CLASS")
    assert reached("192.168.1.20:8501") == []  # outside class mode: loopback only
