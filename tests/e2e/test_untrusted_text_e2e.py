"""Untrusted text never makes the browser fetch anything (issue 14 §1), and ATOM refuses a
foreign Host header (§6: DNS rebinding), in real headless Chromium.

Every piece of text ATOM did not write carries images pointing at a local beacon server: model
keys and display names, instance ids, replies, reasoning, server error sentences, the user's own
message (and so the conversation title), saved profile, preset and template names. After Chat,
Arena, Models, Settings and Stats have shown all of it, the beacon must have 0 hits; then the
Chat's "Show images from 127.0.0.1" action loads them, which proves the beacon would have seen a
fetch."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.fixtures.beacon import Beacon, serve_beacon, serve_hostile
from tests.fixtures.browser import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    OUTPUT,
    ROOT,
    Double,
    ask,
    open_app,
    start_app,
    stop,
    wait_idle,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def beacon() -> Iterator[Beacon]:
    with serve_beacon() as b:
        yield b


def config(b: Beacon) -> dict[str, Any]:
    md = f"![k]({b.url}/in-the-name.gif)"
    return {"models": [
        {"key": f"evil{md}", "display_name": f"Evil {md}", "loaded": True, "ttft_ms": 50,
         "token_gap_ms": 5, "reply": "Here you go. " + b.images("reply"),
         "reasoning": "Thinking " + b.images("reasoning")},
        {"key": f"fails{md}", "display_name": "Failing model", "loaded": True,
         "fail_mode": "error_before_stream"},
    ]}


def seed_settings(data_dir: Path, b: Beacon, server: str) -> None:
    md = f"![x]({b.url}/settings.gif)"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "settings.json").write_text(json.dumps({
        "profiles": [{"name": f"Profile {md}", "url": server}],
        "presets": [{"name": f"Preset {md}", "temperature": 0.5}],
        "templates": [{"name": f"Template {md}", "text": f"System {md}"}],
    }))


def go(pg: Any, name: str, ready: str) -> None:
    pg.locator(".st-key-atom_nav").get_by_role("link", name=name).click()
    pg.wait_for_selector(ready, timeout=30_000)
    time.sleep(0.3)
    wait_idle(pg)


def no_fetch(b: Beacon, where: str, pg: Any = None) -> None:
    time.sleep(0.5)  # an image, if one was drawn, has had time to load
    found = pg.evaluate(
        "() => Array.from(document.querySelectorAll('img'))"
        ".filter(i => i.src.includes('127.0.0.1'))"
        ".map(i => { let p = i, out = []; while (p) { if (p.dataset && p.dataset.testid) "
        "out.push(p.dataset.testid); p = p.parentElement } return i.src + ' in ' + out.join('<') })"
    ) if pg is not None else []
    assert b.hits == [], f"{where}: the browser fetched {b.hits} {found}"


def settle(pg: Any) -> None:
    time.sleep(0.3)
    wait_idle(pg)


def test_no_page_fetches_what_untrusted_text_points_at(
    double: Double, beacon: Beacon, page: Any, tmp_path: Path
) -> None:
    double.set_config(config(beacon))
    seed_settings(tmp_path / "data", beacon, double.url)
    app = start_app(double.url, tmp_path / "data", tmp_path)
    try:
        pg = page
        open_app(pg, app.url, "[data-testid=stChatInputTextArea]")
        # Chat: the user's message (and title), a streamed reply with reasoning, a server error.
        ask(pg, "Please show " + beacon.images("prompt"))
        pg.wait_for_selector("text=Here you go", timeout=30_000)
        settle(pg)
        pg.get_by_role("combobox", name="Model", exact=True).click()
        pg.get_by_role("option", name="Failing model").click()
        settle(pg)
        ask(pg, "And again " + beacon.images("prompt2"))
        pg.wait_for_selector("[data-testid=stAlertContentError]", timeout=30_000)
        settle(pg)
        pg.get_by_text("Reasoning").first.click()  # open the saved reasoning
        settle(pg)
        main = pg.inner_text("#stMain")
        assert "image from 127.0.0.1" in main and "crashed" in main
        no_fetch(beacon, "Chat")

        # Arena: both models race; one answers with images, one fails with its name in the error.
        go(pg, "Arena", "[data-testid=stChatInputTextArea]")
        ask(pg, "Race " + beacon.images("arena"))
        pg.wait_for_selector("text=Which answer is better?", timeout=60_000)
        settle(pg)
        assert "image from 127.0.0.1" in pg.inner_text("#stMain")
        no_fetch(beacon, "Arena")

        go(pg, "Models", "[data-testid=stDataFrame]")
        assert "evil" in pg.inner_text("#stMain")
        no_fetch(beacon, "Models")
        go(pg, "Settings", "text=Profile")
        for tab in ("Presets", "Chat defaults", "Data", "Servers"):
            pg.get_by_role("tab", name=tab).click()
            settle(pg)
            no_fetch(beacon, f"Settings, {tab}")
        go(pg, "Stats", "[data-testid=stTabs]")
        no_fetch(beacon, "Stats", pg)
        go(pg, "Chat", "[data-testid=stChatInputTextArea]")
        time.sleep(1.0)  # images, if any were drawn, have had time to load
        assert beacon.hits == []

        # The one way to see them: ask, per message and host.
        pg.get_by_role("button", name="Show images from 127.0.0.1").first.click()
        settle(pg)
        # Only that message's images (the first message: the user's prompt), only from Markdown.
        # Each image loads on its own: on a busy machine the footnote's came seconds after the
        # others, so wait for all three (a bound, not a speed), then a moment for any extra one.
        wanted = ["/prompt-footnote.gif", "/prompt-inline.gif", "/prompt-ref.gif"]
        deadline = time.monotonic() + 30
        while len(set(beacon.hits)) < len(wanted) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert beacon.hits, "the beacon saw nothing even when asked to: the test would be blind"
        time.sleep(1.0)
        assert sorted(beacon.hits) == wanted, beacon.hits
    finally:
        stop(app.process)


def noted(b: Beacon, tag: str) -> str:
    """Text with a GFM footnote whose definition holds an image pointing at the beacon."""
    return f"Words about {tag}[^{tag}] and more.\n\n{b.footnote(tag)}"


def imported_conversation(b: Beacon) -> dict[str, Any]:
    """An ATOM export holding one conversation whose every untrusted field has a footnote."""
    return {"format": "atom-export", "version": 1, "conversations": [{
        "title": "Footnotes", "messages": [
            {"role": "user", "content": noted(b, "imp-user")},
            {"role": "assistant", "content": noted(b, "imp-reply"),
             "reasoning": noted(b, "imp-reasoning")},
            {"role": "assistant", "content": "Half", "state": "interrupted",
             "error": noted(b, "imp-interrupted")},
            {"role": "assistant", "content": "", "state": "error",
             "error": noted(b, "imp-error")},
        ]}]}


def test_footnote_images_in_server_errors_and_imports_fetch_nothing(
    beacon: Beacon, page: Any, tmp_path: Path
) -> None:
    """Issue 23 §1: a footnote definition holding an image, in a server's error body (the
    sidebar's status line on every page, no click) and in an imported conversation (message
    text, error fields, reasoning in a collapsed expander)."""
    export = tmp_path / "export.json"
    export.write_text(json.dumps(imported_conversation(beacon)))
    with serve_hostile(noted(beacon, "status")) as server:
        app = start_app(server, tmp_path / "data", tmp_path)
        try:
            pg = page
            status = "[data-testid=stSidebar] [data-testid=stAlert]"
            open_app(pg, app.url, status)
            no_fetch(beacon, "the sidebar's status line, Chat", pg)
            assert "image from 127.0.0.1" in pg.inner_text(status)
            for name in ("Arena", "Stats", "Models"):
                go(pg, name, status)
                no_fetch(beacon, f"the sidebar's status line, {name}", pg)
            go(pg, "Settings", "[data-testid=stTabs]")
            pg.get_by_role("tab", name="Data").click()
            pg.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(str(export))
            pg.get_by_role("button", name="Import", exact=True).click()
            pg.wait_for_selector("text=Imported 1 conversation", timeout=30_000)
            settle(pg)
            go(pg, "Chat", "[data-testid=stSidebar] >> text=Footnotes")
            pg.locator("[data-testid=stSidebar]").get_by_role("button", name="Footnotes").click()
            pg.wait_for_selector("[data-testid=stExpander]", timeout=30_000)
            settle(pg)
            main = pg.inner_text("#stMain")
            assert main.count("image from 127.0.0.1") >= 3, main  # user, reply, two errors
            no_fetch(beacon, "an imported conversation", pg)

            # Not blind: asked to, the page loads the user's footnote image from the beacon.
            pg.get_by_role("button", name="Show images from 127.0.0.1").first.click()
            settle(pg)
            deadline = time.monotonic() + 10
            while not beacon.hits and time.monotonic() < deadline:
                time.sleep(0.2)
            assert beacon.hits == ["/imp-user-footnote.gif"], beacon.hits
        finally:
            stop(app.process)


def test_a_foreign_host_name_is_refused_and_localhost_works(
    double: Double, browser: Any, tmp_path: Path
) -> None:
    app = start_app(double.url, tmp_path / "data", tmp_path)
    port = app.url.rsplit(":", 1)[1]
    other = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[*CHROMIUM_FLAGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"])
    try:
        pg = other.new_page()
        answer = pg.goto(f"http://evil.example:{port}/")
        assert answer is not None and answer.status == 403  # Streamlit never answered
        body = pg.inner_text("body")
        assert "ATOM does not answer to the name “evil.example" in body
        assert f"http://localhost:{port}" in body
        pg.screenshot(path=str(OUTPUT / "refused-host.png"))
        expect(pg.locator("[data-testid=stApp]")).to_have_count(0)  # no app, no sidebar, no pages
        for path in ("/settings", "/_stcore/health", "/_stcore/host-config"):
            answer = pg.goto(f"http://evil.example:{port}{path}")
            assert answer is not None and answer.status == 403, path
            assert "does not answer" in pg.inner_text("body")
        assert not [r for r in double.log() if not r["path"].startswith("/__")], \
            "a refused page made ATOM talk to the model server"

        pg.goto(f"http://localhost:{port}/")
        pg.wait_for_selector("[data-testid=stChatInputTextArea]", timeout=30_000)
        wait_idle(pg)
        assert "does not answer" not in pg.locator("[data-testid=stApp]").inner_text()
    finally:
        other.close()
        stop(app.process)


def ws_handshake(port: int, host: str, origin: str | None = None) -> int | str:
    """Opens Streamlit's websocket on 127.0.0.1:`port` naming `host` (and `origin`): the HTTP
    status a refusal answers with, or "accepted"."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    headers = {"Origin": origin} if origin else {}
    try:
        with connect(f"ws://{host}/_stcore/stream", additional_headers=headers,
                     sock=socket.create_connection(("127.0.0.1", port)), open_timeout=30):
            return "accepted"
    except InvalidStatus as e:
        return int(e.response.status_code)


def test_a_foreign_host_or_origin_is_refused_before_streamlit_answers(
    double: Double, tmp_path: Path
) -> None:
    """Issue 23 §4, at the HTTP level and with a websocket client against `streamlit run
    app.py`: every route and the websocket answer a foreign Host with 403 (they answered 200
    and accepted it, and the socket's first message told the app's path and versions); a
    foreign Origin on the websocket is refused too. ATOM_ALLOWED_HOSTS still opens the door."""
    app = start_app(double.url, tmp_path / "data", tmp_path,
                    extra_env={"ATOM_ALLOWED_HOSTS": "atom-box.lan"})
    port = int(app.url.rsplit(":", 1)[1])
    try:
        for path in ("/", "/chat", "/_stcore/health", "/_stcore/host-config",
                     "/_stcore/stream", "/static/favicon.png"):
            r = httpx.get(f"{app.url}{path}", headers={"Host": f"evil.example:{port}"})
            assert r.status_code == 403, (path, r.status_code)
            assert r.text.startswith("ATOM does not answer to the name “evil.example"), r.text
            assert "streamlit" not in r.text.lower() and str(ROOT) not in r.text
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
                        "Connection: close\r\n\r\n".encode())
            status = raw.makefile("rb").readline().split()[1]
        assert status in (b"400", b"403")  # two Host headers: refused, whoever says so
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"atom-box.lan:{port}"):
            assert httpx.get(f"{app.url}/_stcore/health", headers={"Host": host}).status_code \
                == 200, host
        assert ws_handshake(port, f"evil.example:{port}") == 403
        assert ws_handshake(port, f"127.0.0.1:{port}", "http://evil.example") == 403
        assert ws_handshake(port, f"127.0.0.1:{port}", "null") == 403
        assert ws_handshake(port, f"127.0.0.1:{port}", f"http://localhost:{port}") == "accepted"
        assert ws_handshake(port, f"127.0.0.1:{port}") == "accepted"  # not a browser
    finally:
        stop(app.process)
