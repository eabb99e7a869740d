"""A judged round in real headless Chromium: a model judges the answers blind in both orders
(the LM Studio double answers judge prompts with JSON), the verdict shows per order, and the
leaderboard's "Judge" view shows each judge's disagreement between orders."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.fixtures.browser import OUTPUT, App, Double, ask, open_app, wait_idle

pytestmark = pytest.mark.e2e

CONFIG = {"models": [
    {"key": "test/alpha", "ttft_ms": 50, "token_gap_ms": 10, "reply_tokens": 12},
    {"key": "test/beta", "ttft_ms": 50, "token_gap_ms": 10, "reply_tokens": 9},
    {"key": "judge/fair", "ttft_ms": 30, "token_gap_ms": 2},
    {"key": "judge/biased", "ttft_ms": 30, "token_gap_ms": 2, "judge": "first"},
]}


def settle(pg: Any) -> None:
    time.sleep(0.3)
    wait_idle(pg)


def run_judge(pg: Any, key: str) -> None:
    box = pg.get_by_role("combobox", name="Judge model", exact=True)
    box.scroll_into_view_if_needed()
    box.click()
    pg.keyboard.type(key)  # filters the list down to the one model
    pg.get_by_role("option", name=key, exact=True).wait_for()
    pg.keyboard.press("Enter")
    settle(pg)
    pg.get_by_role("button", name="Judge", exact=True).click()
    pg.wait_for_selector(f"text=Judge: {key}", timeout=30_000)
    settle(pg)


def test_a_round_judged_blind_in_both_orders(app: App, double: Double, page: Any) -> None:
    double.set_config(CONFIG)
    open_app(page, f"{app.url}/arena", "[data-testid=stChatInputTextArea]")
    page.locator("[data-testid=stButtonGroup] button", has_text="2 models").click()
    settle(page)
    page.locator("[data-testid=stCheckbox]").filter(has_text="Blind").locator("label").click()
    settle(page)
    ask(page, "Which city is the capital of France?")
    page.wait_for_selector("text=Which answer is better?", timeout=30_000)
    settle(page)
    page.get_by_text("Judge this round with a model").click()
    settle(page)

    run_judge(page, "judge/fair")
    judge_calls = [r for r in double.chat_requests() if r["model"] == "judge/fair"]
    assert len(judge_calls) == 2 and all(r["completed"] for r in judge_calls)
    shown = [r["body"]["messages"][-1]["content"] for r in judge_calls]
    firsts = [s.index("Reply from test/alpha") < s.index("Reply from test/beta") for s in shown]
    assert firsts[0] != firsts[1]  # the two requests show the answers in both orders
    assert all("json_schema" == r["body"]["response_format"]["type"] for r in judge_calls)
    main = page.inner_text("#stMain")
    # blind: the pairs are named by position; both orders' verdicts are shown
    assert "Response 1 vs Response 2: order 1 → " in main and ", order 2 → " in main
    assert "disagreed on 0 of 1 pair" in main and ": agreed, " in main
    expect(page.locator("[data-testid=stDataFrame]")).to_have_count(1, timeout=30_000)  # scores

    run_judge(page, "judge/biased")
    main = page.inner_text("#stMain")
    assert "disagreed on 1 of 1 pair" in main and "disagreed, tie" in main
    page.screenshot(path=str(OUTPUT / "arena-judged.png"), full_page=True)

    page.get_by_role("button", name="Response 1").click()  # a people's vote too
    page.wait_for_selector("text=Your vote")
    settle(page)
    page.locator("[data-testid=stButtonGroup] button", has_text="Leaderboard").click()
    settle(page)
    page.locator("[data-testid=stButtonGroup] button", has_text="Judge").click()
    page.wait_for_selector("text=1 judged pair.", timeout=30_000)  # one pair: not "pairs"
    settle(page)
    board = page.inner_text("#stMain")
    # two judges, biased first by name: its tie (orders disagreed) never matches a people's win
    assert "Agreement with people: 0% of 1 round with" in board
    # the judges board and the ratings
    expect(page.locator("[data-testid=stDataFrame]")).to_have_count(2, timeout=30_000)
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    page.screenshot(path=str(OUTPUT / "arena-judge-board.png"), full_page=True)
