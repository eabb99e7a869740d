"""The Arena page in AppTest, against respx-mocked LM Studio routes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import respx
from streamlit.testing.v1 import AppTest

from atom_core import arena
from atom_core.arena import promptsets
from atom_core.history import open_store
from atom_core.words import EMPTY_CELL
from tests.fixtures.apptest import new_app, press_stop, slot_settings
from tests.fixtures.sse import SSE_HEADERS, chunk, sse_body


def model(key: str, name: str, loaded: bool = True, quant: str = "Q4_K_M") -> dict[str, Any]:
    return {
        "type": "llm", "publisher": "test", "key": key, "display_name": name,
        "architecture": "llama", "quantization": {"name": quant, "bits_per_weight": 4},
        "size_bytes": 1_500_000_000, "params_string": "1B", "max_context_length": 32768,
        "format": "gguf", "capabilities": {"vision": False, "trained_for_tool_use": False},
        "loaded_instances": [{"id": key, "config": {"context_length": 4096}}] if loaded else [],
    }


MODELS = {"models": [model("t/one", "One"), model("t/two", "Two", quant="Q8_0"),
                     model("t/three", "Three")]}
REPLIES = {"t/one": ("The", " first", " answer."), "t/two": ("Second", " here."),
           "t/three": ("Third", " reply", " is", " longest", " by", " far.")}


def chat_route(mock: respx.MockRouter, fail: str | None = None) -> respx.Route:
    def reply(request: httpx.Request) -> httpx.Response:
        key = json.loads(request.content)["model"]
        if key == fail:
            return httpx.Response(500, json={"error": {"message": "GPU fell over"}})
        return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(*REPLIES[key]))

    return mock.post("/v1/chat/completions").mock(side_effect=reply)


def open_arena(mock: respx.MockRouter, listing: dict[str, Any] = MODELS) -> AppTest:
    mock.get("/api/v1/models").respond(json=listing)
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    assert not at.exception
    return at


def reply_columns(at: AppTest) -> dict[str, list[str]]:
    """Column title (plus its caption, when names are shown) -> the markdown under it."""
    out = {}
    for col in at.columns:
        texts = [str(m.value) for m in col.markdown]
        if texts and texts[0].startswith("#### "):
            captions = [str(c.value) for c in col.caption]
            title = texts[0][5:] + (f" · {captions[0]}" if captions else "")
            out[title] = texts[1:]
    return out


def test_a_three_slot_race_puts_each_reply_in_its_own_column(mock: respx.MockRouter,
                                                             isolated_env: Path) -> None:
    chats = chat_route(mock)
    at = open_arena(mock)
    assert [at.selectbox(key=f"arena_model_{i}").value for i in range(3)] == [
        "t/one", "t/two", "t/three"]
    at.chat_input(key="arena_prompt").set_value("Say something").run()
    assert not at.exception
    assert reply_columns(at) == {
        "Model A · t/one": ["The first answer."],
        "Model B · t/two": ["Second here."],
        "Model C · t/three": ["Third reply is longest by far."],
    }
    assert len(chats.calls) == 3
    assert {json.loads(c.request.content)["messages"][-1]["content"] for c in chats.calls} == {
        "Say something"}
    (rnd,) = arena.load_rounds(open_store(isolated_env))
    assert rnd.prompt == "Say something" and [s.state for s in rnd.slots] == ["complete"] * 3
    assert {r["source"] for r in open_store(isolated_env).run_rows()} == {"arena"}
    # The results grid names every measure, with hover help, and the vote bar waits.
    names = [str(m.value) for m in at.markdown]
    for measure in ("TTFT", "Decode tok/s", "Tokens", "End-to-end", "Stop reason",
                    "Quantization", "Context length"):
        assert measure in names
    assert next(m for m in at.markdown if m.value == "TTFT").help == arena.HELP["ttft"]
    assert "Q8_0" in names
    assert [b.label for b in at.button if b.key and b.key.startswith("vote-")] == [
        "Model A", "Model B", "Model C", "Tie", "All bad"]


def test_a_failing_slot_shows_its_error_and_the_others_finish(mock: respx.MockRouter,
                                                              isolated_env: Path) -> None:
    chat_route(mock, fail="t/two")
    at = open_arena(mock)
    at.chat_input(key="arena_prompt").set_value("Go").run()
    assert not at.exception
    columns = reply_columns(at)
    assert columns["Model A · t/one"] == ["The first answer."]
    assert columns["Model C · t/three"] == ["Third reply is longest by far."]
    assert columns["Model B · t/two"] == []
    errors = [str(e.value) for e in at.error]
    assert len(errors) == 1 and "GPU fell over" in errors[0]
    states = [s.state for s in arena.load_rounds(open_store(isolated_env))[0].slots]
    assert states == ["complete", "error", "complete"]


def test_models_not_loaded_are_loaded_first(mock: respx.MockRouter, isolated_env: Path) -> None:
    listing = {"models": [model("t/one", "One"), model("t/two", "Two", loaded=False)]}
    chat_route(mock)
    load = mock.post("/api/v1/models/load").respond(json={
        "type": "llm", "instance_id": "t/two", "load_time_seconds": 1.25, "status": "loaded",
        "load_config": {"context_length": 4096}})
    at = open_arena(mock, listing)
    at.segmented_control(key="arena_n").set_value(2).run()
    at.chat_input(key="arena_prompt").set_value("Hi").run()
    assert not at.exception
    assert load.called and json.loads(load.calls.last.request.content)["model"] == "t/two"
    assert reply_columns(at)["Model B · t/two"] == ["Second here."]
    rnd = arena.load_rounds(open_store(isolated_env))[0]
    assert rnd.slots[1].load_s == 1.25 and rnd.slots[0].load_s is None
    assert "Load (before the race)" in [str(m.value) for m in at.markdown]


def test_blind_vote_is_saved_reveals_names_and_moves_the_leaderboard(
        mock: respx.MockRouter, isolated_env: Path) -> None:
    chat_route(mock)
    at = open_arena(mock)
    at.toggle(key="arena_blind").set_value(True).run()
    at.chat_input(key="arena_prompt").set_value("Who is best?").run()
    assert not at.exception
    titles = list(reply_columns(at))
    assert titles == ["Response 1", "Response 2", "Response 3"]  # no names before the vote
    assert "Quantization" not in [str(m.value) for m in at.markdown]
    store = open_store(isolated_env)
    rnd = arena.load_rounds(store)[0]
    winner_slot = rnd.positions[1]  # whoever is shown as Response 2
    winner = rnd.slots[winner_slot].model

    at.button(key="vote-1").click().run()
    assert not at.exception
    voted = arena.load_rounds(store)[0]
    assert voted.vote is not None and voted.vote.outcome == "win"
    assert voted.vote.winner == winner_slot and voted.vote.blind
    assert f"Response 2 · Model {arena.SLOT_LABELS[winner_slot]} · {winner}" in reply_columns(
        at)  # revealed
    assert any("Your vote" in str(s.value) for s in at.success)

    at.segmented_control(key="arena_view").set_value("Leaderboard").run()
    assert not at.exception
    board = at.dataframe[0].value
    assert list(board["Model"])[0] == winner
    top = board.iloc[0]
    assert top["W/T/L"] == "2/0/0" and top["Battles"] == 2 and top["Win rate"] == 1.0
    assert top["BT"] > board.iloc[1]["BT"]
    assert top["Elo"] == 1031  # two wins in a row: 1000 + 16 + 14.53
    assert top["BT 95% CI"] == "more votes needed"


def test_leaderboard_without_votes_says_how_to_get_some(mock: respx.MockRouter) -> None:
    at = open_arena(mock)
    at.segmented_control(key="arena_view").set_value("Leaderboard").run()
    assert not at.exception
    assert "No votes yet" in str(at.info[0].value)


def test_presenter_mode_is_blind_with_a_reveal_button(mock: respx.MockRouter,
                                                      isolated_env: Path) -> None:
    chat_route(mock)
    at = open_arena(mock)
    at.toggle(key="arena_presenter").set_value(True).run()
    assert at.toggle(key="arena_blind").value is True
    assert [e.label for e in at.expander][0] == "Contestants and settings"  # folded away
    at.chat_input(key="arena_prompt").set_value("Class question").run()
    assert not arena.load_rounds(open_store(isolated_env))[0].revealed
    assert list(reply_columns(at))[0] == "Response 1"
    at.button(key="reveal").click().run()
    assert not at.exception
    assert all("· Model " in t for t in reply_columns(at))
    assert arena.load_rounds(open_store(isolated_env))[0].revealed


def test_a_new_session_shows_the_latest_round(mock: respx.MockRouter) -> None:
    chat_route(mock)
    at = open_arena(mock)
    at.chat_input(key="arena_prompt").set_value("Remember me").run()
    again = new_app().run()
    again.switch_page("pages/arena.py").run()
    assert not again.exception
    assert [str(m.markdown[0].value) for m in again.chat_message] == ["Remember me"]
    assert reply_columns(again)["Model A · t/one"] == ["The first answer."]


def test_prompt_set_runs_and_reports_checks(mock: respx.MockRouter, isolated_env: Path) -> None:
    chats = chat_route(mock)
    at = open_arena(mock)
    at.segmented_control(key="arena_view").set_value("Prompt sets").run()
    at.segmented_control(key="arena_n").set_value(2).run()
    at.text_area(key="ps_text").set_value("prompt,contains\nFirst?,first\nSecond?,\n").run()
    assert "2 prompts · 1 check" in [str(c.value) for c in at.caption]
    at.checkbox(key="ps_warm").set_value(False).run()
    run_button = next(b for b in at.button if b.label.startswith("Run "))
    assert run_button.label == "Run 4 requests on 2 models"
    run_button.click().run()
    assert not at.exception
    assert len(chats.calls) == 4
    store = open_store(isolated_env)
    (run,) = promptsets.list_runs(store)
    records = promptsets.run_records(store, run.id)
    assert len(records) == 4 and all(r.ok for r in records)
    summary, checks = at.dataframe[0].value, at.dataframe[1].value
    assert list(summary["slot"]) == ["Model A", "Model B"]
    assert "thinking_p50_s" not in summary.columns  # no model reasoned: no thinking columns
    assert checks.iloc[0].to_dict() == {"prompt": "First?", "check": "contains “first”",
                                        "Model A": "1/1", "Model B": "0/1"}
    # the run keeps what each slot ran on, for its reports (as loaded: the listing's instance)
    assert [(s.model_info.get("quantization"), s.model_info.get("params"), s.instance_config)
            for s in run.slots] == [("Q4_K_M", "1B", {"context_length": 4096}),
                                    ("Q8_0", "1B", {"context_length": 4096})]


def test_a_prompt_set_where_a_model_reasoned_shows_first_answer_and_thinking(
        mock: respx.MockRouter) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["model"] == "t/one":  # thinks first, then answers
            body = "".join([chunk("", role=True), chunk(reasoning="Let"), chunk(reasoning=" me"),
                            chunk(reasoning=" think."), chunk("Yes."), chunk(finish="stop"),
                            "data: [DONE]\n\n"]).encode()
            return httpx.Response(200, headers=SSE_HEADERS, content=body)
        return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(*REPLIES["t/two"]))

    mock.post("/v1/chat/completions").mock(side_effect=reply)
    at = open_arena(mock)
    at.segmented_control(key="arena_view").set_value("Prompt sets").run()
    at.segmented_control(key="arena_n").set_value(2).run()
    at.text_area(key="ps_text").set_value("prompt\nWhy?\n").run()
    at.checkbox(key="ps_warm").set_value(False).run()
    next(b for b in at.button if b.label.startswith("Run ")).click().run()
    assert not at.exception
    summary = at.dataframe[0].value
    assert {"first_answer_p50_s", "thinking_p50_s"} <= set(summary.columns)
    one, two = summary.iloc[0], summary.iloc[1]
    assert one["thinking_p50_s"] >= 0 and one["first_answer_p50_s"] >= one["ttft_p50_s"]
    assert pd.isna(two["thinking_p50_s"])  # the model that did not reason has no thinking time
    # ...shown as a blank cell, not the word "None"
    assert at.dataframe[0].proto.HasField("placeholder")
    assert at.dataframe[0].proto.placeholder == EMPTY_CELL


def test_slots_can_pick_models_from_several_servers(
        mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    second = "http://second.test:1234"
    monkeypatch.setenv("ATOM_EXTRA_SERVERS", second)
    mock.get(f"{second}/api/v1/models").respond(json={"models": [model("far/one", "Far One")]})
    far = mock.post(f"{second}/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("From", " afar."))
    chat_route(mock)
    at = open_arena(mock)
    at.segmented_control(key="arena_n").set_value(2).run()
    assert at.selectbox(key="arena_server_1").options[1].endswith(f"({second})")
    at.selectbox(key="arena_server_1").set_value(second).run()
    assert at.selectbox(key="arena_model_1").value == "far/one"
    at.chat_input(key="arena_prompt").set_value("Hello both").run()
    assert not at.exception
    assert far.called
    assert reply_columns(at)["Model B · far/one"] == ["From afar."]
    rnd = arena.load_rounds(open_store(isolated_env))[0]
    assert [s.server for s in rnd.slots] == ["http://lms.test:1234", second]


def test_an_openai_server_races_without_loading_and_says_so(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(404, json={"error": {"message": "File Not Found"}})
    mock.get("/api/v0/models").respond(404, json={"error": {"message": "File Not Found"}})
    mock.get("/v1/models").respond(json={"object": "list", "data": [
        {"id": "t/one", "object": "model"}, {"id": "t/two", "object": "model"}]})
    load = mock.post("/api/v1/models/load").respond(404)
    chat_route(mock)
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    assert at.segmented_control(key="arena_n").value == 2  # two models: two slots
    at.chat_input(key="arena_prompt").set_value("Hi").run()
    assert not at.exception
    assert not load.called
    assert any("OpenAI-compatible server" in str(i.value) for i in at.info)
    assert reply_columns(at)["Model B · t/two"] == ["Second here."]


class SlowStream(httpx.SyncByteStream):
    """Streams a few tokens, presses Stop (as the user would) once, then would go on for long."""

    pressed = False

    def __init__(self) -> None:
        self.sent = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield chunk("", role=True).encode()
        for i in range(200):
            if i == 3 and not SlowStream.pressed:
                SlowStream.pressed = True
                press_stop()
            time.sleep(0.02)
            self.sent += 1
            yield chunk(f"w{i} ").encode()
        yield (chunk(finish="stop") + "data: [DONE]\n\n").encode()

    def close(self) -> None:
        self.closed = True


def test_stop_ends_every_stream_and_keeps_what_arrived(mock: respx.MockRouter,
                                                       isolated_env: Path) -> None:
    streams: list[SlowStream] = []

    def reply(request: httpx.Request) -> httpx.Response:
        streams.append(SlowStream())
        return httpx.Response(200, headers=SSE_HEADERS, stream=streams[-1])

    SlowStream.pressed = False
    mock.post("/v1/chat/completions").mock(side_effect=reply)
    at = open_arena(mock)
    at.chat_input(key="arena_prompt").set_value("Go on and on").run()
    deadline = time.monotonic() + 5
    while not all(s.closed for s in streams) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(streams) == 3 and all(s.closed and s.sent < 200 for s in streams)
    (rnd,) = arena.load_rounds(open_store(isolated_env))
    assert [s.state for s in rnd.slots] == ["stopped"] * 3
    assert all(s.content.startswith("w0 ") for s in rnd.slots)
    shown = new_app().run()
    shown.switch_page("pages/arena.py").run()
    assert [str(w.value) for w in shown.warning] == ["Stopped"] * 3


def test_a_stopped_prompt_set_resumes_where_it_left_off(mock: respx.MockRouter,
                                                        isolated_env: Path) -> None:
    chats = chat_route(mock)
    store = open_store(isolated_env)
    pset = promptsets.parse_prompt_set("One?\nTwo?", name="Two prompts")
    setups = [arena.SlotSetup(server="http://lms.test:1234", model=m) for m in ("t/one", "t/two")]
    run = promptsets.new_run(store, pset, setups, ["t/one", "t/two"],
                             promptsets.RunSettings(warmup=False, concurrency=2))
    store.append(promptsets.RECORDS_TABLE, {  # one of four finished before the stop
        "run_id": run.id, "prompt_index": 0, "slot": 0, "repeat": 0, "label": "A",
        "model": "t/one", "contestant": "t/one", "server": "http://lms.test:1234",
        "content": "Done before.", "reasoning": "", "ok": True, "error": "", "checks": [],
        "metrics": {"ttft_s": 0.1, "e2e_s": 0.5, "decode_tps": 20.0, "itl_p50_s": None,
                    "itl_p95_s": None, "output_tokens": 5, "tokens_source": "usage"}})
    at = open_arena(mock)
    at.segmented_control(key="arena_view").set_value("Prompt sets").run()
    assert "1 of 4 succeeded" in [str(p.text) for p in at.get("progress")][0]
    next(b for b in at.button if b.label == "Resume").click().run()
    assert not at.exception
    assert len(chats.calls) == 3  # only the three missing requests
    records = promptsets.run_records(store, run.id)
    assert len(records) == 4 and records[0].content == "Done before."
    assert "4 of 4 succeeded" in [str(p.text) for p in at.get("progress")][0]


def test_no_server_is_one_sentence_not_one_per_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_SERVER_URL", "http://127.0.0.1:9")  # nothing listens there
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    assert not at.exception
    errors = [str(e.value) for e in at.main.error]
    assert len(errors) == 1 and errors[0].startswith("Can't reach a model server")
    assert at.chat_input(key="arena_prompt").disabled


def test_config_arena_from_the_slot_settings(mock: respx.MockRouter, isolated_env: Path) -> None:
    one = {"models": [model("t/one", "One")]}
    chat = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("ok"))
    load = mock.post("/api/v1/models/load").respond(json={
        "type": "llm", "instance_id": "t/one:2", "load_time_seconds": 0.5, "status": "loaded",
        "load_config": {"context_length": 8192}})
    at = open_arena(mock, one)
    assert at.segmented_control(key="arena_n").value == 2
    assert "Only one model here" in " ".join(str(c.value) for c in at.caption)
    assert not [n for n in at.number_input if n.key.startswith("arena_")]  # folded away
    slot_settings(at, 1)
    at.number_input(key="arena_ctx_1").set_value(8192).run()
    at.number_input(key="arena_temp_1").set_value(0.2).run()
    assert "temp 0.2 · ctx 8192" in [str(c.value) for c in at.caption]
    slot_settings(at, 1, open_=False)  # folded again: the slot keeps what was set
    assert not [n for n in at.number_input if n.key.startswith("arena_")]
    assert "temp 0.2 · ctx 8192" in [str(c.value) for c in at.caption]
    at.chat_input(key="arena_prompt").set_value("Compare configs").run()
    assert not at.exception
    assert json.loads(load.calls.last.request.content) == {
        "model": "t/one", "context_length": 8192, "echo_load_config": True}
    sent = sorted((json.loads(c.request.content)["model"],
                   json.loads(c.request.content).get("temperature")) for c in chat.calls)
    assert sent == [("t/one", None), ("t/one:2", 0.2)]
    rnd = arena.load_rounds(open_store(isolated_env))[0]
    assert [s.contestant for s in rnd.slots] == ["t/one", "t/one (temp 0.2 · ctx 8192)"]


# -- little data, blind rounds and notes (issue 13) -----------------------------------------------

def grid_rows(at: AppTest) -> list[str]:
    """The row names of the results grid (the first cell of each row)."""
    names = {"TTFT", "Decode tok/s", "Tokens", "End-to-end", "Stop reason", "Parameters",
             "First answer"}
    return [str(m.value) for m in at.markdown if str(m.value) in names]


def test_a_blind_round_hides_every_speed_row_until_the_vote(mock: respx.MockRouter) -> None:
    chat_route(mock)
    at = open_arena(mock)
    at.toggle(key="arena_blind").set_value(True).run()
    at.chat_input(key="arena_prompt").set_value("Who is best?").run()
    assert not at.exception
    assert grid_rows(at) == []  # no TTFT, tok/s or end-to-end before the vote
    assert any("names, speeds, sizes and any model's reasoning show after your vote"
               in str(c.value) for c in at.caption)
    assert not any("tok/s" in str(c.value) for c in at.caption)
    vote = next(b for b in at.button if (b.key or "").startswith("vote-") and b.key.endswith("-0"))
    vote.click().run()
    assert {"TTFT", "Decode tok/s", "End-to-end", "Parameters"} <= set(grid_rows(at))


def test_leaderboard_plurals_and_which_runs_it_uses(mock: respx.MockRouter) -> None:
    chat_route(mock)
    at = open_arena(mock)
    at.chat_input(key="arena_prompt").set_value("Who is best?").run()
    vote = next(b for b in at.button if (b.key or "").startswith("vote-") and b.key.endswith("-0"))
    vote.click().run()
    at.segmented_control(key="arena_view").set_value("Leaderboard").run()
    assert not at.exception
    captions = " ".join(str(c.value) for c in at.caption)
    assert "1 vote over 1 round." in captions
    assert "Arena runs only" in captions
    assert at.dataframe[0].proto.HasField("placeholder") and at.dataframe[0].proto.placeholder == ""


def openai_listing(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(404, json={"error": {"message": "File Not Found"}})
    mock.get("/api/v0/models").respond(404, json={"error": {"message": "File Not Found"}})
    mock.get("/v1/models").respond(json={"object": "list", "data": [
        {"id": "t/one", "object": "model"}, {"id": "t/two", "object": "model"}]})


def test_the_openai_server_note_shows_once_per_session(mock: respx.MockRouter) -> None:
    openai_listing(mock)
    chat_route(mock)
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    at.chat_input(key="arena_prompt").set_value("Hi").run()
    assert sum("OpenAI-compatible server" in str(i.value) for i in at.info) == 1
    at.chat_input(key="arena_prompt").set_value("Hi again").run()
    assert not at.exception
    assert not any("OpenAI-compatible server" in str(i.value) for i in at.info)


def test_no_note_for_the_bundled_demo_engine(mock: respx.MockRouter,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_DEMO_ENGINE", "http://lms.test:1234")
    openai_listing(mock)
    chat_route(mock)
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    at.chat_input(key="arena_prompt").set_value("Hi").run()
    assert not at.exception
    assert reply_columns(at)["Model B · t/two"] == ["Second here."]
    assert not any("OpenAI-compatible server" in str(i.value) for i in at.info)


def test_widget_keys_do_not_grow_with_the_rounds(mock: respx.MockRouter,
                                                 isolated_env: Path) -> None:
    """Streamlit keeps a widget's metadata (callback args: the round) for every key a session
    ever drew: the round view's keys name places, not rounds, so a long session stays flat."""
    chat_route(mock)
    at = open_arena(mock)

    def keys() -> set[str]:
        widgets = [*at.button, *at.selectbox, *at.text_area, *at.get("download_button")]
        return {str(w.key) for w in widgets if getattr(w, "key", None)}

    at.chat_input(key="arena_prompt").set_value("First").run()
    first = keys()
    at.chat_input(key="arena_prompt").set_value("Second").run()
    assert not at.exception
    rounds = arena.load_rounds(open_store(isolated_env))
    assert len(rounds) == 2
    assert {"vote-0", "vote-tie", "vote-bad", "judge-model", "judge-go"} <= first
    assert keys() == first
    assert not any(r.id in k for r in rounds for k in first)


# -- blind means blind (issue 18) ----------------------------------------------------------------

def reasoning_route(mock: respx.MockRouter) -> None:
    """t/one thinks before it answers; the others just answer."""
    def reply(request: httpx.Request) -> httpx.Response:
        key = json.loads(request.content)["model"]
        if key != "t/one":
            return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(*REPLIES[key]))
        parts = [chunk("", role=True), chunk(reasoning="Let me"), chunk(reasoning=" think."),
                 *(chunk(t) for t in REPLIES[key]), chunk(finish="stop"), "data: [DONE]\n\n"]
        return httpx.Response(200, headers=SSE_HEADERS, content="".join(parts).encode())

    mock.post("/v1/chat/completions").mock(side_effect=reply)


def downloads(at: AppTest) -> list[str]:
    return [str(b.label) for b in at.get("download_button")]


def successes(at: AppTest) -> str:
    return " ".join(str(s.value) for s in at.success)


def captions(at: AppTest) -> str:
    return " ".join(str(c.value) for c in at.caption)


def test_export_waits_for_the_vote_in_a_blind_round(mock: respx.MockRouter,
                                                    isolated_env: Path) -> None:
    chat_route(mock)
    at = open_arena(mock)
    at.chat_input(key="arena_prompt").set_value("Named round").run()
    assert "Markdown report" in downloads(at)  # names shown: export at once
    at.toggle(key="arena_blind").set_value(True).run()
    at.chat_input(key="arena_prompt").set_value("Blind round").run()
    assert not at.exception
    assert downloads(at) == []  # a report would say "Response 1 = Model A (t/one)"
    at.button(key="vote-0").click().run()
    assert "Markdown report" in downloads(at)
    report = next(b for b in at.get("download_button") if b.label == "Markdown report")
    assert report is not None


def test_reasoning_shows_for_no_reply_until_the_vote(mock: respx.MockRouter) -> None:
    reasoning_route(mock)
    at = open_arena(mock)
    at.chat_input(key="arena_prompt").set_value("Named round").run()
    assert [e.label for e in at.expander].count("Reasoning") == 1  # names shown: as before
    at.toggle(key="arena_blind").set_value(True).run()
    at.chat_input(key="arena_prompt").set_value("Blind round").run()
    assert not at.exception
    assert "Reasoning" not in [e.label for e in at.expander]  # it would single t/one out
    assert "Let me think." not in " ".join(str(m.value) for m in at.markdown)
    at.button(key="reveal").click().run()
    assert [e.label for e in at.expander].count("Reasoning") == 1


def test_a_vote_is_only_the_session_that_cast_it(mock: respx.MockRouter,
                                                 isolated_env: Path) -> None:
    chat_route(mock)
    presenter = open_arena(mock)
    presenter.toggle(key="arena_presenter").set_value(True).run()
    presenter.chat_input(key="arena_prompt").set_value("Class question").run()
    second = new_app().run()  # another browser, on the round the presenter raced
    second.switch_page("pages/arena.py").run()
    assert list(reply_columns(second)) == ["Response 1", "Response 2", "Response 3"]
    second.button(key="vote-1").click().run()
    assert not second.exception
    assert "Your vote: Model" in successes(second) and "It counts on the Leaderboard" in \
        successes(second)
    assert all("· Model " in t for t in reply_columns(second))  # names, for the one who voted

    presenter.run()  # what the watcher does when the round changed
    assert not presenter.exception
    assert "Your vote" not in successes(presenter)  # not a vote this browser cast
    assert list(reply_columns(presenter)) == ["Response 1", "Response 2", "Response 3"]
    assert "1 vote cast in another browser" in captions(presenter)
    assert downloads(presenter) == [] and presenter.button(key="vote-0") is not None
    presenter.button(key="vote-0").click().run()
    assert "Your vote: Model" in successes(presenter)
    assert "the first, cast in another browser" in successes(presenter)
    rnd = arena.load_rounds(open_store(isolated_env))[0]
    assert [v.winner for v in rnd.votes] == [rnd.positions[1], rnd.positions[0]]
    assert rnd.vote is not None and rnd.vote.winner == rnd.positions[1]  # the first counts
    assert rnd.vote.voter == rnd.votes[0].voter != rnd.votes[1].voter
    assert not rnd.revealed  # a vote shows the names to its voter only

    second.run()
    assert "Other browsers: Model" in captions(second)
    assert "Your vote: Model" in successes(second)


def test_a_blank_prompt_starts_no_race(mock: respx.MockRouter) -> None:
    """Issue 23: a prompt of only whitespace was raced across every slot."""
    chats = chat_route(mock)
    at = open_arena(mock)
    at.chat_input(key="arena_prompt").set_value(" \n ").run()
    assert not at.exception
    assert chats.call_count == 0
    assert "Type a message first" in " ".join(str(t.value) for t in at.toast)


def test_the_leaderboard_shows_a_class_s_rounds_apart(mock: respx.MockRouter,
                                                      isolated_env: Path) -> None:
    from atom_core.arena import classroom
    from atom_core.arena.rounds import ArenaRound, SlotResult, Vote

    store = open_store(isolated_env)

    def slot(label: str, model: str) -> SlotResult:
        return SlotResult(label=label, server="s", model=model, target=model, contestant=model,
                          content="hi", state="complete")

    solo = ArenaRound(id="x", ts=1000.0, prompt="p", system_prompt="",
                      slots=(slot("A", "solo/a"), slot("B", "solo/b")),
                      vote=Vote(outcome="win", winner=0, ts=1000.0, voter="me")).to_record()
    del solo["id"]
    store.append(arena.ROUNDS_TABLE, solo)
    session = classroom.start_class(store)
    rec = ArenaRound(id="x", ts=2000.0, prompt="q", system_prompt="", blind=True, order=(0, 1),
                     slots=(slot("A", "class/a"), slot("B", "class/b")),
                     class_id=session.id).to_record()
    del rec["id"]
    rnd = arena.rounds.get_round(store, store.append(arena.ROUNDS_TABLE, rec))
    assert rnd is not None
    limiter = classroom.VoteLimiter()
    for winner in (1, 1, 0):  # three students: class/b wins the round, once
        classroom.cast(store, session, rnd, classroom.new_student(session), "win", winner,
                       limiter)
    classroom.close(store, rnd)

    at = open_arena(mock)
    at.segmented_control(key="arena_view").set_value("Leaderboard").run()
    assert not at.exception

    def board() -> tuple[str, set[str]]:
        captions = " ".join(str(c.value) for c in at.caption)
        return captions, set(at.dataframe[0].value["Model"])

    captions, models = board()
    assert "2 votes over 2 rounds." in captions
    assert models == {"solo/a", "solo/b", "class/a", "class/b"}
    at.segmented_control(key="board_rounds").set_value("class").run()
    captions, models = board()
    assert "1 vote over 1 round." in captions and models == {"class/a", "class/b"}
    at.segmented_control(key="board_rounds").set_value("single").run()
    assert board()[1] == {"solo/a", "solo/b"}
