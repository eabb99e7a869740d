"""Conversation logic without a browser: titles, request history, exports, a whole turn."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import respx

from atom_core.chat import ChatTurn, auto_title, history_for_request
from atom_core.history import HistoryStore, Message, export, open_store
from atom_core.metrics import GenerationMetrics, compute_metrics, metrics_line
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage
from tests.fixtures.payloads import UNEXPECTED
from tests.fixtures.sse import SSE_HEADERS, chunk, sse_body

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
    assert message.metrics is not None and message.metrics.output_tokens == 2
    assert len(message.metrics.token_offsets_ms) == 2
    (run,) = store.run_rows()
    assert run["model"] == "m" and run["ok"] and run["message_id"] == message.id
    assert run["server"] == BASE and run["source"] == "chat"
    assert turn.finish() is None  # idempotent


def test_the_next_run_waits_for_a_turn_cut_short_to_be_saved(isolated_env: Path) -> None:
    """A click mid-reply (ATOM's Stop, a model pick) starts the page's next run on a new thread
    while the old one unwinds into finish(): wait_saved() holds that run until the reply is
    saved (as stopped), so it never draws the "interrupted" placeholder start() left."""
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS,
                                                  content=sse_body("Hel", "lo"))
        turn = ChatTurn(store=store, client=client, conversation_id=conv.id, model="m",
                        history=[ChatMessage("user", "hi")]).start()
        assert turn.wait_saved(0.01) is False  # nothing saved yet: the next run must wait
        states: list[str] = []
        waiter = threading.Thread(target=lambda: states.append(
            store.messages(conv.id)[-1].state if turn.wait_saved(10) else "timed out"))
        waiter.start()
        message = turn.finish()  # cut short, or done if the mock was quicker
        waiter.join(10)
    assert message is not None and message.state != "interrupted"
    assert states == [message.state]
    assert turn.wait_saved(0) is True
    never_started = ChatTurn(store=store, client=client, conversation_id=conv.id, model="m",
                             history=[])
    never_started.finish()  # a run cut short before start(): the next run must not wait
    assert never_started.wait_saved(0) is True


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
    assert store.run_rows()[0]["ok"] is False


def run_turn(store: HistoryStore, conv_id: str, client: LMStudioClient,
             route: str = "completions") -> Message | None:
    turn = ChatTurn(store=store, client=client, conversation_id=conv_id, model="m",
                    history=[ChatMessage("user", "hi")], route=route).start()
    while not turn.done:
        turn.poll(0.05)
    return turn.finish()


def test_a_reply_that_fails_before_its_first_token_measures_nothing(isolated_env: Path) -> None:
    """LM Studio 0.3 (or the test double) answers POST /api/v1/chat with 200 and an error body:
    the reply is its one sentence, with no '0 tokens · 9 ms total' caption, and its run is a
    failed one with no figures (Stats counts the failure, measures nothing)."""
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/api/v1/chat").respond(200, json=UNEXPECTED)
        message = run_turn(store, conv.id, client, route="native")
    assert message is not None and message.state == "error"
    assert "does not offer POST /api/v1/chat" in message.error
    assert message.metrics is None and metrics_line(message.metrics) == ""
    (run,) = store.run_rows()
    assert run["ok"] is False and run["state"] == "error" and run["route"] == "native"
    assert "does not offer" in run["error"]
    assert [run[k] for k in ("e2e_s", "output_tokens", "ttft_s", "tokens_source")] == [None] * 4
    # A reply that fails after some tokens did measure them: it keeps its figures.
    body = "".join([chunk("", role=True), chunk("Hel"), chunk("lo"),
                    'data: {"error": {"message": "x"}}\n\n'])
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body)
        message = run_turn(store, conv.id, client)
    assert message is not None and message.state == "error" and message.content == "Hello"
    assert message.metrics is not None and message.metrics.output_tokens == 2
    assert store.run_rows()[-1]["output_tokens"] == 2


def test_a_reply_is_kept_from_its_first_non_space_character(isolated_env: Path) -> None:
    """Models start with the space of their first token; the stored reply does not, and the
    figures still count that token."""
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").respond(
            200, headers=SSE_HEADERS, content=sse_body(" Rome", ", the capital."))
        message = run_turn(store, conv.id, client)
    assert message is not None and message.content == "Rome, the capital."
    assert message.metrics is not None and message.metrics.output_tokens == 2
    assert store.run_rows()[0]["output_tokens"] == 2


def test_exports(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="Capitals: France?", model="m",
                                     system_prompt="Be brief.")
    store.add_message(conv.id, role="user", content="Capital of France?")
    metrics = compute_metrics(t_request_ns=0, token_times_ns=[100_000_000, 200_000_000],
                              t_end_ns=300_000_000, finish_reason="stop")
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


def test_stats_line_shows_first_answer_and_thinking_for_a_reasoning_reply() -> None:
    from atom_core.metrics import compute_metrics

    ms = 1_000_000
    m = compute_metrics(t_request_ns=0, token_times_ns=[35 * ms, 435 * ms, 535 * ms],
                        t_end_ns=600 * ms, first_answer_ns=435 * ms, reasoning_chunks=1)
    line = metrics_line(m)
    assert line.startswith("TTFT 35 ms · first answer 435 ms (thought 400 ms) · ")
    # an older stored reply without the new fields still reads
    old = GenerationMetrics.from_dict({
        "ttft_s": 0.2, "e2e_s": 1.0, "decode_tps": 10.0, "itl_p50_s": None, "itl_p95_s": None,
        "output_tokens": 9, "tokens_source": "usage"})
    assert metrics_line(old).startswith("TTFT 200 ms · 10.0 tok/s")
    # a partial one (imported from elsewhere) says what it has, and nothing it lacks
    assert metrics_line(GenerationMetrics.from_dict({"ttft_s": 0.2})) == "TTFT 200 ms"
