"""Chat in real headless Chromium against `streamlit run app.py` and the LM Studio double."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.fixtures import ws_hold
from tests.fixtures.browser import (
    OUTPUT,
    PAGE_WAIT_MS,
    App,
    Double,
    open_app,
    save_shot,
    wait_idle,
)

pytestmark = pytest.mark.e2e

SLOW_ALPHA = {
    "models": [
        {"key": "test/alpha", "display_name": "Test Alpha 1B", "params_string": "1B",
         "loaded": True, "ttft_ms": 300, "token_gap_ms": 60, "reply_tokens": 40},
        {"key": "test/gamma", "display_name": "Test Gamma 3B", "loaded": False,
         "ttft_ms": 80, "token_gap_ms": 10},
    ]
}


def last_reply_text(pg: Any) -> str:
    messages = pg.locator("[data-testid=stChatMessage]")
    expect(messages.nth(1)).to_be_attached(timeout=PAGE_WAIT_MS)  # the first reply is drawn
    return str(messages.last.locator("[data-testid=stMarkdownContainer]").last.inner_text())


def stop_button(pg: Any) -> Any:
    """ATOM's Stop, beside the chat box while a reply streams."""
    return pg.locator("[data-testid=stBottom]").get_by_role("button", name="Stop")


def send(pg: Any, text: str) -> None:
    box = pg.locator("[data-testid=stChatInputTextArea]")
    box.fill(text)
    box.press("Enter")


def test_send_a_message_and_watch_it_stream(app: App, double: Double, page: Any) -> None:
    double.set_config(SLOW_ALPHA)
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    sidebar = page.locator("[data-testid=stSidebar]")
    assert "LM Studio 0.4+ (native API) · 2 models, 1 loaded" in sidebar.inner_text()

    send(page, "Hello there, who are you?")
    # Watch the reply grow while the server is still sending it.
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = last_reply_text(page)
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        if "thirty" in text and "▌" not in text:
            break
        time.sleep(0.05)
    wait_idle(page)
    final = last_reply_text(page)
    assert final.startswith("Reply from test/alpha:") and final.endswith("thirty-seven")
    partials = [s for s in seen if s.rstrip("▌") != final]
    assert len(partials) >= 3, f"the reply did not stream: {seen}"
    assert all(final.startswith(p.rstrip("▌").rstrip()) for p in partials)
    (request,) = double.chat_requests()
    assert request["completed"] and request["body"]["stream"] is True

    caption = page.locator("[data-testid=stChatMessage]").last.locator(
        "[data-testid=stCaptionContainer]").inner_text()
    assert "test/alpha" in caption and "40 tokens" in caption and "stop" in caption
    # The conversation is listed, and survives a reload.
    page.reload()
    open_app(page, app.url, "[data-testid=stChatMessage]")
    assert last_reply_text(page) == final
    save_shot(page, "chat.png", docs=True)


def test_stop_ends_the_upstream_request(app: App, double: Double, page: Any) -> None:
    double.set_config({"models": [{"key": "test/alpha", "loaded": True, "ttft_ms": 200,
                                   "token_gap_ms": 100, "reply_tokens": 200}]})
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    send(page, "Tell me a very long story")
    deadline = time.monotonic() + 15
    while len(last_reply_text(page).split()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_button(page).click()
    wait_idle(page)

    (request,) = double.chat_requests()
    assert request["closed_early"] and not request["completed"]
    assert request["tokens_sent"] < 100
    page.reload()
    open_app(page, app.url, "[data-testid=stChatMessage]")
    reply = page.locator("[data-testid=stChatMessage]").last
    assert "Stopped" in reply.inner_text()
    assert "Reply from test/alpha:" in reply.inner_text()


def test_server_down_shows_one_sentence_and_keeps_the_message(
    double: Double, page: Any, tmp_path: Any
) -> None:
    from tests.fixtures.browser import free_port, start_app, stop

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    app = start_app(dead, tmp_path / "data", tmp_path)
    try:
        open_app(page, app.url, "[data-testid=stChatInputTextArea]")
        sidebar = page.locator("[data-testid=stSidebar]").inner_text()
        assert f"Can't reach a model server at {dead}" in sidebar
        send(page, "Is anyone there?")
        wait_idle(page)
        page.wait_for_selector("[data-testid=stChatMessage] [data-testid=stAlert]")
        messages = page.locator("[data-testid=stChatMessage]")
        assert "Is anyone there?" in messages.first.inner_text()
        assert "lms server start" in messages.last.inner_text()
        expect(page.locator("[data-testid=stException]")).to_have_count(0)  # no traceback
        page.screenshot(path=str(OUTPUT / "chat-server-down.png"))
    finally:
        stop(app.process)


def test_closed_tab_and_killed_app_lose_nothing(double: Double, browser: Any,
                                                tmp_path: Any) -> None:
    """A tab closed mid-reply, then the app process killed mid-reply: on the next visit both
    replies are there as far as they got, and the killed one is marked Interrupted."""
    import os
    import signal

    from tests.fixtures.browser import start_app, stop

    double.set_config({"models": [{"key": "test/alpha", "loaded": True, "ttft_ms": 100,
                                   "token_gap_ms": 80, "reply_tokens": 300}]})
    data = tmp_path / "data"
    app = start_app(double.url, data, tmp_path)
    try:
        ctx = browser.new_context()
        tab = ctx.new_page()
        open_app(tab, app.url, "[data-testid=stChatInputTextArea]")
        send(tab, "first question")
        while len(last_reply_text(tab).split()) < 5:
            time.sleep(0.05)
        ctx.close()  # the user closes the tab mid-reply

        ctx = browser.new_context()
        tab = ctx.new_page()
        open_app(tab, app.url, "[data-testid=stChatInputTextArea]")
        send(tab, "second question")
        while len(last_reply_text(tab).split()) < 20:  # > 1 s of tokens: a save happened
            time.sleep(0.05)
        ctx.close()
    finally:
        os.kill(app.process.pid, signal.SIGKILL)  # a crash, not a clean stop
        app.process.wait()
        stop(app.process)

    from atom_core.history import open_store

    store = open_store(data)
    (conv,) = store.list_conversations()  # the second tab reopened the latest chat
    messages = store.messages(conv.id)
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    first, second = messages[1], messages[3]
    print("states after tab close and kill:", first.state, second.state)
    assert first.content.startswith("Reply from test/alpha: one two three")
    assert first.state in ("stopped", "complete", "interrupted")
    assert second.state == "interrupted"  # saved while streaming; the process never finished
    assert len(second.content.split()) >= 8

    app = start_app(double.url, data, tmp_path)
    try:
        ctx = browser.new_context()
        tab = ctx.new_page()
        open_app(tab, app.url, "[data-testid=stChatMessage]")
        replies = tab.locator("[data-testid=stChatMessage]")
        expect(replies).to_have_count(4)
        assert "Reply from test/alpha: one two three" in replies.nth(1).inner_text()
        last = replies.nth(3).inner_text()
        assert "Reply from test/alpha:" in last and "Interrupted" in last
        tab.screenshot(path=str(OUTPUT / "chat-after-crash.png"))
        ctx.close()
    finally:
        stop(app.process)


# -- what a first-time user trips over (issue 13) ------------------------------------------------

PICKABLE = {
    "models": [
        {"key": "test/alpha", "display_name": "Test Alpha 1B", "loaded": True, "ttft_ms": 50,
         "token_gap_ms": 5, "reply_tokens": 8},
        {"key": "test/beta", "display_name": "Test Beta 4B", "loaded": True, "ttft_ms": 50,
         "token_gap_ms": 5, "reply_tokens": 8},
        {"key": "test/gamma", "display_name": "Test Gamma 3B", "loaded": False, "ttft_ms": 50,
         "token_gap_ms": 5, "reply_tokens": 8, "load_time_ms": 100},
    ]
}


def reply_to(pg: Any, question: str, timeout_ms: int = PAGE_WAIT_MS) -> str:
    """The saved reply to `question` (the assistant message right after it), once it is drawn
    from the store: no cursor, and the script idle. A fresh session reopens the latest chat, so
    an older "Reply from ..." may already be on the page; only the reply after this question
    counts."""
    pg.wait_for_function(
        """(q) => {
            const app = document.querySelector('[data-testid=stApp]');
            if (!app || app.dataset.testScriptState !== 'notRunning') return false;
            const m = Array.from(document.querySelectorAll('[data-testid=stChatMessage]'));
            const i = m.findIndex(e => e.innerText.trim().endsWith(q));
            const r = i >= 0 ? m[i + 1] : undefined;
            return !!r && r.innerText.includes('Reply from') && !r.innerText.includes('\u258c')
                && !!r.querySelector('[data-testid=stCaptionContainer]');
        }""", arg=question, timeout=timeout_ms)
    messages = pg.locator("[data-testid=stChatMessage]")
    texts = messages.all_inner_texts()
    at = max(n for n, t in enumerate(texts) if t.strip().endswith(question))
    return texts[at + 1]


def test_a_model_picked_right_after_opening_sticks(app: App, double: Double, browser: Any
                                                   ) -> None:
    """Fresh sessions, each: one pick typed into the filter as soon as the picker shows, then
    one message at once. Every request names the model that was picked."""
    double.set_config(PICKABLE)
    wanted = ["test/gamma", "test/beta", "test/gamma", "test/beta"]
    names = {"test/beta": "Test Beta 4B", "test/gamma": "Test Gamma 3B"}
    for i, key in enumerate(wanted):
        ctx = browser.new_context()
        pg = ctx.new_page()
        try:
            pg.goto(app.url)
            box = pg.get_by_role("combobox", name="Model", exact=True)
            box.wait_for(timeout=PAGE_WAIT_MS)
            box.click()
            pg.keyboard.type(key.split("/")[1][:3], delay=40)
            pg.get_by_role("option", name=names[key]).first.click()
            send(pg, f"question {i}")
            reply = reply_to(pg, f"question {i}")
        finally:
            ctx.close()
        models = [r["model"] for r in double.chat_requests()]
        assert models[-1:] == [key], f"try {i}: picked {key}, the requests named {models}"
        assert f"Reply from {key}:" in reply, f"try {i}: picked {key}, shown {reply!r}"
    assert [r["model"] for r in double.chat_requests()] == wanted


def test_stop_shows_the_saved_reply_marked_stopped_at_once(app: App, double: Double,
                                                           page: Any) -> None:
    double.set_config({"models": [{"key": "test/alpha", "loaded": True, "ttft_ms": 100,
                                   "token_gap_ms": 100, "reply_tokens": 300}]})
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    send(page, "Tell me a very long story")
    deadline = time.monotonic() + 15
    while len(last_reply_text(page).split()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_button(page).click()
    # No reload: the page itself shows the saved reply, marked Stopped, with Regenerate.
    page.get_by_role("button", name="Regenerate").wait_for(timeout=PAGE_WAIT_MS)
    reply = page.locator("[data-testid=stChatMessage]").last
    reply.get_by_text("Stopped").wait_for(timeout=PAGE_WAIT_MS)
    text = reply.inner_text()
    assert "▌" not in text and "Reply from test/alpha:" in text
    shown = reply.locator("[data-testid=stMarkdownContainer]").first.inner_text()
    page.reload()
    open_app(page, app.url, "[data-testid=stChatMessage]")
    saved = page.locator("[data-testid=stChatMessage]").last.locator(
        "[data-testid=stMarkdownContainer]").first.inner_text()
    assert saved == shown  # what the page showed is what was saved


def test_stop_before_the_first_token(app: App, double: Double, page: Any) -> None:
    double.set_config({"models": [{"key": "test/alpha", "loaded": True, "ttft_ms": 8000,
                                   "token_gap_ms": 50, "reply_tokens": 20}]})
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    send(page, "Anyone?")
    page.get_by_text("waiting for the first token").wait_for(timeout=PAGE_WAIT_MS)
    stop_button(page).click()
    page.get_by_role("button", name="Regenerate").wait_for(timeout=PAGE_WAIT_MS)
    wait_idle(page)
    main = page.locator("[data-testid=stMainBlockContainer]").inner_text()
    assert "waiting for the first token" not in main
    assert "Stopped" in page.locator("[data-testid=stChatMessage]").last.inner_text()


def test_a_bookmark_of_chat_opens_chat_on_every_visit(app: App, browser: Any) -> None:
    for visit in range(3):  # the first visit runs on a fresh server; the later ones did not
        ctx = browser.new_context()
        pg = ctx.new_page()
        try:
            open_app(pg, app.url + "/chat", "[data-testid=stChatInputTextArea]")
            pg.wait_for_timeout(500)
            expect(pg.get_by_text("Page not found"), f"visit {visit}").to_have_count(0)
            expect(pg.locator("[role=dialog]"), f"visit {visit}").to_have_count(0)
            send(pg, f"hello {visit}")
            assert "Reply from test/alpha:" in reply_to(pg, f"hello {visit}"), f"visit {visit}"
        finally:
            ctx.close()


def test_a_message_sent_as_the_server_changes_is_answered(app: App, double: Double,
                                                          page: Any) -> None:
    """The sidebar follows what the server has loaded (LM Studio's own TTL, another app). A
    message sent just after that changed is sent, never dropped by a run that restarts itself
    to redraw the sidebar (the run that read the message is the one that must send it)."""
    double.set_config(PICKABLE)
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    for i in range(3):
        other = {"key": "test/delta", "display_name": "Test Delta", "loaded": i % 2 == 0}
        double.set_config({"models": [*PICKABLE["models"], other]})  # loaded count changes
        send(page, f"question {i}")
        try:
            reply = reply_to(page, f"question {i}")
        except PlaywrightTimeout:
            models = [r["model"] for r in double.chat_requests()]
            raise AssertionError(f"question {i} got no reply; the requests: {models}") from None
        assert "Reply from test/alpha:" in reply
    assert [r["model"] for r in double.chat_requests()] == ["test/alpha"] * 3


def test_a_pick_made_while_a_reply_streams_is_used_by_the_next_message(
        app: App, double: Double, page: Any) -> None:
    """Picking another model mid-reply ends that reply (the run that streamed it is replaced);
    the next message goes to the new pick and is answered."""
    double.set_config({"models": [
        {"key": "test/alpha", "display_name": "Test Alpha 1B", "loaded": True, "ttft_ms": 50,
         "token_gap_ms": 80, "reply_tokens": 200},
        {"key": "test/beta", "display_name": "Test Beta 4B", "loaded": True, "ttft_ms": 50,
         "token_gap_ms": 5, "reply_tokens": 8}]})
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    send(page, "a long one")
    page.get_by_text("Reply from test/alpha: one two").wait_for(timeout=PAGE_WAIT_MS)
    page.get_by_role("combobox", name="Model", exact=True).click()
    page.get_by_role("option", name="Test Beta 4B").first.click()
    send(page, "and now you")
    try:
        reply = reply_to(page, "and now you")
    except PlaywrightTimeout:
        models = [r["model"] for r in double.chat_requests()]
        raise AssertionError(f"the second message got no reply; the requests: {models}") from None
    assert "Reply from test/beta:" in reply
    assert [r["model"] for r in double.chat_requests()] == ["test/alpha", "test/beta"]


MID_REPLY = {"models": [
    {"key": "test/alpha", "display_name": "Test Alpha 1B", "loaded": True, "ttft_ms": 50,
     "token_gap_ms": 80, "reply_tokens": 200},
    {"key": "test/beta", "display_name": "Test Beta 4B", "loaded": True, "ttft_ms": 50,
     "token_gap_ms": 5, "reply_tokens": 8}]}


def test_a_message_sent_while_a_reply_streams_stops_it_and_is_answered(
        app: App, double: Double, page: Any) -> None:
    """The chat box stays usable while a reply streams (pages/parts/chat_box.py): sending
    replaces the run that streamed, like a model pick. The cut reply is kept, marked Stopped,
    and is part of what the next request sends; the new message is answered."""
    double.set_config(MID_REPLY)
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    send(page, "a long one")
    page.get_by_text("Reply from test/alpha: one two").wait_for(timeout=PAGE_WAIT_MS)
    send(page, "and a short one")
    assert "Reply from test/alpha:" in reply_to(page, "and a short one")
    cut = page.locator("[data-testid=stChatMessage]").nth(1).inner_text()
    assert "Stopped" in cut and "Reply from test/alpha: one two" in cut
    first, second = double.chat_requests()
    assert first["closed_early"] and not first["completed"]
    sent = [m["content"] for m in second["body"]["messages"]]
    assert sent[0] == "a long one" and sent[1].startswith("Reply from test/alpha: one two")
    assert sent[-1] == "and a short one"


def test_the_chat_box_works_after_a_mid_reply_pick_on_a_busy_browser(
        app: App, double: Double, page: Any) -> None:
    """A model picked mid-reply replaces the run that streamed. The browser here reads the
    server's messages late and all at once, as a busy one does: the end of the pick's run and,
    right behind it, a fragment's run (its timer fired as the pick was sent). Streamlit's
    stop-mode chat box stayed disabled after that burst (issue 18, 3 of 5 runs on a busy
    machine); ATOM's box is enabled by the pick's run, and the next message goes to the pick."""
    double.set_config(MID_REPLY)
    page.add_init_script(ws_hold.HOLD_WS)
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    send(page, "a long one")
    page.get_by_text("Reply from test/alpha: one two").wait_for(timeout=PAGE_WAIT_MS)
    page.get_by_role("combobox", name="Model", exact=True).click()
    ws_hold.hold(page)
    page.get_by_role("option", name="Test Beta 4B").first.click()
    ws_hold.wait_held(page, ws_hold.full_run_then_fragment_run, PAGE_WAIT_MS / 1000,
                      "the pick's run ending, then a fragment's run")
    assert ws_hold.fragment_reruns_sent(page) >= 1
    ws_hold.release(page)
    box = page.locator("[data-testid=stChatInputTextArea]")
    expect(box).to_be_enabled(timeout=PAGE_WAIT_MS)
    send(page, "and now you")
    assert "Reply from test/beta:" in reply_to(page, "and now you")
    assert [r["model"] for r in double.chat_requests()] == ["test/alpha", "test/beta"]


# Counts finished script runs (the app's script state going from running to notRunning), so a
# test can wait for the run a click started to end: right after a click the state can still read
# notRunning for most of a second on a busy machine, before that run has even begun.
COUNT_RUNS = """
window.__atomRuns = 0;
new MutationObserver((records) => {
  for (const r of records)
    if (r.oldValue === 'running' && r.target.dataset.testScriptState === 'notRunning')
      window.__atomRuns += 1;
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ['data-test-script-state']});
"""


def after_run(pg: Any, action: Callable[[], object]) -> None:
    """Does `action` (a click that reruns the app) and waits for that run to end."""
    before = pg.evaluate("() => window.__atomRuns")
    action()
    pg.wait_for_function("(n) => window.__atomRuns > n", arg=before, timeout=PAGE_WAIT_MS)
    wait_idle(pg)


def open_chat_settings(pg: Any) -> Any:
    """Opens the chat's Settings popover; returns its Idle TTL field."""
    pg.locator("[data-testid=stMainBlockContainer]").get_by_role(
        "button", name="Settings").click()
    field = pg.get_by_role("spinbutton", name="Idle TTL (seconds)")
    field.wait_for(timeout=PAGE_WAIT_MS)
    return field


def test_the_default_idle_ttl_is_sent_after_new_chat_and_a_pick(app: App, double: Double,
                                                                  browser: Any) -> None:
    """Settings' idle TTL is the chat's default: the field shows it and the request sends it,
    also when the chat's Settings popover is first opened after a rerun (New chat, a model
    pick, a message sent). Each case in a fresh session."""
    from atom_core.settings.store import open_settings

    double.set_config(PICKABLE)
    open_settings(app.data_dir).set_ttl(1200)

    def new_chat(pg: Any) -> None:
        after_run(pg, pg.locator("[data-testid=stSidebar]").get_by_role(
            "button", name="New chat").click)

    def pick(pg: Any) -> None:
        pg.get_by_role("combobox", name="Model", exact=True).click()
        after_run(pg, pg.get_by_role("option", name="Test Beta 4B").first.click)

    def message(pg: Any) -> None:
        send(pg, "before the popover")
        reply_to(pg, "before the popover")

    for i, (when, step) in enumerate([("after New chat", new_chat), ("after a pick", pick),
                                      ("after a message", message)]):
        ctx = browser.new_context(viewport={"width": 1360, "height": 900})
        ctx.add_init_script(COUNT_RUNS)
        pg = ctx.new_page()
        try:
            open_app(pg, app.url, "[data-testid=stChatInputTextArea]")
            step(pg)
            shown = open_chat_settings(pg).input_value()
            pg.keyboard.press("Escape")
            send(pg, f"question {i}")
            reply_to(pg, f"question {i}")
        finally:
            ctx.close()
        body = double.chat_requests()[-1]["body"]
        assert (shown, body.get("ttl")) == ("1200", 1200), f"{when}: field {shown!r}, sent {body}"


def test_a_models_own_preset_picked_with_the_popover_closed_is_sent(app: App, double: Double,
                                                                    page: Any) -> None:
    """A model with its own preset (Settings) picked in the sidebar while the chat's Settings
    popover is closed: after another rerun (New chat) the popover shows the preset's values and
    the request sends them."""
    from atom_core.settings.store import make_preset, open_settings

    double.set_config(PICKABLE)
    settings = open_settings(app.data_dir)
    settings.save_preset(make_preset("Precise", temperature=0.2, top_k=20))
    settings.set_model_preset("test/beta", "Precise")
    page.add_init_script(COUNT_RUNS)
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    page.get_by_role("combobox", name="Model", exact=True).click()
    after_run(page, page.get_by_role("option", name="Test Beta 4B").first.click)
    after_run(page, page.locator("[data-testid=stSidebar]").get_by_role(
        "button", name="New chat").click)
    open_chat_settings(page)
    shown = [page.get_by_role("spinbutton", name=n, exact=True).input_value()
             for n in ("Temperature", "Top K")]
    page.keyboard.press("Escape")
    send(page, "precise please")
    reply_to(page, "precise please")
    body = double.chat_requests()[-1]["body"]
    assert (shown, body.get("temperature"), body.get("top_k")) == (["0.20", "20"], 0.2, 20), body


def test_a_chats_route_is_kept_when_its_settings_are_opened_later(app: App, double: Double,
                                                                  page: Any) -> None:
    """A chat on LM Studio's native route, its Settings popover opened again after a few
    replies: the route is still shown and used (it came up as the first route and the chat
    switched to it, issue 18)."""
    double.set_config({"models": [{"key": "test/alpha", "loaded": True, "ttft_ms": 50,
                                   "token_gap_ms": 10, "reply_tokens": 12}]})
    page.add_init_script(COUNT_RUNS)
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    open_chat_settings(page)
    page.get_by_role("combobox", name="Route", exact=True).click()
    after_run(page, page.get_by_role("option", name=re.compile("LM Studio native")).first.click)
    page.keyboard.press("Escape")
    for question in ("one", "two"):
        send(page, question)
        reply_to(page, question)
    open_chat_settings(page)
    shown = page.get_by_role("combobox", name="Route", exact=True).input_value()
    page.keyboard.press("Escape")
    send(page, "three")
    reply_to(page, "three")
    routes = [r["path"] for r in double.log() if "chat" in r["path"]]
    assert "LM Studio native" in shown and routes == ["/api/v1/chat"] * 3, (shown, routes)
