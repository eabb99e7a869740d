"""atom_core against a real inference engine: the OpenAI-compatible fallback path end to end."""

from __future__ import annotations

import io
import re
import time

import httpx
import pytest

from atom_core.chat import ChatTurn
from atom_core.cli import main as cli_main
from atom_core.history import open_store
from atom_core.launch import demo
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage, Dialect, SamplingOptions
from tests.fixtures.engine import MODEL_A, MODEL_B, SHORT, engine_cpu_seconds

pytestmark = pytest.mark.engine

PROMPT = [ChatMessage("user", "Write one sentence about the sea.")]
WORDS = re.compile(r"[A-Za-z]{2,}")


def test_models_come_from_the_openai_fallback_route(client_a: LMStudioClient) -> None:
    listing = client_a.list_models()
    assert listing.dialect is Dialect.OPENAI and listing.route == "/v1/models"
    # /v1/models says nothing about load state or the model; ATOM knows what its own demo
    # engine serves (server/demo_model.py) and says it, the same in every page and the CLI.
    assert not listing.loaded_only
    assert [m.key for m in listing.llms] == [MODEL_A]
    (m,) = listing.models
    assert m.load_state_known and m.is_loaded and m.quantization == "Q4_K_M"
    bare = httpx.get(f"{client_a.base_url}/v1/models", timeout=10).json()["data"]
    assert set(bare[0]) <= {"id", "object", "owned_by", "permissions", "created"}  # ids only
    # The richer routes were tried first and are really absent on this server.
    assert httpx.get(f"{client_a.base_url}/api/v1/models", timeout=10).status_code == 404
    assert client_a.status().sentence == "OpenAI-compatible server · 1 model"


def test_a_streamed_reply_has_real_text_and_counted_tokens(client_a: LMStudioClient) -> None:
    reply = client_a.chat(MODEL_A, PROMPT, options=SHORT)
    assert WORDS.search(reply.content), reply.content
    assert reply.finish_reason in ("length", "stop")
    m = reply.metrics()
    # llama.cpp's server ignores stream_options.include_usage: ATOM counts the token chunks,
    # and says so. The count matches the server's own usage for the same request, unstreamed.
    assert reply.usage is None and m.tokens_source == "chunks"
    body = {"model": MODEL_A, "messages": [p.to_request() for p in PROMPT],
            **SHORT.to_request()}
    usage = httpx.post(f"{client_a.base_url}/v1/chat/completions", json=body, timeout=120).json()
    # The server's count also covers the tokens of a stop sequence ("Question:"), which it
    # holds back from the stream; the counted chunks are the tokens the user saw.
    assert 0 < m.output_tokens <= usage["usage"]["completion_tokens"] <= 24
    assert m.ttft_s is not None and 0 < m.ttft_s < 60
    assert m.decode_tps is not None and m.decode_tps > 1
    assert m.e2e_s >= m.ttft_s


def test_a_chat_turn_is_saved_with_its_metrics(client_a: LMStudioClient) -> None:
    store = open_store()  # ATOM_DATA_DIR: a temp folder (tests/conftest.py)
    conv = store.create_conversation(title="Engine", model=MODEL_A)
    store.add_message(conv.id, role="user", content=PROMPT[0].content)
    turn = ChatTurn(store=store, client=client_a, conversation_id=conv.id, model=MODEL_A,
                    history=PROMPT, options=SHORT).start()
    deadline = time.monotonic() + 120
    while not turn.done and time.monotonic() < deadline:
        turn.poll(0.1)
    message = turn.finish()
    assert message is not None and message.state == "complete", message
    assert WORDS.search(message.content)
    assert message.metrics and (message.metrics.output_tokens or 0) > 0
    (run,) = store.run_rows()
    assert run["ok"] and run["model"] == MODEL_A and run["server"] == client_a.base_url
    assert run["source"] == "chat" and run["output_tokens"] == message.metrics.output_tokens


def test_the_command_line_chats_and_records(demo_engine: demo.DemoEngine) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = cli_main(["--server", demo_engine.urls[1], "chat", "--model", MODEL_B,
                     "--max-tokens", "24", "--temperature", "0", "Hello there."],
                    out=out, err=err)
    assert code == 0, err.getvalue()
    assert WORDS.search(out.getvalue())
    assert "tok/s" in err.getvalue() and "(chunks)" in err.getvalue()
    (run,) = open_store().run_rows()
    assert run["source"] == "cli" and run["model"] == MODEL_B and run["ok"]


def test_the_command_line_lists_the_demo_model_as_the_app_does(
    demo_engine: demo.DemoEngine,
) -> None:
    """`atom models` on the demo engine, with no ATOM_DEMO_ENGINE set (a user who pointed the CLI
    at its URL): loaded, 270M, Q4_K_M, 0.25 GB, 32768, as Models and the Arena say (it printed
    "?" and blanks while the app showed the facts, and the Arena rounded the size to 0.3 GB)."""
    from atom_core.metrics import format_size

    out, err = io.StringIO(), io.StringIO()
    assert cli_main(["--server", demo_engine.urls[0], "models"], out=out, err=err) == 0
    (row,) = [line for line in out.getvalue().splitlines() if MODEL_A in line]
    assert row.split() == ["●", MODEL_A, "llm", "270M", "Q4_K_M", "0.25", "GB", "32768"], row
    assert "may show only loaded" not in out.getvalue()
    assert format_size(253_113_024) == "0.25 GB"


def test_a_two_slot_arena_race_completes_on_both_engines(
    client_a: LMStudioClient, client_b: LMStudioClient
) -> None:
    """The Arena's own race (atom_core.arena), one slot per engine process, as the page runs it:
    plan (no loads possible on this server), race, save the round and its runs, vote."""
    from atom_core import arena

    clients = {client_a.base_url: client_a, client_b.base_url: client_b}
    store = open_store()
    setups = [arena.SlotSetup(server=client_a.base_url, model=MODEL_A, options=SHORT),
              arena.SlotSetup(server=client_b.base_url, model=MODEL_B, options=SHORT)]
    listings = {url: c.list_models() for url, c in clients.items()}
    plan = arena.plan_loads(setups, listings)
    assert not plan.steps and not plan.notes  # both models are loaded: nothing to do or say
    race = arena.ArenaRace(store=store, client_for=clients.__getitem__,
                           prompt="Write one sentence about the sea.", system_prompt="",
                           setups=setups, prepared=arena.load_all(plan, clients.__getitem__),
                           models={i: listings[s.server].get(s.model)
                                   for i, s in enumerate(setups)})
    race.start()
    deadline = time.monotonic() + 120
    while not race.done and time.monotonic() < deadline:
        race.poll(0.1)
    rnd = race.finish()
    assert rnd is not None
    a, b = rnd.slots
    assert a.state == "complete" and b.state == "complete", (a.error, b.error)
    assert WORDS.search(a.content) and WORDS.search(b.content)
    for slot in (a, b):
        assert slot.metrics and slot.metrics.ttft_s and 0 < (slot.metrics.output_tokens or 0) <= 24
    runs = store.run_rows()
    assert sorted(r["model"] for r in runs) == [MODEL_A, MODEL_B]
    assert {r["source"] for r in runs} == {"arena"}
    voted = arena.record_vote(store, rnd, "win", winner=0)
    board = arena.leaderboard(arena.load_rounds(store), n_boot=10)
    assert voted.vote is not None and board[0].contestant.startswith(MODEL_A)
    # How much the two processes overlap is a speed figure (bench/), not asserted here.


def test_stop_really_stops_the_engine(demo_engine: demo.DemoEngine,
                                      client_a: LMStudioClient) -> None:
    stream = client_a.stream_chat(MODEL_A, PROMPT, options=SamplingOptions(max_tokens=2000))
    with stream:
        for n, _ in enumerate(stream):
            if n >= 3:
                break  # leaving the `with` closes the response, as Stop does
    engine = demo_engine.engines[0]
    time.sleep(0.5)
    before = engine_cpu_seconds(engine)
    time.sleep(2.0)
    # Still generating 2,000 tokens would cost about one CPU-second per second.
    assert engine_cpu_seconds(engine) - before < 0.3
    # And the engine is free at once for the next request.
    reply = client_a.chat(MODEL_A, PROMPT, options=SHORT)
    assert reply.finish_reason in ("length", "stop") and reply.content


def test_a_request_without_max_tokens_gets_the_demo_default(client_a: LMStudioClient) -> None:
    """A base model never ends its turn: the demo engine caps replies that set no limit."""
    body = {"model": MODEL_A, "messages": [p.to_request() for p in PROMPT], "temperature": 0}
    reply = httpx.post(f"{client_a.base_url}/v1/chat/completions", json=body, timeout=180).json()
    assert 0 < reply["usage"]["completion_tokens"] <= demo.DEFAULT_MAX_TOKENS


def test_the_demo_model_ends_a_short_answer_by_itself(client_a: LMStudioClient) -> None:
    """Prompted with question/answer examples, the base model answers and stops at the next
    question (a stop sequence), well before the cap."""
    body = {"model": MODEL_A, "temperature": 0,
            "messages": [{"role": "user", "content": "How many legs does a spider have?"}]}
    reply = httpx.post(f"{client_a.base_url}/v1/chat/completions", json=body, timeout=180).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    assert 0 < reply["usage"]["completion_tokens"] < demo.DEFAULT_MAX_TOKENS
    assert choice["message"]["content"].strip()  # e.g. "8." or a short sentence
    assert "Question:" not in choice["message"]["content"]
