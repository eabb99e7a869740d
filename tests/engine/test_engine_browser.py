"""The app in real Chromium, talking to the real demo engine: what a newcomer sees after `make run`
on a machine with no LM Studio."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from atom_core import demo
from tests.e2e.conftest import CHROMIUM, ROOT, open_app, start_app, stop, wait_idle
from tests.engine.conftest import MODEL_A

pytestmark = [
    pytest.mark.engine,
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}"),
]

OUTPUT = ROOT / "test-output" / "engine"


def test_chat_with_the_demo_engine_in_the_browser(
    demo_engine: demo.DemoEngine, page: Any, tmp_path: Path
) -> None:
    env = demo_engine.app_env({})  # what the launcher gives the app
    app = start_app(env["ATOM_SERVER_URL"], tmp_path / "data", tmp_path, extra_env={
        "ATOM_EXTRA_SERVERS": env["ATOM_EXTRA_SERVERS"],
        "ATOM_DEMO_ENGINE": env["ATOM_DEMO_ENGINE"]})
    try:
        open_app(page, app.url, "[data-testid=stChatInputTextArea]")
        sidebar = page.locator("[data-testid=stSidebar]").inner_text()
        assert "Bundled demo engine (Gemma 3 270M on CPU)" in sidebar
        assert "lms server start" in sidebar
        assert "OpenAI-compatible server · 1 model" in sidebar

        box = page.locator("[data-testid=stChatInputTextArea]")
        box.fill("Hello! Tell me about the sea.")
        box.press("Enter")
        reply = page.locator("[data-testid=stChatMessage]").nth(1)
        # Real text arrives while the engine is still generating (the cursor is still there).
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            if reply.count():
                seen = reply.locator("[data-testid=stMarkdownContainer]").last.inner_text()
                if re.search(r"[A-Za-z]{2,}", seen.rstrip("▌")):
                    break
            time.sleep(0.1)
        assert re.search(r"[A-Za-z]{2,}", seen), f"no text arrived: {seen!r}"
        wait_idle(page, timeout_ms=180_000)
        reply = page.locator("[data-testid=stChatMessage]").last
        text = reply.locator("[data-testid=stMarkdownContainer]").first.inner_text()
        caption = reply.locator("[data-testid=stCaptionContainer]").inner_text()
        assert re.search(r"[A-Za-z]{2,}", text) and "▌" not in text
        assert MODEL_A in caption and "tok/s" in caption and "tokens" in caption, caption
        assert page.locator("[data-testid=stException]").count() == 0
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "demo-chat.png"))
    finally:
        stop(app.process)
