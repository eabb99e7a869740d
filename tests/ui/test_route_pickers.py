"""The Chat page's route picker, against the real test server: a stateful two-turn chat over
LM Studio's native route sends only the new message the second time, and a route the server
lacks is one sentence, then marked in the picker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from atom_core import arena
from atom_core.chat import conversation_route
from atom_core.history.tinydb_store import open_store
from tests.fixtures.apptest import new_app, slot_settings
from tests.fixtures.lmstudio_double import DoubleServer, serve

pytestmark = pytest.mark.integration

MODEL = {"key": "r/plain", "ttft_ms": 10, "token_gap_ms": 5, "reply": "one two three"}


@pytest.fixture(scope="module")
def double() -> Iterator[DoubleServer]:
    with serve({"models": [MODEL]}) as server:
        yield server


@pytest.fixture
def app(double: DoubleServer, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    at = new_app().run()
    assert not at.exception
    return at


def texts(elements: object) -> list[str]:
    return [str(e.value) for e in elements]  # type: ignore[attr-defined]


@pytest.mark.parametrize("route", ["native", "responses"])
def test_a_stateful_chat_sends_only_the_new_message_on_its_second_turn(
    route: str, app: AppTest, double: DoubleServer, isolated_env: Path
) -> None:
    double.set_config({"models": [MODEL]})
    app.selectbox(key="route-new").set_value(route).run()
    app.chat_input[0].set_value("Hello there").run()
    assert not app.exception
    assert texts(app.chat_message[1].markdown) == ["one two three"]
    store = open_store(isolated_env)
    (conv,) = store.list_conversations()
    first = conversation_route(store, conv.id)
    assert first.route == route and first.response_id
    assert any(f"continuing response {first.response_id[:16]}" in c for c in texts(app.caption))

    app.chat_input[0].set_value("More please").run()
    assert not app.exception
    assert texts(app.chat_message[3].markdown) == ["one two three"]
    path = {"native": "/api/v1/chat", "responses": "/v1/responses"}[route]
    bodies = [r["body"] for r in double.log() if r["path"] == path]
    assert "previous_response_id" not in bodies[-2]
    assert bodies[-1]["previous_response_id"] == first.response_id
    assert "Hello there" not in str(bodies[-1]["input"])
    assert [r["route"] for r in store.run_rows()] == [route, route]


def test_a_route_the_server_lacks_is_a_sentence_then_marked(
    app: AppTest, double: DoubleServer, isolated_env: Path
) -> None:
    double.set_config({"models": [MODEL], "dialect": "lmstudio-0.3"})
    app = new_app().run()
    app.selectbox(key="route-new").set_value("messages").run()
    app.chat_input[0].set_value("Hi").run()
    assert not app.exception
    (error,) = texts(app.chat_message[1].error)
    assert "does not offer POST /v1/messages" in error
    (conv,) = open_store(isolated_env).list_conversations()
    picker = app.selectbox(key=f"route-{conv.id}")
    assert picker.value == "messages"
    assert "Messages (Anthropic) — not offered here" in picker.options
    # The app keeps working: back to chat completions in the same conversation.
    picker.set_value("completions").run()
    app.chat_input[0].set_value("Again").run()
    assert not app.exception
    assert texts(app.chat_message[3].markdown) == ["one two three"]


def test_a_failed_native_reply_shows_its_sentence_and_no_figures(
    app: AppTest, double: DoubleServer, isolated_env: Path
) -> None:
    """LM Studio 0.3 has no /api/v1/chat: the reply is that sentence, under no '0 tokens ·
    9 ms total' caption, and the run is a failed one without figures."""
    double.set_config({"models": [MODEL], "dialect": "lmstudio-0.3"})
    app = new_app().run()
    app.selectbox(key="route-new").set_value("native").run()
    app.chat_input[0].set_value("Hi").run()
    assert not app.exception
    (error,) = texts(app.chat_message[1].error)
    assert "does not offer POST /api/v1/chat" in error
    captions = texts(app.chat_message[1].caption)
    assert captions and not any("token" in c or "total" in c for c in captions), captions
    (run,) = open_store(isolated_env).run_rows()
    assert run["ok"] is False and run["e2e_s"] is None and run["output_tokens"] is None


# -- Arena: a route per slot ----------------------------------------------------------------------


def race(app: AppTest, routes: list[str], prompt: str = "Race") -> None:
    app.switch_page("pages/arena.py").run()
    assert not app.exception
    app.segmented_control(key="arena_n").set_value(len(routes)).run()
    slot_settings(app, *range(len(routes)))
    for i, route in enumerate(routes):
        app.selectbox(key=f"arena_model_{i}").set_value(MODEL["key"]).run()
        app.selectbox(key=f"arena_route_{i}").set_value(route).run()
    app.chat_input(key="arena_prompt").set_value(prompt).run()
    assert not app.exception


def test_the_same_model_races_itself_over_two_routes(
    app: AppTest, double: DoubleServer, isolated_env: Path
) -> None:
    double.set_config({"models": [MODEL]})
    race(app, ["completions", "native", "messages"])
    store = open_store(isolated_env)
    (rnd,) = arena.load_rounds(store)
    assert [s.route for s in rnd.slots] == ["completions", "native", "messages"]
    assert [s.state for s in rnd.slots] == ["complete"] * 3
    assert all(s.content == "one two three" for s in rnd.slots)
    assert rnd.slots[1].contestant == "r/plain (via native)"
    names = texts(app.markdown)
    assert "Route" in names and "LM Studio native" in names
    runs = {r["slot"]: r for r in store.run_rows()}
    assert [runs[x]["route"] for x in "ABC"] == ["completions", "native", "messages"]
    assert runs["B"]["server_tps"] is not None and runs["A"]["server_tps"] is None
    paths = [r["path"] for r in double.log() if r["method"] == "POST"]
    assert sorted(paths[-3:]) == ["/api/v1/chat", "/v1/chat/completions", "/v1/messages"]


def test_a_slot_on_a_route_the_server_lacks_is_one_sentence(
    app: AppTest, double: DoubleServer, isolated_env: Path
) -> None:
    double.set_config({"models": [MODEL], "dialect": "lmstudio-0.3"})
    app = new_app().run()
    race(app, ["completions", "messages"])
    (rnd,) = arena.load_rounds(open_store(isolated_env))
    assert [s.state for s in rnd.slots] == ["complete", "error"]
    (error,) = texts(app.error)
    assert "does not offer POST /v1/messages" in error
    assert "Messages (Anthropic) — not offered here" in app.selectbox(key="arena_route_1").options


THINKER = {"key": "r/thinker", "ttft_ms": 10, "token_gap_ms": 5, "reply": "yes",
           "reasoning": "let me think",
           "capabilities": {"vision": False, "trained_for_tool_use": False,
                            "reasoning": {"allowed_options": ["off", "on"], "default": "on"}}}


def test_reasoning_is_offered_where_the_model_lists_it_and_sent(
    double: DoubleServer, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    double.set_config({"models": [THINKER]})  # before the app's client learns the server
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    app = new_app().run()
    app.selectbox(key="route-new").set_value("native").run()
    app.chat_input[0].set_value("Think first").run()
    assert texts(app.chat_message[1].markdown)[-1] == "yes"
    (conv,) = open_store(isolated_env).list_conversations()
    reasoning = app.selectbox(key=f"route-reason-{conv.id}")
    assert reasoning.options == ["default", "off", "on"] and reasoning.value == "default"
    reasoning.set_value("off").run()
    app.chat_input[0].set_value("No thinking now").run()
    assert not app.exception
    bodies = [r["body"] for r in double.log() if r["path"] == "/api/v1/chat"]
    assert "reasoning" not in bodies[-2] and bodies[-1]["reasoning"] == "off"
    assert conversation_route(open_store(isolated_env), conv.id).reasoning == "off"
    # The second reply came without reasoning: nothing folded above it.
    assert len(app.chat_message[3].expander) == 0


def test_reasoning_is_offered_before_the_first_message_and_sent_with_it(
    double: DoubleServer, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    """On the native route the Reasoning select is there on the first visit, before any chat
    exists, and what is picked there goes with the first message and stays with the chat."""
    double.set_config({"models": [THINKER]})
    double.reset()
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    app = new_app().run()
    assert not [s for s in app.selectbox if s.key == "route-reason-new"]  # completions: none
    app.selectbox(key="route-new").set_value("native").run()
    reasoning = app.selectbox(key="route-reason-new")
    assert reasoning.options == ["default", "off", "on"] and reasoning.value == "default"
    reasoning.set_value("off").run()
    app.chat_input[0].set_value("No thinking").run()
    assert not app.exception
    (body,) = [r["body"] for r in double.log() if r["path"] == "/api/v1/chat"]
    assert body["reasoning"] == "off"
    (conv,) = open_store(isolated_env).list_conversations()
    assert conversation_route(open_store(isolated_env), conv.id).reasoning == "off"
    assert app.selectbox(key=f"route-reason-{conv.id}").value == "off"


EFFORT = {**THINKER, "key": "r/effort",
          "capabilities": {"vision": False, "trained_for_tool_use": False,
                           "reasoning": {"allowed_options": ["off", "low", "medium", "high"],
                                         "default": "medium"}}}


def test_each_arena_slot_sets_its_own_reasoning_and_it_is_sent_and_recorded(
    double: DoubleServer, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    double.set_config({"models": [EFFORT, MODEL]})
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    app = new_app().run()
    app.switch_page("pages/arena.py").run()
    app.segmented_control(key="arena_n").set_value(3).run()
    slot_settings(app, 0, 1, 2)
    for i, route in enumerate(["native", "responses", "completions"]):
        app.selectbox(key=f"arena_model_{i}").set_value(EFFORT["key"]).run()
        app.selectbox(key=f"arena_route_{i}").set_value(route).run()
    # offered on the routes that carry it, with the model's own options; not on completions
    assert app.selectbox(key="arena_reason_0").options == ["default", "off", "low", "medium",
                                                           "high"]
    assert not [s for s in app.selectbox if s.key == "arena_reason_2"]
    app.selectbox(key="arena_reason_0").set_value("off").run()
    app.selectbox(key="arena_reason_1").set_value("high").run()
    # a model that lists no reasoning options gets no picker
    app.selectbox(key="arena_model_2").set_value(MODEL["key"]).run()
    app.selectbox(key="arena_route_2").set_value("native").run()
    assert not [s for s in app.selectbox if s.key == "arena_reason_2"]
    slot_settings(app, 0, 1, 2, open_=False)  # folded away: the slots keep their settings
    assert not [s for s in app.selectbox if s.key.startswith("arena_reason_")]
    app.chat_input(key="arena_prompt").set_value("Think or not").run()
    assert not app.exception, app.exception
    store = open_store(isolated_env)
    (rnd,) = arena.load_rounds(store)
    assert [s.reasoning_setting for s in rnd.slots] == ["off", "high", None]
    assert [s.state for s in rnd.slots] == ["complete"] * 3
    assert rnd.slots[0].contestant == "r/effort (via native · reasoning off)"
    runs = {r["slot"]: r for r in store.run_rows()}
    assert [runs[x].get("reasoning_setting") for x in "ABC"] == ["off", "high", None]
    log = [r for r in double.log() if r["method"] == "POST"][-3:]
    native = {r["body"]["model"]: r["body"] for r in log if r["path"] == "/api/v1/chat"}
    assert native[EFFORT["key"]]["reasoning"] == "off"
    assert "reasoning" not in native[MODEL["key"]]
    (responses,) = [r["body"] for r in log if r["path"] == "/v1/responses"]
    assert responses["reasoning"] == {"effort": "high"}
    names = texts(app.markdown)
    assert "Reasoning" in names and "high" in names and "default" in names


def test_a_servers_response_id_is_shown_as_plain_text(app: AppTest, isolated_env: Path) -> None:
    from atom_core.chat import set_conversation_route

    store = open_store(isolated_env)
    conv = store.create_conversation(title="Stored", model=MODEL["key"])
    set_conversation_route(store, conv.id, route="responses",
                           response_id="resp_![](//e/a)", full_history=False)
    app.session_state["conversation_id"] = conv.id
    app.run()
    assert not app.exception
    line = next(c for c in texts(app.caption) if "continuing response" in c)
    assert "response resp" in line and "![" not in line  # an image in the id is escaped
