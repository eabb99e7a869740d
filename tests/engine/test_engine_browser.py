"""The app in real Chromium, talking to the real demo engine: what a newcomer sees after `make run`
on a machine with no LM Studio."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from atom_core.launch import demo
from tests.fixtures.browser import CHROMIUM, ROOT, open_app, start_app, stop, wait_idle
from tests.fixtures.engine import MODEL_A

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
        expect(reply.locator("[data-testid=stMarkdownContainer]").last).to_have_text(
            re.compile(r"[A-Za-z]{2,}"), timeout=120_000)
        # The reply is drawn again from the history when it ends (with a Regenerate button
        # under it); the moment between the two runs also looks idle, so wait for that.
        page.get_by_role("button", name="Regenerate").wait_for(timeout=180_000)
        wait_idle(page, timeout_ms=180_000)
        reply = page.locator("[data-testid=stChatMessage]").last
        text = reply.locator("[data-testid=stMarkdownContainer]").first.inner_text()
        caption = reply.locator("[data-testid=stCaptionContainer]").inner_text()
        assert re.search(r"[A-Za-z]{2,}", text) and "▌" not in text
        assert MODEL_A in caption and "tok/s" in caption and "tokens" in caption, caption
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "demo-chat.png"))
    finally:
        stop(app.process)


def test_a_two_engine_arena_race_and_vote_in_the_browser(
    demo_engine: demo.DemoEngine, page: Any, tmp_path: Path
) -> None:
    """What a teacher with no LM Studio sees: the Arena races the two demo engines (one slot
    each, by default), both replies arrive, a vote moves the leaderboard."""
    from tests.fixtures.browser import ask, columns_text

    env = demo_engine.app_env({})
    app = start_app(env["ATOM_SERVER_URL"], tmp_path / "data", tmp_path, extra_env={
        "ATOM_EXTRA_SERVERS": env["ATOM_EXTRA_SERVERS"],
        "ATOM_DEMO_ENGINE": env["ATOM_DEMO_ENGINE"]})
    try:
        open_app(page, f"{app.url}/arena", "[data-testid=stChatInputTextArea]")
        page.get_by_text("2 models", exact=True).click()
        wait_idle(page)
        assert "Only one model here" not in page.locator("#stMain").inner_text()
        ask(page, "Write one sentence about the sea.")
        # Two real replies on 2 shared cores: allow minutes, not the double's seconds.
        page.wait_for_selector("text=Which answer is better?", timeout=300_000)
        wait_idle(page, timeout_ms=60_000)
        texts = columns_text(page)
        assert len(texts) == 2
        for text in texts:
            assert re.search(r"[A-Za-z]{3,}", text.split("\n", 2)[-1]) and "▌" not in text
        from atom_core.history import open_store

        (saved,) = open_store(tmp_path / "data").records("arena_rounds")
        # By default the two slots race the two engines, one each.
        assert [(s["server"], s["model"]) for s in saved["slots"]] == list(
            zip(demo_engine.urls, demo.MODEL_ALIASES, strict=True))
        page.get_by_role("button", name="Model A").click()
        page.wait_for_selector("text=Your vote", timeout=60_000)
        wait_idle(page)
        page.locator("[data-testid=stButtonGroup] button", has_text="Leaderboard").click()
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        wait_idle(page)
        assert "1 vote over 1 round." in page.locator("#stMain").inner_text()
        # The table is drawn on a canvas: read the standings from the saved votes instead.
        from atom_core import arena

        board = arena.leaderboard(arena.load_rounds(open_store(tmp_path / "data")), n_boot=10)
        assert [r.contestant for r in board][0] == MODEL_A
        expect(page.locator("[data-testid=stException]")).to_have_count(0)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / "demo-arena.png"), full_page=True)
    finally:
        stop(app.process)


MODEL_B_NAME = demo.MODEL_ALIASES[1]
