"""Conversation logic without a browser: titles, request history, exports, a whole turn."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import respx

from atom_core.chat import ChatTurn, auto_title, history_for_request
from atom_core.history import export, open_store
from atom_core.metrics import compute_metrics
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage
from tests.fixtures.sse import SSE_HEADERS, sse_body

BASE = "http://lms.test:1234"


def test_auto_title() -> None:
    assert auto_title("  What is\n the capital of France?  ") == "What is the capital of France?"
    long = "Explain the difference between continuous batching and static batching in detail"
    assert auto_title(long) == "Explain the difference between continuous…"
    assert auto_title("   ") == "New chat"


def test_history_skips_empty_failed_replies_but_keeps_partial_ones(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    store.add_message(conv.id, role="user", content="one")
    store.add_message(conv.id, role="assistant", content="", state="error", error="down")
    store.add_message(conv.id, role="user", content="two")
    store.add_message(conv.id, role="assistant", content="half", state="stopped")
    store.add_message(conv.id, role="user", content="three")
    assert history_for_request(store.messages(conv.id)) == [
        ChatMessage("user", "one"),
        ChatMessage("user", "two"),
        ChatMessage("assistant", "half"),
        ChatMessage("user", "three"),
    ]


def test_a_turn_saves_message_metrics_and_run(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    store.add_message(conv.id, role="user", content="hi")
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                  content=sse_body("Hel", "lo"))
        turn = ChatTurn(store=store, client=client, conversation_id=conv.id, model="m",
                        history=[ChatMessage("user", "hi")]).start()
        # Before anything arrives the reply already exists, marked as what a crash would leave.
        assert store.messages(conv.id)[-1].state == "interrupted"
        while not turn.done:
            turn.poll(0.05)
        message = turn.finish()
    assert message is not None and message.content == "Hello" and message.state == "complete"
    assert message.metrics is not None and message.metrics["output_tokens"] == 2
    assert len(message.metrics["token_offsets_ms"]) == 2
    (run,) = store.runs()
    assert run["model"] == "m" and run["ok"] and run["message_id"] == message.id
    assert run["server"] == BASE and run["source"] == "chat"
    assert turn.finish() is None  # idempotent


def test_a_turn_against_a_dead_server_ends_in_error_state(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
        turn = ChatTurn(store=store, client=client, conversation_id=conv.id, model="m",
                        history=[ChatMessage("user", "hi")]).start()
        while not turn.done:
            turn.poll(0.05)
        message = turn.finish()
    assert message is not None and message.state == "error"
    assert "Can't reach a model server" in message.error
    assert store.runs()[0]["ok"] is False


def test_exports(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="Capitals: France?", model="m",
                                     system_prompt="Be brief.")
    store.add_message(conv.id, role="user", content="Capital of France?")
    metrics = compute_metrics(t_request_ns=0, token_times_ns=[100_000_000, 200_000_000],
                              t_end_ns=300_000_000, finish_reason="stop").to_dict()
    store.add_message(conv.id, role="assistant", content="Paris.", reasoning="Easy.", model="m",
                      metrics=metrics)
    store.add_message(conv.id, role="assistant", content="Lyon", state="stopped", model="m")
    conv = store.get_conversation(conv.id)
    assert conv is not None
    msgs = store.messages(conv.id)

    md = export.to_markdown(conv, msgs)
    assert md.startswith("# Capitals: France?\n")
    assert "> Be brief." in md and "## Assistant (m)" in md and "Paris." in md
    assert "<summary>Reasoning</summary>" in md and "TTFT 100 ms" in md
    assert "_stopped by the user_" in md

    doc = json.loads(export.to_json(conv, msgs))
    assert doc["conversation"]["system_prompt"] == "Be brief."
    assert [m["content"] for m in doc["messages"]] == ["Capital of France?", "Paris.", "Lyon"]
    assert doc["messages"][1]["metrics"]["output_tokens"] == 2

    text = export.to_text(conv, msgs)
    assert "User:\nCapital of France?" in text and "Assistant (m) [stopped by the user]:" in text
    assert export.export_filename(conv, "md") == "atom-capitals-france.md"
