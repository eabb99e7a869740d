"""The Arena in real headless Chromium against `streamlit run app.py` and the LM Studio double."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import (
    OUTPUT,
    App,
    Double,
    ask,
    columns_text,
    open_app,
    save_shot,
    wait_idle,
)

pytestmark = pytest.mark.e2e



def three(ttfts: tuple[int, int, int] = (300, 150, 220), gap: int = 60, tokens: int = 36,
          third_loaded: bool = False) -> dict[str, Any]:
    return {"models": [
        {"key": "qwen/qwen3-4b", "display_name": "Qwen3 4B", "params_string": "4B",
         "size_bytes": 2_500_000_000, "loaded": True, "ttft_ms": ttfts[0], "token_gap_ms": gap,
         "reply_tokens": tokens},
        {"key": "google/gemma-3-1b", "display_name": "Gemma 3 1B", "params_string": "1B",
         "quantization": {"name": "Q8_0", "bits_per_weight": 8}, "size_bytes": 1_100_000_000,
         "loaded": True, "ttft_ms": ttfts[1], "token_gap_ms": gap * 2 // 3,
         "reply_tokens": tokens},
        {"key": "meta/llama-3.2-3b", "display_name": "Llama 3.2 3B", "params_string": "3B",
         "size_bytes": 2_000_000_000, "loaded": third_loaded, "load_time_ms": 700,
         "ttft_ms": ttfts[2], "token_gap_ms": gap * 4 // 5, "reply_tokens": tokens},
    ]}






def open_arena(pg: Any, app: App) -> None:
    # The page's own URL, on a server that has not run app.py yet: it must still come up inside
    # the app (sidebar, one page list), not as a bare legacy page.
    open_app(pg, f"{app.url}/arena", "[data-testid=stChatInputTextArea]")
    nav = pg.locator(".st-key-atom_nav").inner_text()
    assert "Arena" in nav and "arena views" not in nav.lower()
    assert "Server" in pg.locator("[data-testid=stSidebar]").inner_text()


def toggle(pg: Any, label: str) -> None:
    box = pg.locator("[data-testid=stCheckbox]").filter(has_text=label)
    was = box.locator("input").is_checked()
    box.locator("label").click()
    expect(box.locator("input")).to_be_checked(checked=not was)
    settle(pg)


def settle(pg: Any) -> None:
    """Lets the rerun a click started begin, then waits for it to end."""
    time.sleep(0.3)
    wait_idle(pg)


def subtitles(pg: Any) -> list[str]:
    """The line under each column title: a model caption, or the reply itself when hidden."""
    return [[line for line in t.splitlines() if line.strip()][1] for t in columns_text(pg)]


def wait_round(pg: Any) -> None:
    """Waits for a race to end and its saved round to be drawn (the page reruns once after the
    live view, so "idle" alone can be caught in between)."""
    wait_idle(pg)
    pg.wait_for_selector("text=Which answer is better?", timeout=30_000)
    wait_idle(pg)


def chat_log(double: Double) -> list[dict[str, Any]]:
    return double.chat_requests()


def test_three_models_stream_in_all_columns_at_once(app: App, double: Double, page: Any) -> None:
    # Replies of several seconds: on a busy machine one redraw can take about a second, and
    # 36 tokens (1.4-2.2 s) could end before the page ever showed all three mid-reply.
    double.set_config(three(tokens=120))
    open_arena(page, app)
    ask(page, "Explain in two sentences why the sky is blue.")
    all_partial: list[str] | None = None
    seen_loading = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen_loading = seen_loading or "before the race" in page.inner_text("body")
        texts = columns_text(page)
        if len(texts) == 3 and all("Reply from" in t and "▌" in t for t in texts):
            all_partial = texts  # every column mid-reply at the same moment
            break
        time.sleep(0.03)
    assert all_partial is not None, f"never saw all three streaming together: {texts}"
    assert seen_loading, "the page never said it was loading the unloaded model first"
    wait_round(page)
    final = columns_text(page)
    assert [t.splitlines()[0] for t in final] == ["Model A", "Model B", "Model C"]
    for text, key in zip(final, ("qwen/qwen3-4b", "google/gemma-3-1b", "meta/llama-3.2-3b"),
                         strict=True):
        assert f"Reply from {key}:" in text and "thirty-three" in text and "▌" not in text
    for partial, done in zip(all_partial, final, strict=True):
        body = partial.split("Reply from", 1)[1].rstrip(" ▌")
        assert body in done and len(body) < len(done.split("Reply from", 1)[1])
    log = chat_log(double)
    assert len(log) == 3 and all(r["completed"] for r in log)
    assert max(r["received_at"] for r in log) < min(r["ended_at"] for r in log)
    loads = [r for r in double.log() if r["path"] == "/api/v1/models/load"]
    assert [r["body"]["model"] for r in loads] == ["meta/llama-3.2-3b"]
    body = page.inner_text("#stMain")
    for measure in ("TTFT", "Decode tok/s", "End-to-end", "Stop reason", "Load (before the race)",
                    "Quantization", "Which answer is better?"):
        assert measure in body
    assert page.locator("[data-testid=stException]").count() == 0

    page.set_viewport_size({"width": 1360, "height": 1600})  # the whole page, no scrolling
    page.evaluate("() => document.querySelector('#stMain').scrollTo(0, 0)")
    time.sleep(0.4)
    save_shot(page, "arena.png", docs=True)


def test_stop_ends_all_three_upstream_requests(app: App, double: Double, page: Any) -> None:
    double.set_config(three(ttfts=(150, 150, 150), gap=90, tokens=300, third_loaded=True))
    open_arena(page, app)
    ask(page, "Tell me three very long stories")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        texts = columns_text(page)
        if len(texts) == 3 and all("Reply from" in t and len(t.split("Reply from", 1)[1].split())
                                   > 6 for t in texts):
            break
        time.sleep(0.05)
    stop_button = page.locator("[data-testid=stChatInput] button")
    assert "stop" in (stop_button.get_attribute("aria-label") or "").lower()
    stop_button.click()
    wait_idle(page)
    log = chat_log(double)
    assert len(log) == 3
    assert all(r["closed_early"] and not r["completed"] for r in log), log
    assert all(r["tokens_sent"] < 150 for r in log)

    page.reload()
    open_app(page, f"{app.url}/arena", "[data-testid=stChatInputTextArea]")
    texts = columns_text(page)
    assert len(texts) == 3 and all("Stopped" in t and "Reply from" in t for t in texts)
    page.screenshot(path=str(OUTPUT / "arena-stopped.png"))


def test_blind_vote_reveals_moves_the_leaderboard_and_exports(
        app: App, double: Double, page: Any, tmp_path: Path) -> None:
    double.set_config(three(ttfts=(100, 100, 100), gap=20, tokens=12, third_loaded=True))
    open_arena(page, app)
    toggle(page, "Blind")
    ask(page, "Which of you is best?")
    wait_round(page)
    titles = [t.splitlines()[0] for t in columns_text(page)]
    assert titles == ["Response 1", "Response 2", "Response 3"]
    # No caption naming a model under any title (the double's replies name themselves, so only
    # the line under the title is checked).
    assert all(s.startswith("Reply from") for s in subtitles(page))
    before_vote = page.inner_text("#stMain")  # speed would give a model away: none shown
    assert "Decode tok/s" not in before_vote and "TTFT" not in before_vote
    assert not any("tok/s" in t for t in columns_text(page))
    page.get_by_role("button", name="Response 2").click()
    page.wait_for_selector("text=Your vote")
    settle(page)
    assert "Decode tok/s" in page.inner_text("#stMain")  # revealed with the names
    revealed = subtitles(page)[1]
    assert revealed.startswith("Model ")  # the caption names the model now
    winner = revealed.split(" · ", 1)[1]

    page.locator("[data-testid=stButtonGroup] button", has_text="Leaderboard").click()
    page.wait_for_selector(".js-plotly-plot")
    settle(page)
    main = page.inner_text("#stMain")
    assert "1 vote over 1 round." in main
    assert page.locator("[data-testid=stDataFrame]").count() == 1
    page.screenshot(path=str(OUTPUT / "arena-leaderboard.png"))

    page.locator("[data-testid=stButtonGroup] button", has_text="Race").click()
    page.wait_for_selector("text=Your vote")
    settle(page)
    page.get_by_role("button", name="Export").click()
    with page.expect_download() as dl:
        page.get_by_role("button", name="Markdown report").click()
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    report = saved.read_text()
    assert saved.name.startswith("atom-arena-") and saved.suffix == ".md"
    assert "Which of you is best?" in report and f"({winner}) wins (cast blind)" in report
    assert "| TTFT |" in report and "Q8_0" in report
    with page.expect_download() as dl:
        page.get_by_role("button", name="HTML report").click()
    html_file = tmp_path / dl.value.suggested_filename
    dl.value.save_as(html_file)
    assert html_file.read_text().startswith("<!doctype html>")


def test_presenter_mode_for_a_class(app: App, double: Double, page: Any) -> None:
    double.set_config(three(ttfts=(200, 120, 160), gap=40, tokens=28, third_loaded=True))
    open_arena(page, app)
    toggle(page, "Presenter")
    expect(page.locator("[data-testid=stCheckbox]").filter(has_text="Blind").locator(
        "input")).to_be_checked()
    assert not page.locator("[data-testid=stExpander]").filter(
        has_text="Contestants and settings").locator("details").get_attribute("open")
    ask(page, "What makes a good explanation?")
    wait_round(page)
    assert [t.splitlines()[0] for t in columns_text(page)] == [
        "Response 1", "Response 2", "Response 3"]
    size = page.evaluate(
        "() => getComputedStyle(Array.from(document.querySelectorAll('[data-testid=stColumn]'))"
        ".filter(c => c.querySelector('h4'))[0].querySelector('p')).fontSize")
    assert float(size.removesuffix("px")) >= 20  # large type for the back row
    page.set_viewport_size({"width": 1360, "height": 1320})
    page.evaluate("() => document.querySelector('#stMain').scrollTo(0, 0)")
    time.sleep(0.4)
    save_shot(page, "arena-presenter.png", docs=True)
    page.get_by_role("button", name="Reveal").click()
    page.wait_for_function("() => Array.from(document.querySelectorAll('[data-testid=stColumn]'))"
                           ".filter(c => c.querySelector('h4'))"
                           ".every(c => c.innerText.split('\\n').filter(Boolean)[1]"
                           ".startsWith('Model '))")
    settle(page)
    assert all(s.startswith("Model ") for s in subtitles(page))
    page.screenshot(path=str(OUTPUT / "arena-presenter-revealed.png"))
