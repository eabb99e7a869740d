"""A stateful chat in real headless Chromium: pick LM Studio's native route in the Chat page's
Settings, talk two turns, and check on the double that the second request carried
`previous_response_id` and not the history (issue 11)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import App, Double, ask, open_app, save_shot, wait_idle

pytestmark = pytest.mark.e2e

CONFIG = {"models": [{"key": "test/alpha", "loaded": True, "ttft_ms": 50, "token_gap_ms": 10,
                      "reply_tokens": 12}]}


def send_and_wait(pg: Any, text: str, replies: int) -> None:
    box = pg.locator("[data-testid=stChatInputTextArea]")
    box.fill(text)
    box.press("Enter")
    expect(pg.locator("[data-testid=stChatMessage]")).to_have_count(replies * 2, timeout=20_000)
    wait_idle(pg)


def test_a_native_chat_continues_from_the_stored_response(app: App, double: Double,
                                                           page: Any) -> None:
    double.set_config(CONFIG)
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    page.get_by_role("button", name=re.compile("Settings")).first.click()
    page.get_by_role("combobox", name="Route", exact=True).click()
    page.get_by_role("option", name=re.compile("LM Studio native")).first.click()
    wait_idle(page)
    page.keyboard.press("Escape")

    send_and_wait(page, "Hello there, remember me", 1)
    send_and_wait(page, "What did I say?", 2)
    texts = page.locator("[data-testid=stChatMessage]").all_inner_texts()
    assert len(texts) == 4 and all("Reply from test/alpha" in t for t in texts[1::2])
    expect(page.locator("[data-testid=stException]")).to_have_count(0)

    first, second = [r for r in double.log() if r["path"] == "/api/v1/chat"]
    assert "previous_response_id" not in first["body"]
    assert second["body"]["previous_response_id"].startswith("resp_")
    assert second["body"]["input"] == "What did I say?"  # the new message only, no history
    main = page.locator("[data-testid=stMainBlockContainer]").inner_text()
    assert "continuing response resp_" in main
    save_shot(page, "chat-native-route.png")


def test_an_arena_race_of_one_model_over_two_routes_shows_the_route_row(
        app: App, double: Double, page: Any) -> None:
    double.set_config(CONFIG)  # one model: both slots race it
    open_app(page, f"{app.url}/arena", "[data-testid=stChatInputTextArea]")
    main = page.locator("#stMain")
    assert "Only one model here" in main.inner_text()
    main.get_by_role("button", name=re.compile("Settings")).nth(1).click()  # slot B's
    popover = page.locator("[data-testid=stPopoverBody]").filter(has_text="Route").last
    popover.get_by_role("combobox", name="Route", exact=True).click()
    page.get_by_role("option", name=re.compile("LM Studio native")).first.click()
    wait_idle(page)
    page.keyboard.press("Escape")
    wait_idle(page)

    ask(page, "Race yourself")
    page.wait_for_selector("text=Which answer is better?", timeout=30_000)
    wait_idle(page)
    body = main.inner_text()
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    # the results grid: a Route row naming each slot's route, in slot order
    route_line = next(line for line in body.splitlines() if line.startswith("Route"))
    rest = body[body.index(route_line):]
    assert rest.index("Chat completions (OpenAI)") < rest.index("LM Studio native")
    posts = [r["path"] for r in double.log() if r["method"] == "POST"]
    assert sorted(p for p in posts if p in ("/v1/chat/completions", "/api/v1/chat")) == [
        "/api/v1/chat", "/v1/chat/completions"]
    save_shot(page, "arena-two-routes.png")
