"""What a first-time user trips over on Settings and Models (issue 13), in real Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.browser import App, open_app, wait_idle

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
