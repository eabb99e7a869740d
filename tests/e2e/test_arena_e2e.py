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
    expect(page.locator("[data-testid=stException]")).to_have_count(0)

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
    # ATOM's Stop, beside the chat box (pages/parts/chat_box.py says why not Streamlit's)
    page.locator("[data-testid=stBottom]").get_by_role("button", name="Stop").click()
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
    page.wait_for_selector("text=Your vote:")  # not "…after your vote"
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
    expect(page.locator("[data-testid=stDataFrame]")).to_have_count(1, timeout=30_000)
    page.screenshot(path=str(OUTPUT / "arena-leaderboard.png"))

    page.locator("[data-testid=stButtonGroup] button", has_text="Race").click()
    page.wait_for_selector("text=Your vote:")  # not "…after your vote"
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


# -- blind means blind (issue 18) ----------------------------------------------------------------

ANSWER = "An answer that names no model, told one plain word at a time so it streams a while."


def race_config(*, gap: int, ttft: int, reply: str = ANSWER,
                reasoning: str | None = None) -> dict[str, Any]:
    """Three loaded models whose replies do not name them; the first thinks before it answers
    when `reasoning` is given."""
    models = [{"key": key, "params_string": params, "loaded": True, "ttft_ms": ttft,
               "token_gap_ms": gap, "reply": reply}
              for key, params in (("qwen/qwen3-4b", "4B"), ("google/gemma-3-1b", "1B"),
                                  ("meta/llama-3.2-3b", "3B"))]
    models[0]["reasoning"] = reasoning
    return {"models": models}


NAMES = ("qwen/qwen3-4b", "google/gemma-3-1b", "meta/llama-3.2-3b")
# What the first round leaves on screen: its prompt, its replies, its results grid, vote bar,
# export and judge controls. None of it may show once the second race has begun.
LAST_ROUND = ("First question?", "Old answer", "Decode tok/s", "Parameters", "Results",
              "Which answer is better?", "Your vote", "Export", "Judge this round")
PAGE_STATE = """() => ({text: document.querySelector('#stMain').innerText,
  running: document.querySelector('[data-testid=stApp]').dataset.testScriptState})"""


@pytest.mark.parametrize("blind", [False, True], ids=["named", "blind"])
def test_a_new_race_shows_nothing_of_the_last_round(app: App, double: Double, page: Any,
                                                    blind: bool) -> None:
    double.set_config(race_config(gap=20, ttft=100, reply="Old answer from before."))
    open_arena(page, app)
    if blind:
        toggle(page, "Blind")
    ask(page, "First question?")
    wait_round(page)
    if blind:  # voted: the last round shows its names, speeds and Export, the most to leak
        page.get_by_role("button", name="Response 1").click()
        page.wait_for_selector("text=Your vote:")  # not "…after your vote"
        settle(page)
    before = page.inner_text("#stMain")
    assert all(m in before for m in LAST_ROUND if m != ("Which answer is better?" if blind
                                                       else "Your vote")), before
    double.set_config(race_config(gap=150, ttft=600,
                                  reasoning="Let me think this through step by step first."))
    started = time.monotonic()
    ask(page, "Second question?")
    mid_race: list[str] = []
    cleared_after = None
    shot = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = page.evaluate(PAGE_STATE)
        text = state["text"]
        if cleared_after is None and "First question?" not in text:
            cleared_after = time.monotonic() - started
        if "Second question?" in text:
            assert "First question?" not in text and "Old answer" not in text, text
            if "▌" in text:  # mid-race: the live columns are streaming
                mid_race.append(text)
                leaked = [m for m in LAST_ROUND if m in text]
                assert not leaked, f"the last round still shows {leaked} mid-race:\n{text}"
                if blind:
                    assert "Thinking" not in text and not any(n in text for n in NAMES), text
                if not shot and len(mid_race) >= 3:
                    save_shot(page, f"arena-new-race-{'blind' if blind else 'named'}-mid.png")
                    shot = True
            elif "Which answer is better?" in text and state["running"] == "notRunning":
                break
        time.sleep(0.03)
    assert len(mid_race) >= 3, "never saw the second race mid-stream"
    print(f"last round gone {cleared_after:.3f} s after Enter")
    wait_round(page)
    final = page.inner_text("#stMain")
    assert "Second question?" in final and "First question?" not in final
    if blind:  # the reasoning model's thinking is kept from every reply until the vote
        expanders = page.locator("[data-testid=stExpander] summary").all_inner_texts()
        assert not any("Reasoning" in e for e in expanders), expanders
        assert "Export" not in final
    save_shot(page, f"arena-new-race-{'blind' if blind else 'named'}-after.png")


def second_browser(browser: Any, errors: list[str]) -> Any:
    pg = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    return pg


def test_two_browsers_each_see_their_own_vote_and_the_rounds_true_state(
        app: App, double: Double, page: Any, browser: Any) -> None:
    double.set_config(race_config(gap=20, ttft=100))
    presenter = page
    open_arena(presenter, app)
    toggle(presenter, "Presenter")
    ask(presenter, "Who explains best?")
    wait_round(presenter)
    errors: list[str] = []
    second = second_browser(browser, errors)
    try:
        # A second Chromium's first page load, with the first browser and the app on the same
        # two cores: allow it longer than open_app's 30 s (it took more at load 28).
        second.goto(f"{app.url}/arena")
        second.wait_for_selector("text=Which answer is better?", timeout=90_000)
        assert "Who explains best?" in second.inner_text("#stMain")
        assert [t.splitlines()[0] for t in columns_text(second)] == [
            "Response 1", "Response 2", "Response 3"]

        second.get_by_role("button", name="Response 2").click()
        second.wait_for_selector("text=Your vote:")  # not "…after your vote"
        settle(second)
        assert all(s.startswith("Model ") for s in subtitles(second))  # names, for the voter

        # The presenter's screen follows by itself: a vote cast elsewhere, still blind here.
        presenter.wait_for_selector("text=1 vote cast in another browser", timeout=15_000)
        settle(presenter)
        shown = presenter.inner_text("#stMain")
        assert "Your vote" not in shown and "Export" not in shown
        assert not any(n in shown for n in NAMES)
        assert all(s.startswith("An answer") for s in subtitles(presenter))  # no name line
        save_shot(presenter, "arena-presenter-other-vote.png")

        presenter.get_by_role("button", name="Response 1").click()
        presenter.wait_for_selector("text=Your vote:")  # not "…after your vote"
        settle(presenter)
        assert "the first, cast in another browser" in presenter.inner_text("#stMain")
        second.wait_for_selector("text=Other browsers:", timeout=15_000)
        assert second.inner_text("#stMain").count("Your vote") == 1

        # A new round from the presenter reaches the second browser while it races (its
        # replies once it is done).
        double.set_config(race_config(gap=400, ttft=300))  # ~7 s: a watcher tick lands in it
        ask(presenter, "Second round?")
        second.wait_for_selector("text=Racing in another browser", timeout=15_000)
        assert "Second round?" in second.inner_text("#stMain")
        assert not any(n in second.inner_text("#stMain") for n in NAMES)
        wait_round(presenter)
        second.wait_for_selector("text=Which answer is better?", timeout=15_000)
        settle(second)
        assert [t.splitlines()[0] for t in columns_text(second)] == [
            "Response 1", "Response 2", "Response 3"]
        assert "Your vote" not in second.inner_text("#stMain")

        # Reveal on the presenter's screen shows the names in every browser.
        presenter.get_by_role("button", name="Reveal").click()
        second.wait_for_function(
            "() => Array.from(document.querySelectorAll('[data-testid=stColumn]'))"
            ".filter(c => c.querySelector('h4')).length === 3 && "
            "Array.from(document.querySelectorAll('[data-testid=stColumn]'))"
            ".filter(c => c.querySelector('h4'))"
            ".every(c => c.innerText.split('\\n').filter(Boolean)[1].startsWith('Model '))",
            timeout=15_000)
        save_shot(second, "arena-second-browser-revealed.png")
    finally:
        second.context.close()
    assert not errors, f"JavaScript errors in the second browser: {errors}"
