"""What a first-time user trips over on Settings and Models (issue 13), in real Chromium."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import App, Double, open_app, wait_idle

pytestmark = pytest.mark.e2e


def go(pg: Any, app: App, title: str) -> None:
    open_app(pg, app.url)
    pg.locator(".st-key-atom_nav").get_by_role("link", name=title).click()
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


# Every link text and sidebar heading the page ever draws, from its first paint: Streamlit's legacy
# page list (one entry per file in pages/) flashed for seconds on a fresh server before app.py ran.
RECORD_LINKS = """
window.__atomSeen = new Set();
new MutationObserver(() => {
  for (const a of document.querySelectorAll('a, [data-testid=stSidebarNav] *'))
    if (a.innerText && a.innerText.trim()) window.__atomSeen.add(a.innerText.trim());
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.mark.parametrize("path", ["", "/arena", "/stats"])
def test_a_first_visit_never_shows_the_page_parts_as_pages(
        double: Double, tmp_path: Any, page: Any, path: str) -> None:
    """A fresh server, its first visitor (at the root or a bookmarked page): from the first paint
    to the settled page, the only page links are the five pages, never pages/ files."""
    from tests.fixtures.browser import start_app, stop

    app = start_app(double.url, tmp_path / "data", tmp_path)
    try:
        page.add_init_script(RECORD_LINKS)
        page.goto(app.url + path)
        page.locator(".st-key-atom_nav").get_by_role("link", name="Models").wait_for(timeout=30_000)
        page.get_by_label("Server").first.wait_for(timeout=30_000)
        seen = set(page.evaluate("() => Array.from(window.__atomSeen)"))
        # Each link's text is its icon's ligature name ("sports_score") and its title.
        nav = [w for w in page.locator(".st-key-atom_nav").inner_text().split() if w.istitle()]
    finally:
        stop(app.process)
    assert nav == ["Chat", "Arena", "Stats", "Models", "Settings"], nav
    parts = {"ui", "app", "arena board", "arena judge", "chat route", "stats sweep"}
    assert not {s.lower() for s in seen} & parts, sorted(seen)
    expect(page.locator("[data-testid=stSidebarNav]")).to_have_count(0)


def test_the_app_fetches_nothing_from_any_other_host(app: App, page: Any) -> None:
    """Offline is the normal case for a local dashboard, and a request to a third party tells
    it who is using ATOM: the favicon (a ":material/bolt:" page icon is fetched from
    fonts.gstatic.com), fonts and scripts all come from ATOM's own server, on every page."""
    from urllib.parse import urlsplit

    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    for title in ("Chat", "Arena", "Stats", "Models", "Settings"):
        go(page, app, title)
    page.wait_for_timeout(500)  # the favicon is asked for after the page settles
    own = urlsplit(app.url).netloc
    foreign = sorted({u for u in seen if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                      and urlsplit(u).netloc != own})
    assert not foreign, foreign
    icons = page.evaluate("() => Array.from(document.querySelectorAll(\"link[rel~='icon']\"))"
                          ".map(l => l.href)")
    assert icons and all(i.startswith("data:image/svg+xml") or urlsplit(i).netloc == own
                         for i in icons), icons  # shipped with ATOM, inline
