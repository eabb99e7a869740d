"""A class votes from its phones (issue 20), in real Chromium against `streamlit run app.py` in
class mode (ATOM_CLASS=1, the Streamlit options `ATOM_CLASS=1 make run` passes) and the LM
Studio double: a teacher and eight phone-sized students in one test, the pages locked without
the teacher key, a wrong code, a vote after close, a phone reconnecting, the app restarted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from atom_core.arena import classroom
from atom_core.history import open_store
from atom_core.launch.class_mode import CLASS_OPTIONS
from atom_core.settings.store import open_settings
from tests.fixtures.browser import (
    App,
    Double,
    ask,
    save_shot,
    start_app,
    stop,
    wait_idle,
    wait_text,
)
from tests.fixtures.st_client import LightSession, Loop

pytestmark = pytest.mark.e2e

KEY = "e2e-teacher-key"
NAMES = ("qwen/qwen3-4b", "google/gemma-3-1b")
DISPLAY = ("Qwen3 4B", "Gemma 3 1B")
OPTIONS = [f"--{k}={v}" for k, v in CLASS_OPTIONS.items() if k != "server.address"]
SLOW = 90_000  # ms: nine Chromium contexts and the app share two busy cores


def models(reply: str = "An answer that names no model, one plain word at a time.",
           gap: int = 20) -> dict[str, Any]:
    return {"models": [{"key": k, "display_name": d, "loaded": True, "ttft_ms": 100,
                        "token_gap_ms": gap, "reply": reply}
                       for k, d in zip(NAMES, DISPLAY, strict=True)]}


def class_app(double: Double, tmp_path: Path, port: int | None = None) -> App:
    return start_app(double.url, tmp_path / "data", tmp_path,
                     {"ATOM_CLASS": "1", "ATOM_TEACHER_KEY": KEY}, OPTIONS, port=port)


@pytest.fixture
def app(double: Double, tmp_path: Path) -> Iterator[App]:
    double.set_config(models())
    a = class_app(double, tmp_path)
    yield a
    stop(a.process)


def teacher_page(browser: Any, app: App) -> Any:
    pg = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
    pg.goto(f"{app.url}/?teacher={KEY}")
    pg.wait_for_selector("[data-testid=stSidebar]", timeout=SLOW)
    wait_idle(pg, SLOW)
    assert "teacher" not in pg.url  # the key left the address bar the projector shows
    pg.goto(f"{app.url}/arena")  # a new page load: the session cookie keeps it the teacher's
    pg.wait_for_selector("[data-testid=stChatInputTextArea]", timeout=SLOW)
    wait_idle(pg, SLOW)
    return pg


def switch(pg: Any, label: str) -> None:
    box = pg.locator("[data-testid=stCheckbox]").filter(has_text=label).first
    box.locator("label").click()
    time.sleep(0.3)
    wait_idle(pg, SLOW)


def start_class(teacher: Any) -> str:
    switch(teacher, "Presenter")
    switch(teacher, "Class")
    teacher.wait_for_selector("text=Students join at", timeout=SLOW)
    found = re.search(r"with code (\d{4})", teacher.inner_text("#stMain"))
    assert found, teacher.inner_text("#stMain")
    return found.group(1)


def phone(browser: Any, app: App, errors: list[str]) -> Any:
    pg = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                             has_touch=True).new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{app.url}/vote")
    return pg


def join(pg: Any, code: str) -> None:
    pg.wait_for_selector("text=Join code", timeout=SLOW)
    wait_idle(pg, SLOW)
    pg.get_by_label("Join code").fill(code)
    pg.get_by_role("button", name="Join").click()
    pg.wait_for_selector("text=You're in", timeout=SLOW)


def vote(pg: Any, label: str) -> None:
    pg.get_by_role("button", name=label, exact=True).click()
    pg.wait_for_selector(f"text=Your vote: {label}.", timeout=SLOW)


def main_text(pg: Any) -> str:
    return str(pg.inner_text("#stMain"))


# -- a teacher and eight phones ------------------------------------------------------------------


def test_a_class_votes_from_eight_phones_and_follows_the_teacher(
        app: App, double: Double, browser: Any) -> None:
    errors: list[str] = []
    teacher = teacher_page(browser, app)
    phones: list[Any] = []
    try:
        code = start_class(teacher)
        save_shot(teacher, "class-teacher-join.png", docs=True)
        phones = [phone(browser, app, errors) for _ in range(8)]
        for pg in phones:
            join(pg, code)
        ask(teacher, "Why is the sky blue?")
        for pg in phones:  # no reload: each phone's watcher brings the round
            pg.wait_for_selector("text=Which answer is better?", timeout=SLOW)
            assert "Why is the sky blue?" in main_text(pg)
            assert not any(n in main_text(pg) for n in NAMES + DISPLAY)
        save_shot(phones[0], "class-phone-vote.png", docs=True, full_page=True)
        picks = ["Response 1"] * 4 + ["Response 2"] * 2 + ["Tie", "All bad"]
        for pg, label in zip(phones, picks, strict=True):
            vote(pg, label)
        vote(phones[0], "Response 2")  # a change replaces the earlier vote
        # The teacher's tally, live: 8 votes, not 9; Response 1 three, Response 2 three.
        teacher.wait_for_selector("text=Response 2: 3", timeout=15_000)
        tally = teacher.locator(".st-key-class_tally").inner_text()
        for line in ("8 votes in", "Response 1: 3", "Response 2: 3", "Tie: 1", "All bad: 1"):
            assert line in tally, tally
        save_shot(teacher, "class-teacher-tally.png", docs=True)

        teacher.get_by_role("button", name="Close voting & reveal").click()
        for pg in phones:  # the reveal reaches every phone: the names and the class's result
            pg.wait_for_selector("text=The class called it a tie (8 votes).", timeout=SLOW)
            assert all(n in main_text(pg) for n in NAMES)
            assert "Which answer is better?" not in main_text(pg)
        save_shot(phones[0], "class-phone-result.png", full_page=True)
        expect(phones[0].locator("text=Your vote: Response 2.")).to_have_count(1)

        double.set_config(models(reply="A second answer, also anonymous."))
        ask(teacher, "And why are sunsets red?")
        for pg in phones:  # the next round, without a reload
            pg.wait_for_selector("text=And why are sunsets red?", timeout=SLOW)
            pg.wait_for_selector("text=Which answer is better?", timeout=SLOW)
            assert "Your vote" not in main_text(pg)
        teacher.wait_for_selector("text=0 votes in", timeout=SLOW)
    finally:
        for pg in (*phones, teacher):
            pg.context.close()
    assert not errors, f"JavaScript errors on the phones: {errors}"


# -- the teacher's pages are locked ------------------------------------------------------------


@pytest.fixture
def secrets_app(double: Double, tmp_path: Path) -> Iterator[App]:
    """A class app whose history and settings hold what no student may see."""
    double.set_config(models())
    store = open_store(tmp_path / "data")
    store.create_conversation(title="Secret history title", model=NAMES[0])
    open_settings(tmp_path / "data").save_profile("Lab box", double.url,
                                                  token="sk-secret-token-123")
    a = class_app(double, tmp_path)
    yield a
    stop(a.process)


@pytest.mark.parametrize("path", ["", "chat", "arena", "stats", "models", "settings"])
def test_without_the_teacher_key_a_page_shows_one_sentence_and_nothing_else(
        secrets_app: App, double: Double, page: Any, path: str) -> None:
    page.goto(f"{secrets_app.url}/{path}?teacher=wrong-key")
    page.wait_for_selector("text=ATOM is in class mode", timeout=SLOW)
    wait_idle(page, SLOW)
    time.sleep(1.0)  # anything drawn after the sentence would be here by now
    wait_idle(page, SLOW)
    text = page.inner_text("body")
    values = " ".join(page.eval_on_selector_all("input, textarea", "els => els.map(e => e.value)"))
    port = double.url.rsplit(":", 1)[1]
    for secret in (*NAMES, *DISPLAY, "Secret history title", "sk-secret", "•••", port,
                   "Lab box", "Server", "Chat", "Stats", "Models", "Settings"):
        assert secret not in text and secret not in values, (secret, text)
    expect(page.locator(".st-key-atom_nav")).to_have_count(0)
    expect(page.locator("[data-testid=stSidebar]")).to_have_count(0)
    expect(page.locator("input, textarea, button[kind]")).to_have_count(0)
    assert "students vote at" in text.lower()


# -- a wrong code, a vote after close, a phone reconnecting, the app restarted --------------------


def light(app: App, **kw: Any) -> LightSession:
    return LightSession(app.url, page="vote", **kw)


def test_wrong_code_reconnect_restart_and_a_vote_after_close(
        double: Double, browser: Any, tmp_path: Path) -> None:
    double.set_config(models())
    app = class_app(double, tmp_path)
    errors: list[str] = []
    teacher = phone_pg = None
    try:
        teacher = teacher_page(browser, app)
        code = start_class(teacher)
        phone_pg = phone(browser, app, errors)
        phone_pg.wait_for_selector("text=Join code", timeout=SLOW)
        wait_idle(phone_pg, SLOW)
        wrong = "0000" if code != "0000" else "1111"
        phone_pg.get_by_label("Join code").fill(wrong)
        phone_pg.get_by_role("button", name="Join").click()
        phone_pg.wait_for_selector("text=That is not this class's code", timeout=SLOW)
        join(phone_pg, code)
        ask(teacher, "Which is the largest planet?")
        phone_pg.wait_for_selector("text=Which answer is better?", timeout=SLOW)
        vote(phone_pg, "Response 1")

        # A phone reconnecting mid-round (a reload, a locked screen): the same student, its vote.
        phone_pg.reload()
        phone_pg.wait_for_selector("text=Your vote: Response 1.", timeout=SLOW)

        # The app restarted mid-round: the vote is kept, the phone reconnects by itself.
        port = int(app.url.rsplit(":", 1)[1])
        stop(app.process)
        app = class_app(double, tmp_path, port=port)
        wait_text(phone_pg, "Your vote: Response 1.", SLOW)
        wait_idle(phone_pg, SLOW)
        assert "Which is the largest planet?" in main_text(phone_pg)
        teacher.reload()  # the same key: the session cookie still opens the teacher's pages
        wait_text(teacher, "1 vote in", SLOW)

        # A phone that still shows the buttons when voting closes: its vote is refused.
        late = light(app, query=f"code={code}", follow_auto_rerun=False)
        loop = Loop()
        try:
            loop.run(late.connect())
            loop.run(late.wait_for_text("Which answer is better?", timeout=60))
            teacher.get_by_role("button", name="Close voting & reveal").click()
            stored = open_store(tmp_path / "data")
            deadline = time.monotonic() + 60
            while not getattr(classroom.class_round(stored, classroom.active_class(stored)),
                              "revealed", False):  # closed on the server, still shown there
                assert time.monotonic() < deadline
                time.sleep(0.2)
            loop.run(late.click("Tie"))
            loop.run(late.wait_for_text("Voting on this round has closed.", timeout=60))
            assert "The class chose" in late.text  # redrawn closed; the late vote not counted
        finally:
            loop.run(late.close())
            loop.close()
        phone_pg.wait_for_selector("text=The class chose Response 1", timeout=SLOW)
        stored = open_store(tmp_path / "data")
        rnd = classroom.class_round(stored, classroom.active_class(stored))
        assert rnd is not None and classroom.tally(rnd).total == 1
    finally:
        for pg in (phone_pg, teacher):
            if pg is not None:
                pg.context.close()
        stop(app.process)
    assert not errors, f"JavaScript errors on the phone: {errors}"
