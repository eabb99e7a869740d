"""A picture sent from Chat over the Responses route, in real headless Chromium: attach it in
the sidebar, pick "Responses (OpenAI)" in the chat's Settings, send, and see the vision model's
reply name the image the server decoded (issue 12 §2)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

from atom_core import images
from tests.fixtures.browser import App, Double, open_app, save_shot, wait_idle

pytestmark = pytest.mark.e2e

CONFIG = {"models": [
    {"key": "v/eyes", "loaded": True, "capabilities": {"vision": True}, "ttft_ms": 30,
     "token_gap_ms": 10, "reply": "A blue rectangle."},
]}


def test_an_image_sent_over_the_responses_route_reaches_the_vision_model(
        app: App, double: Double, page: Any, tmp_path: Path) -> None:
    double.set_config(CONFIG)
    picture = tmp_path / "shot.png"
    Image.new("RGB", (2000, 1000), (10, 120, 200)).save(picture, "PNG")
    sent = images.prepare_image(picture.read_bytes())  # what ATOM will send: 1,024 x 512
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")

    page.get_by_role("button", name=re.compile("Settings")).first.click()
    page.get_by_role("combobox", name="Route", exact=True).click()
    page.get_by_role("option", name=re.compile("Responses")).first.click()
    wait_idle(page)
    page.keyboard.press("Escape")

    sidebar = page.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Attach images").click()
    sidebar.locator("input[type=file]").set_input_files(str(picture))
    page.wait_for_selector("text=1 image ·", timeout=20_000)
    wait_idle(page)

    box = page.locator("[data-testid=stChatInputTextArea]")
    box.fill("What is in this picture?")
    box.press("Enter")
    want = f"Saw 1 image: png 1024x512 ({len(sent.data)} bytes). A blue rectangle."
    page.locator("[data-testid=stChatMessage]").filter(has_text=want).wait_for(timeout=30_000)
    wait_idle(page)
    messages = page.locator("[data-testid=stChatMessage]")
    expect(messages).to_have_count(2)
    assert want in messages.nth(1).inner_text()
    expect(messages.nth(0).locator("img")).to_have_count(1)  # the thumbnail beside the question
    expect(page.locator("[data-testid=stException]")).to_have_count(0)

    (request,) = [r for r in double.log() if r["path"] == "/v1/responses"]
    parts = request["body"]["input"][-1]["content"]
    assert [p["type"] for p in parts] == ["input_text", "input_image"]
    assert parts[1]["image_url"] == sent.data_url
    assert request["images"][0]["bytes"] == len(sent.data)
    save_shot(page, "chat-image-responses-route.png")
