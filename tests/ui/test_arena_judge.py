"""A judged round in AppTest: a model judges blind in both orders, its verdict stays apart from
the people's vote, and the leaderboard switches between the two."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import respx
from streamlit.testing.v1 import AppTest

from atom_core import arena
from atom_core.arena import judge, promptsets
from atom_core.history import open_store
from atom_core.words import EMPTY_CELL
from tests.fixtures.apptest import BASE, new_app
from tests.fixtures.sse import SSE_HEADERS, sse_body


def model(key: str) -> dict[str, Any]:
    return {"type": "llm", "publisher": "test", "key": key, "display_name": key,
            "architecture": "llama", "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
            "size_bytes": 1_500_000_000, "params_string": "1B", "max_context_length": 32768,
            "format": "gguf", "capabilities": {"vision": False, "trained_for_tool_use": False},
            "loaded_instances": [{"id": key, "config": {"context_length": 4096}}]}


MODELS = {"models": [model("t/one"), model("t/two"), model("t/three")]}
REPLIES = {"t/one": ("The", " first", " answer."), "t/two": ("Second", " here."),
           "t/three": ("Third", " reply", " is", " longest", " by", " far.")}
SCORES = {"The first answer.": 9, "Second here.": 6, "Third reply is longest by far.": 3}


def route_with_judge(mock: respx.MockRouter) -> respx.Route:
    """Contestants answer as in REPLIES; a request with response_format is the judge, which
    scores each answer by its text (the same score in either order)."""
    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "response_format" not in body:
            return httpx.Response(200, headers=SSE_HEADERS,
                                  content=sse_body(*REPLIES[body["model"]]))
        text = body["messages"][-1]["content"]
        shown = re.findall(r"\[Response (\d+)\]\n(.*?)\n\[End", text)
        doc = {"scores": [{"response": int(n), "score": SCORES[a], "reason": f"**{a}**"}
                          for n, a in shown]}
        return httpx.Response(200, headers=SSE_HEADERS, content=sse_body(json.dumps(doc)))

    return mock.post("/v1/chat/completions").mock(side_effect=reply)


def open_arena(mock: respx.MockRouter) -> AppTest:
    mock.get("/api/v1/models").respond(json=MODELS)
    at = new_app().run()
    at.switch_page("pages/arena.py").run()
    assert not at.exception
    return at


def test_a_judged_blind_round_in_both_orders_then_the_judge_board(
        mock: respx.MockRouter, isolated_env: Path) -> None:
    chats = route_with_judge(mock)
    at = open_arena(mock)
    at.toggle(key="arena_blind").set_value(True).run()
    at.chat_input(key="arena_prompt").set_value("Who is best?").run()
    assert not at.exception
    store = open_store(isolated_env)
    rnd = arena.load_rounds(store)[0]
    at.selectbox(key="judge-model").set_value((BASE, "t/three")).run()
    at.button(key="judge-go").click().run()
    assert not at.exception

    judged = [json.loads(c.request.content) for c in chats.calls
              if "response_format" in json.loads(c.request.content)]
    assert len(judged) == 2 and all(b["model"] == "t/three" for b in judged)
    orders = [[a for _, a in re.findall(r"\[Response (\d+)\]\n(.*?)\n\[End",
                                          b["messages"][-1]["content"])] for b in judged]
    assert orders[1] == list(reversed(orders[0]))  # both orders
    assert not any("t/one" in b["messages"][-1]["content"] for b in judged)  # blind
    (verdict,) = judge.verdicts_for(store, rnd.id)
    assert verdict.ok and verdict.disagreements == (0, 3)
    assert rnd.slots[verdict.slots[verdict.winner()]].model == "t/one"  # type: ignore[index]
    table = next(d.value for d in at.dataframe if "Agreed" in d.value.columns)
    assert sorted(table["Answer"]) == ["Response 1", "Response 2", "Response 3"]  # still blind
    assert set(table["Agreed"]) == {"yes"} and sorted(table["Mean"]) == [3, 6, 9]
    assert "**The first answer.**" in set(table["Reason"])  # kept as text, not Markdown
    assert rnd.vote is None and arena.load_rounds(store)[0].vote is None  # not a vote
    sources = [r["source"] for r in store.run_rows()]
    assert sources.count("judge") == 2 and sources.count("arena") == 3

    # People vote for the judge's winner: agreement 1 of 1.
    position = rnd.positions.index(next(i for i, s in enumerate(rnd.slots)
                                        if s.model == "t/one"))
    at.button(key=f"vote-{position}").click().run()
    at.segmented_control(key="arena_view").set_value("Leaderboard").run()
    at.segmented_control(key="board_basis").set_value("Judge").run()
    assert not at.exception
    agreement = " ".join(str(m.value) for m in at.markdown)
    assert "100% of 1 round with both a vote" in agreement and "95 % interval 21%–100%" in agreement
    board = next(d.value for d in at.dataframe if "BT" in d.value.columns)
    assert list(board["Model"])[0] == "t/one" and board.iloc[0]["W/T/L"] == "2/0/0"
    # formatted as the people's board: a win rate of 1 reads 100 %, TTFT 0.12, tok/s 99.2
    (table,) = [d for d in at.dataframe if "BT" in d.value.columns]
    columns = json.loads(table.proto.columns)
    assert columns["Win rate"]["type_config"] == {"type": "progress", "format": "percent",
                                                  "min_value": 0.0, "max_value": 1.0}
    assert columns["TTFT p50 (s)"]["type_config"]["format"] == "%.2f"
    assert columns["tok/s p50"]["type_config"]["format"] == "%.1f"
    assert all(d.proto.HasField("placeholder") and d.proto.placeholder == EMPTY_CELL
               for d in at.dataframe)  # no "None" in any table
    summary = next(d.value for d in at.dataframe if "Orders disagreed" in d.value.columns)
    assert list(summary["Judge"]) == ["t/three"] and summary["Orders disagreed"][0] == 0.0


def test_a_prompt_set_run_judged_with_a_reference_and_a_judge_check(
        mock: respx.MockRouter, isolated_env: Path) -> None:
    chats = route_with_judge(mock)
    at = open_arena(mock)
    at.segmented_control(key="arena_view").set_value("Prompt sets").run()
    at.segmented_control(key="arena_n").set_value(2).run()
    at.text_area(key="ps_text").set_value(
        "prompt,reference,judge\nWhich answer?,The first answer.,7\n").run()
    at.checkbox(key="ps_warm").set_value(False).run()
    next(b for b in at.button if b.label.startswith("Run ")).click().run()
    assert not at.exception
    store = open_store(isolated_env)
    (run,) = promptsets.list_runs(store)
    at.selectbox(key=f"ps-judge-{run.id}").set_value((BASE, "t/three")).run()
    at.button(key=f"ps-judge-go-{run.id}").click().run()
    assert not at.exception
    judged = [json.loads(c.request.content) for c in chats.calls
              if "response_format" in json.loads(c.request.content)]
    assert len(judged) == 2  # one prompt, two orders
    text = judged[0]["messages"][-1]["content"]
    assert "[Reference answer]\nThe first answer." in text and judge.REFERENCE_RUBRIC in text
    (verdict,) = judge.promptset_verdicts(store, run.id)
    assert verdict.contestants == ("t/one", "t/two") and verdict.winner() == 0
    checks = [d.value for d in at.dataframe if "check" in d.value.columns
              and "judge score" in str(d.value["check"][0])][-1]  # the judge panel's table
    assert checks.iloc[0].to_dict() == {"prompt": "Which answer?", "check": "judge score ≥ 7",
                                        "Model A": "1/1", "Model B": "0/1"}
    scores = next(d.value for d in at.dataframe if "score_mean" in d.value.columns)
    assert list(scores["score_mean"]) == [9.0, 6.0] and list(scores["wins"]) == [1, 0]
