"""Models and Settings in real headless Chromium against `streamlit run app.py` and the LM Studio
double (a real HTTP server). Writes docs/screenshots/models.png and settings.png."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import (
    App,
    Double,
    open_app,
    save_shot,
    start_double,
    stop,
    wait_idle,
)

pytestmark = pytest.mark.e2e

TOKEN = "sk-lm-E2eTest1:AbCdEfGhIjKlMnOpQrSt"


def choose(pg: Any, label: str, option: str) -> None:
    """Picks `option` in the st.selectbox labelled `label`."""
    pg.get_by_role("combobox", name=label, exact=True).click()
    pg.get_by_role("option", name=re.compile(re.escape(option))).first.click()
    wait_idle(pg)


def go(pg: Any, app: App, page_title: str, ready: str) -> None:
    """Opens the app at its root (app.py runs st.navigation first), then one of its pages."""
    open_app(pg, app.url)
    pg.locator(".st-key-atom_nav").get_by_role("link", name=page_title).click()
    pg.wait_for_selector(ready, timeout=30_000)
    wait_idle(pg)


def screenshot(pg: Any, name: str, height: int = 900) -> None:
    """The page from its top, tall enough to show what the docs need."""
    pg.set_viewport_size({"width": 1360, "height": height})
    pg.evaluate("document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0 })")
    pg.wait_for_timeout(300)
    save_shot(pg, name, docs=True, full_page=True)


def test_load_a_model_from_the_models_page(app: App, double: Double, page: Any) -> None:
    go(page, app, "Models", "[data-testid=stDataFrame]")
    main = page.locator("[data-testid=stMain]")
    assert "4 of 4 models" in main.inner_text()
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    choose(page, "Model to load", "Test Gamma 270M")
    # The form follows the pick: gamma's own context field, bounded by its maximum.
    ctx = page.get_by_placeholder("server default (model max 8,192)")
    ctx.wait_for(timeout=10_000)
    ctx.fill("4096")
    ctx.press("Tab")  # a number input commits its value when it loses focus
    page.get_by_role("button", name="Load", exact=True).click()
    page.get_by_text("Loaded model test/gamma as instance").wait_for(timeout=20_000)
    wait_idle(page)
    text = main.inner_text()
    assert "What the server applied — echoed by the server" in text
    # Marked loaded: in "Loaded now" with its live config, and in the sidebar's count.
    assert re.search(r"test/gamma · ctx 4096 .*loaded by ATOM", text), text
    assert "3 models, 3 loaded" in page.locator("[data-testid=stSidebar]").inner_text()
    (load,) = [r for r in double.log() if r["path"] == "/api/v1/models/load"]
    assert load["body"] == {"model": "test/gamma", "context_length": 4096,
                            "echo_load_config": True}
    # What REST can't set, as a command line to copy.
    assert "lms load test/gamma --context-length 4096" in main.inner_text()
    screenshot(page, "models.png", height=1640)

    # Unload it again.
    page.locator(".st-key-unload-test-gamma button").click()
    page.get_by_text("Unloaded “test/gamma”.").wait_for(timeout=20_000)
    assert "3 models, 2 loaded" in page.locator("[data-testid=stSidebar]").inner_text()


def test_a_bookmark_of_the_models_page_opens_it_inside_the_app(app: App, page: Any) -> None:
    open_app(page, app.url + "/models", "[data-testid=stDataFrame]")  # a fresh server process
    nav = page.locator(".st-key-atom_nav").inner_text()
    assert "Settings" in nav and "ui" not in nav.split()  # the app's pages, not pages/ files
    assert "Server" in page.locator("[data-testid=stSidebar]").inner_text()


def test_download_shows_progress_and_survives_a_page_switch(
    app: App, double: Double, page: Any
) -> None:
    double.set_config({"download_ms": 6000})
    go(page, app, "Models", "[data-testid=stDataFrame]")
    page.get_by_role("tab", name="Download a model").click()
    page.get_by_label("Catalog id or Hugging Face URL", exact=True).fill("ibm/granite-4-micro")
    page.get_by_role("button", name="Download", exact=True).click()
    bar = page.locator("[data-testid=stProgress]")
    bar.first.wait_for(timeout=10_000)
    first = page.locator("[data-testid=stMain]").inner_text()
    assert "ibm/granite-4-micro" in first and " of " in first and "left" in first
    # Leave for Chat and come back: the job is still followed.
    nav = page.locator(".st-key-atom_nav")
    nav.get_by_role("link", name="Chat").click()
    wait_idle(page)
    nav.get_by_role("link", name="Models").click()
    page.wait_for_selector("[data-testid=stDataFrame]")
    page.get_by_role("tab", name="Download a model").click()
    page.get_by_text(re.compile(r"ibm/granite-4-micro.*Completed")).wait_for(timeout=20_000)
    # ...and the finished download's model joins the table (the page reruns itself for it).
    page.get_by_text(re.compile(r"5 of 5 models")).wait_for(timeout=20_000)


def test_add_a_profile_and_test_it(app: App, double: Double, page: Any, tmp_path: Path) -> None:
    secured = start_double({"api_token": TOKEN}, tmp_path)
    try:
        go(page, app, "Settings", "[data-testid=stTabs]")
        page.get_by_label("Name", exact=True).fill("Secured studio")
        page.get_by_label("URL", exact=True).fill(secured.url)
        page.get_by_label("API token", exact=True).fill(TOKEN)
        page.get_by_role("button", name="Save server", exact=True).click()
        page.get_by_text("Saved “Secured studio”.").wait_for(timeout=20_000)
        wait_idle(page)
        page.get_by_role("button", name="Test", exact=True).click()
        page.get_by_text(re.compile(r"Reachable · token accepted")).wait_for(timeout=20_000)
        wait_idle(page)
        html = page.content()
        assert TOKEN not in html and "AbCdEfGh" not in html  # masked, never sent to the page
        assert "sk-lm-••••••••St" in page.locator("[data-testid=stMain]").inner_text()
        (request,) = [r for r in secured.log() if r["path"] == "/api/v1/models"]
        assert request["status"] == 200
        screenshot(page, "settings.png")
    finally:
        stop(secured.process)
    assert TOKEN not in app.log_path.read_text()  # nor logged
