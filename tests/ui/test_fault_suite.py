"""The fault suite (issue 14 §8): Chat and an Arena slot against the real test server
(tests/fixtures/lmstudio_double.py) switched into each fault a bad server can produce.

For every case: one clear sentence on the page (never a traceback or a page-sized body), the
app keeps working (the next request on a healthy model answers), and the reply is saved with
what arrived and a state that says how it ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from atom_core import arena
from atom_core.history.tinydb_store import open_store
from tests.fixtures.apptest import new_app, press_stop
from tests.fixtures.lmstudio_double import DoubleServer, serve

pytestmark = pytest.mark.integration

GOOD = "fault/good"
# The Stop test's model: a 30 s keep-alive stall after two tokens, so Stop lands inside the stall
# however busy the machine is (the 600 ms stall of the "stall_keepalive" case could end first).
STALL_LONG = "fault/stall_long"
REPLY = "alpha beta gamma delta epsilon zeta"  # six tokens: " beta" is token 1


@dataclass(frozen=True)
class Case:
    fail_mode: str
    state: str  # how the reply is saved
    content: str  # what of it is saved (and shown)
    sentence: str  # a piece of the one sentence shown ("" when none is shown)


CASES = {
    "stall_keepalive": Case("stall:2:600", "complete", REPLY, ""),
    "http500_html": Case("http500_html", "error", "",
                         "The server failed (HTTP 500): 500 Internal Server Error"),
    "http500_huge": Case("http500_huge", "error", "", "more)"),
    "http500_empty": Case("http500_empty", "error", "", "and said nothing more"),
    "malformed_deltas": Case("bad_delta:2", "complete", REPLY, ""),
    "error_mid_stream": Case("error_in_stream:3", "error", "alpha beta gamma",
                             "The server reported an error mid-reply"),
    "non_utf8": Case("non_utf8:2", "complete", "alpha beta\ufffd\ufffd gamma delta epsilon zeta",
                     ""),
    "no_done_after_finish": Case("no_done", "complete", REPLY, ""),
    "no_done_no_finish": Case("no_done:3", "interrupted", "alpha beta gamma",
                              "ended before the server finished"),
    "cut_connection": Case("cut_after:3", "interrupted", "alpha beta gamma", "connection broke"),
}


def spec(key: str, fail_mode: str | None = None) -> dict[str, object]:
    return {"key": key, "ttft_ms": 20, "token_gap_ms": 15, "reply": REPLY,
            "fail_mode": fail_mode}


@pytest.fixture(scope="module")
def double() -> Iterator[DoubleServer]:
    models = [spec(GOOD), spec(STALL_LONG, "stall:2:30000")]
    models += [spec(f"fault/{name}", c.fail_mode) for name, c in CASES.items()]
    with serve({"models": models}) as server:
        yield server


@pytest.fixture
def app(double: DoubleServer, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    at = new_app().run()
    assert not at.exception
    return at


def texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


def one_sentence(shown: list[str], case: Case) -> None:
    if not case.sentence:
        assert shown == []
        return
    assert len(shown) == 1, shown
    (sentence,) = shown
    assert case.sentence in sentence and len(sentence) < 700
    assert "Traceback (most" not in sentence[:100] or "more)" in sentence  # capped, not dumped
    assert "<" not in sentence


# -- Chat -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_chat_survives(name: str, app: AppTest, isolated_env: Path) -> None:
    case = CASES[name]
    app.sidebar.selectbox(key="model").set_value(f"fault/{name}").run()
    app.chat_input[0].set_value("Tell me").run()
    assert not app.exception
    reply = app.chat_message[1]
    assert texts(reply.markdown) == ([case.content] if case.content else [])
    one_sentence(texts(reply.error) + [w for w in texts(reply.warning)], case)

    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    saved = store.messages(conv.id)[1]
    assert saved.state == case.state and saved.content == case.content
    assert (store.run_rows()[-1]["state"]) == case.state

    # The app keeps working: the same conversation goes on with a healthy model.
    app.sidebar.selectbox(key="model").set_value(GOOD).run()
    app.chat_input[0].set_value("Again").run()
    assert not app.exception
    assert texts(app.chat_message[3].markdown) == [REPLY]
    assert store.messages(conv.id)[3].state == "complete"


def test_chat_stop_during_a_keepalive_stall_keeps_the_partial_reply(
    app: AppTest, double: DoubleServer, isolated_env: Path
) -> None:
    stalled = STALL_LONG

    def stop_once_stalled() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = [r for r in double.log() if r.get("model") == stalled]
            if rows and rows[-1].get("fault") == "stall":
                time.sleep(0.15)  # a keep-alive comment or two, no tokens
                press_stop()
                return
            time.sleep(0.02)

    app.sidebar.selectbox(key="model").set_value(stalled).run()
    stopper = threading.Thread(target=stop_once_stalled)
    stopper.start()
    app.chat_input[0].set_value("Tell me").run()
    stopper.join()
    shown = new_app().run()  # what a reload shows
    assert not shown.exception
    assert texts(shown.chat_message[1].markdown) == ["alpha beta"]
    assert texts(shown.chat_message[1].warning) == ["Stopped"]
    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    assert store.messages(conv.id)[1].state == "stopped"
    assert double.wait_idle(5)
    assert [r for r in double.log() if r.get("model") == stalled][-1]["closed_early"]


# -- Arena ----------------------------------------------------------------------------------------


def reply_columns(at: AppTest) -> dict[str, tuple[list[str], list[str]]]:
    """Column title -> (its markdown after the title, its error and warning sentences)."""
    out = {}
    for col in at.columns:
        md = texts(col.markdown)
        if md and md[0].startswith("#### "):
            out[md[0][5:]] = (md[1:], texts(col.error) + texts(col.warning))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_an_arena_slot_survives(name: str, app: AppTest, isolated_env: Path) -> None:
    case = CASES[name]
    app.switch_page("pages/arena.py").run()
    assert not app.exception
    app.segmented_control(key="arena_n").set_value(2).run()
    app.selectbox(key="arena_model_0").set_value(GOOD).run()
    app.selectbox(key="arena_model_1").set_value(f"fault/{name}").run()
    app.chat_input(key="arena_prompt").set_value("Race").run()
    assert not app.exception
    columns = reply_columns(app)
    assert columns["Model A"] == ([REPLY], [])
    content, sentences = columns["Model B"]
    assert content == ([case.content] if case.content else [])
    one_sentence(sentences, case)
    (rnd,) = arena.load_rounds(open_store(isolated_env))
    assert [s.state for s in rnd.slots] == ["complete", case.state]
    assert rnd.slots[1].content == case.content
    # The app keeps working: the next race runs.
    app.chat_input(key="arena_prompt").set_value("Again").run()
    assert not app.exception
    assert len(arena.load_rounds(open_store(isolated_env))) == 2
