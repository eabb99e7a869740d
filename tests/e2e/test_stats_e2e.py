"""Stats in real headless Chromium: `streamlit run app.py` on a seeded history (20,000 runs,
20 models) and the LM Studio double. Writes docs/screenshots/stats.png."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from atom_core import stats
from atom_core.history import open_store
from atom_core.runs import RunRecord
from tests.fixtures.browser import (
    OUTPUT,
    PAGE_WAIT_MS,
    App,
    Double,
    expect_at_least,
    open_app,
    save_shot,
    start_app,
    stop,
    wait_idle,
)
from tests.fixtures.realistic_runs import LONG_MODEL_NAMES, build_history, laptop_runs

pytestmark = pytest.mark.e2e

CHARTS = 2  # the speed map, and the open chart tab's chart (the TTFT box first)
CHART_TABS = {"Speed over time": "Decode speed over time",  # tab -> its chart's title
              "Time vs length": "End-to-end time vs output tokens",
              "First token vs prompt": "Time to first token vs prompt length",
              "Tokens per request": "Tokens per request"}


@pytest.fixture
def stats_app(double: Double, tmp_path: Path) -> Iterator[App]:
    data = tmp_path / "data"
    build_history(data, runs=20_000, conversations=200, end=time.time() - 3600)
    a = start_app(double.url, data, tmp_path)
    yield a
    stop(a.process)


def open_stats(pg: Any, app: App) -> None:
    open_app(pg, app.url)  # the root first: app.py draws the shell and its navigation
    pg.get_by_role("link", name="Stats").click()
    pg.wait_for_selector("[data-testid=stMetric]", timeout=PAGE_WAIT_MS)
    wait_idle(pg)


def wait_for_charts(pg: Any, count: int, timeout_ms: int = PAGE_WAIT_MS) -> None:
    expect_at_least(pg.locator(".js-plotly-plot .main-svg"), count, timeout_ms)


def assert_no_errors(pg: Any) -> None:
    expect(pg.locator("[data-testid=stException]")).to_have_count(0)
    expect(pg.locator("[data-testid=stAlertContentError]")).to_have_count(0)


def model_pixels(png: Path, colors: list[str], opacity: float = 1.0) -> dict[str, int]:
    """How many pixels of the screenshot are (nearly) each model colour, drawn with `opacity`
    on white."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    targets = {c: tuple(round(opacity * int(c[i:i + 2], 16) + (1 - opacity) * 255)
                        for i in (1, 3, 5)) for c in colors}
    counts = dict.fromkeys(colors, 0)
    for (r, g, b), n in ((px, n) for n, px in image.getcolors(maxcolors=1 << 24) or []):
        for c, (tr, tg, tb) in targets.items():
            if abs(r - tr) + abs(g - tg) + abs(b - tb) <= 12:
                counts[c] += n
    return counts


def test_overview_draws_every_chart_with_each_models_colour(stats_app: App, page: Any) -> None:
    page.set_viewport_size({"width": 1360, "height": 4200})  # every chart on screen at once
    open_stats(page, stats_app)
    wait_for_charts(page, CHARTS)
    assert_no_errors(page)
    for plot in page.locator(".js-plotly-plot").all():  # each chart drew marks, not just axes
        marks = plot.locator(".scatterlayer .trace, .boxlayer .trace, .barlayer .trace")
        expect_at_least(marks, 1)
    text = page.locator("[data-testid=stMain]").inner_text()
    rows = open_store(stats_app.data_dir).run_rows()
    today = date.today()  # Stats opens on the last 30 days (of the 60 the history spans)
    shown = stats.RunFilter(start=today - timedelta(days=29), end=today).apply(
        stats.runs_frame(rows))
    assert 0 < len(shown) < len(rows)
    assert f"{len(shown):,}" in text and "Speed map" in text and "the last 30 days" in text
    summary = stats.model_summary(shown)
    fastest = str(summary["model"].iloc[0])
    assert fastest in page.locator(".st-key-card_fastest").inner_text()  # the full name
    OUTPUT.mkdir(parents=True, exist_ok=True)
    full = OUTPUT / "stats-overview-full.png"
    page.screenshot(path=str(full))
    # The screenshot itself shows the charts: every model's colour is on it.
    colors = stats.model_colors(stats.runs_frame(rows))
    pixels = model_pixels(full, list(colors.values()))
    missing = [m for m, c in colors.items() if pixels[c] < 50]
    assert not missing, f"no pixels in these models' colours: {missing}"
    # Each chart tab draws its own chart, with marks, when it is opened.
    for tab, title in CHART_TABS.items():
        page.get_by_role("tab", name=tab).click()
        plot = page.locator(".js-plotly-plot").filter(has_text=title)
        plot.locator(".main-svg").first.wait_for(timeout=30_000)
        wait_idle(page)
        expect_at_least(plot.locator(".scatterlayer .trace"), 20)  # a line or points per model
        expect(page.locator(".js-plotly-plot")).to_have_count(CHARTS)
    assert_no_errors(page)
    page.get_by_role("tab", name="First token", exact=True).click()
    page.locator(".js-plotly-plot").filter(has_text="Time to first token:").wait_for()
    wait_idle(page)
    # The picture for the docs: the top of the page, as a person first sees it.
    page.set_viewport_size({"width": 1360, "height": 1250})
    time.sleep(1.0)  # plotly re-lays out the charts for the new width
    shot = save_shot(page, "stats.png", docs=True)
    bubbles = model_pixels(shot, list(colors.values()), opacity=0.85)
    assert sum(1 for c in colors.values() if bubbles[c] >= 50) >= 15  # the speed map


def test_filter_by_model_in_the_browser(stats_app: App, page: Any) -> None:
    open_stats(page, stats_app)
    wait_for_charts(page, 1)
    models = page.locator("[data-testid=stSidebar] [data-testid=stMultiSelect]").first
    # Under the time range it sits below a 900-px window's fold: scrolled to first, as a person
    # does (a click that also scrolled the sidebar only focused it: no list, 3 runs of 3).
    models.scroll_into_view_if_needed()
    models.click()
    page.get_by_role("option", name="qwen3-4b", exact=True).click()
    page.keyboard.press("Escape")
    # A click only starts the rerun, so "idle" right after it can be the old page: wait for the
    # figure the filter changes (the Models metric drops from 20 to 1).
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=stMetric]')[1]"
        "?.innerText.trim().endsWith('\\n1')", timeout=30_000)
    wait_idle(page)
    assert_no_errors(page)
    assert "qwen3-4b" in page.locator(".js-plotly-plot").first.inner_text()


def test_token_timeline_and_replay(stats_app: App, page: Any) -> None:
    page.set_viewport_size({"width": 1360, "height": 2000})
    open_stats(page, stats_app)
    page.get_by_role("tab", name="Token timeline").click(timeout=PAGE_WAIT_MS)
    page.get_by_role("button", name="Replay the stream").wait_for(timeout=30_000)
    wait_idle(page)
    wait_for_charts(page, 1)
    expect(page.locator(".js-plotly-plot .barlayer .trace")).to_have_count(1)  # the gaps
    page.get_by_role("button", name="Replay the stream").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        captions = page.locator("[data-testid=stCaptionContainer]").all_inner_texts()
        if any("token " in c for c in captions):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the replay did not start")
    wait_idle(page, 60_000)
    assert_no_errors(page)
    page.screenshot(path=str(OUTPUT / "stats-timeline.png"))


def test_concurrency_sweep_in_the_browser(stats_app: App, double: Double, page: Any) -> None:
    page.set_viewport_size({"width": 1360, "height": 2000})
    open_stats(page, stats_app)
    page.get_by_role("tab", name="Concurrency sweep").click()
    page.wait_for_selector("text=4 parallel slots", timeout=30_000)  # the tab's own content
    wait_idle(page)
    page.get_by_label("Requests in flight (levels)").fill("1,2,4")
    page.get_by_label("Requests per level").fill("4")
    page.get_by_role("button", name="Run sweep").click()
    page.wait_for_selector("text=Serves", timeout=60_000)
    wait_idle(page, 60_000)
    assert_no_errors(page)
    chats = double.chat_requests()
    assert len(chats) == 12
    expect(page.locator(".js-plotly-plot")).to_have_count(1)
    assert "4 parallel slots" in page.locator(".js-plotly-plot").inner_text()
    page.screenshot(path=str(OUTPUT / "stats-sweep.png"))


def test_live_panel_moves_while_runs_are_recorded(stats_app: App, page: Any) -> None:
    """Another process (a prompt set, the CLI) records runs: the live panel (a fragment that
    reruns itself every 3 s) shows them without a reload, and offers to redraw the charts."""
    open_stats(page, stats_app)
    wait_for_charts(page, 1)
    assert "Live: nothing running" in page.locator("[data-testid=stMain]").inner_text()
    store = open_store(stats_app.data_dir)
    row = {"source": "promptset", "server": "http://localhost:1234", "model": "qwen3-4b",
           "ok": True, "state": "complete", "ttft_s": 0.2, "decode_tps": 42.0, "e2e_s": 3.0,
           "output_tokens": 120, "prompt_tokens": 50, "tokens_source": "usage"}
    for _ in range(3):
        store.add_run(RunRecord.from_record(dict(row, ts=time.time())))
    page.wait_for_selector("text=3 runs in the last 5 min", timeout=PAGE_WAIT_MS)
    store.add_run(RunRecord.from_record(dict(row, ts=time.time(), decode_tps=44.0)))
    page.wait_for_selector("text=4 runs in the last 5 min", timeout=PAGE_WAIT_MS)
    page.get_by_role("button", name="Show the new runs in the charts").click()
    today = date.today()  # the runs of the default last 30 days, the 4 new ones among them
    shown = stats.RunFilter(start=today - timedelta(days=29), end=today).apply(
        stats.runs_frame(store.run_rows()))
    page.wait_for_selector(f"text={len(shown):,}", timeout=PAGE_WAIT_MS)
    assert_no_errors(page)


def test_a_bookmark_of_stats_opens_inside_the_app(stats_app: App, page: Any) -> None:
    """The very first visit to a fresh server is the page's own URL: it still gets the app's
    sidebar and navigation, not Streamlit's legacy page list."""
    page.goto(f"{stats_app.url}/stats")
    page.wait_for_selector("[data-testid=stMetric]", timeout=30_000)
    wait_idle(page)
    sidebar = page.locator("[data-testid=stSidebar]").inner_text()
    assert "ATOM" in sidebar and "Filter runs" in sidebar
    nav = page.locator(".st-key-atom_nav").inner_text()
    assert "Stats" in nav and "ui" not in nav.split()  # no legacy list of pages/ files
    wait_for_charts(page, 1)
    assert_no_errors(page)


def scrolls_sideways(pg: Any, table: Any) -> bool:
    """Whether a st.dataframe needs its horizontal scrollbar (its columns are wider than it)."""
    return bool(table.locator(".dvn-scroller").evaluate("s => s.scrollWidth > s.clientWidth"))


def test_three_models_compared_on_a_laptop(double: Double, tmp_path: Path, page: Any) -> None:
    """Three models with long names, a run or two each, at 1,400 px: the Overview says what each
    chart needs instead of a bare tick, two 100 % spikes and lone dots, its table fits without
    sideways scrolling and the speed map's labels are whole. With six runs each (all the same
    reply lengths), the box plot draws and the three identical histogram lines all show."""
    data = tmp_path / "data"
    start = time.time() // 60 * 60 - 3600  # an hour ago, within one minute
    store = open_store(data)
    store.append_many("runs", laptop_runs(((200, 260), (200, 260), (200,)), start=start))
    app = start_app(double.url, data, tmp_path)
    try:
        page.set_viewport_size({"width": 1400, "height": 5200})  # every chart on screen
        open_stats(page, app)
        wait_for_charts(page, 1)
        assert_no_errors(page)
        main = page.locator("[data-testid=stMain]")
        # Each chart tab says what its chart needs (one tab open at a time).
        for tab, needs in (("First token", "Time to first token: Needs 5 completed runs"),
                           ("Tokens per request", "Tokens per request: Needs 5 completed runs"),
                           ("Time vs length",
                            "End-to-end time vs output tokens: Needs 3 completed runs"),
                           ("First token vs prompt",
                            "Time to first token vs prompt length: Needs 3 completed runs")):
            page.get_by_role("tab", name=tab, exact=True).click()
            main.get_by_text(needs).wait_for(timeout=30_000)
            wait_idle(page)
            expect(page.locator(".js-plotly-plot")).to_have_count(1)  # the speed map only
        page.get_by_role("tab", name="First token", exact=True).click()
        main.get_by_text("Time to first token: Needs 5").wait_for(timeout=30_000)
        wait_idle(page)
        (table,) = page.locator("[data-testid=stDataFrame]").all()
        assert not scrolls_sideways(page, table)
        # the speed map's labels: every name whole, none running off the chart
        plot = page.locator(".js-plotly-plot").first
        box = plot.bounding_box()
        labels = plot.locator(".textpoint text")
        assert sorted(t.replace("\n", "") for t in labels.evaluate_all(
            "ts => ts.map(t => Array.from(t.querySelectorAll('tspan')).map(s => s.textContent)"
            ".join('') || t.textContent)")) == sorted(LONG_MODEL_NAMES)
        for label in labels.all():
            b = label.bounding_box()
            assert box["x"] <= b["x"] and b["x"] + b["width"] <= box["x"] + box["width"], b
        save_shot(page, "stats-laptop-few-runs.png", full_page=True)

        # Six runs each, the same reply lengths for every model.
        store.append_many("runs", laptop_runs(((200, 200, 260, 260), (200, 200, 260, 260),
                                               (200, 200, 260, 260, 260)), start=start + 30))
        page.reload()
        page.wait_for_selector("[data-testid=stMetric]", timeout=30_000)
        wait_idle(page)
        wait_for_charts(page, 2)  # the speed map and the open tab's TTFT box
        assert_no_errors(page)
        (table,) = page.locator("[data-testid=stDataFrame]").all()
        assert not scrolls_sideways(page, table)
        page.get_by_role("tab", name="Tokens per request", exact=True).click()
        histogram = page.locator(".js-plotly-plot").filter(has_text="Tokens per request")
        histogram.locator(".main-svg").first.wait_for(timeout=30_000)
        wait_idle(page)
        shot = tmp_path / "histogram.png"
        area = histogram.locator(".nsewdrag").first.bounding_box()  # the plot, not its legend
        page.screenshot(path=str(shot), clip=area)
        colors = stats.model_colors(stats.runs_frame(store.run_rows()))
        lines = model_pixels(shot, list(colors.values()))
        assert all(lines[c] >= 30 for c in colors.values()), lines  # each line shows
        save_shot(page, "stats-laptop-six-runs.png", full_page=True)
    finally:
        stop(app.process)


def test_the_overview_table_fits_at_1400_px(stats_app: App, page: Any) -> None:
    """20 models, 20,000 runs: the summary needs no sideways scrolling beside the sidebar."""
    page.set_viewport_size({"width": 1400, "height": 1400})
    open_stats(page, stats_app)
    wait_for_charts(page, 1)
    table = page.locator("[data-testid=stDataFrame]").last
    expect(table).to_have_count(1)  # drawn on a canvas: its inner text can be empty
    assert not scrolls_sideways(page, table)
    save_shot(page, "stats-overview-1400.png")
