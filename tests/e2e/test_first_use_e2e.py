"""What a first-time user trips over on Settings and Models (issue 13), in real Chromium."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.browser import App, Double, open_app, wait_idle

pytestmark = pytest.mark.e2e


def go(pg: Any, app: App, title: str) -> None:
    open_app(pg, app.url)
    pg.locator("[data-testid=stSidebarNav]").get_by_role("link", name=title).click()
    pg.get_by_role("heading", name=title).wait_for(timeout=30_000)
    wait_idle(pg)


def test_changing_idle_ttl_stays_on_chat_defaults(app: App, page: Any) -> None:
    go(page, app, "Settings")
    page.get_by_role("tab", name="Chat defaults").click()
    ttl = page.get_by_label("Idle TTL (seconds)")
    ttl.fill("600")
    ttl.press("Enter")
    page.get_by_text("Saved the idle TTL.").wait_for(timeout=20_000)
    wait_idle(page)
    page.wait_for_timeout(500)
    selected = page.get_by_role("tab", selected=True).inner_text()
    assert "Chat defaults" in selected, selected
    assert page.get_by_label("Idle TTL (seconds)").is_visible()


def test_the_sidebar_follows_a_load_made_elsewhere(app: App, double: Double, page: Any) -> None:
    """A model loaded outside this page (the CLI, another tab): the sidebar's count follows
    within a short interval, with no click."""
    open_app(page, app.url, "[data-testid=stChatInputTextArea]")
    sidebar = page.locator("[data-testid=stSidebar]")
    assert "3 models, 2 loaded" in sidebar.inner_text()
    httpx.post(f"{double.url}/api/v1/models/load", json={"model": "test/gamma"},
               timeout=30).raise_for_status()
    sidebar.get_by_text("3 models, 3 loaded").wait_for(timeout=30_000)
