"""Every chat route against the real test server (tests/fixtures/lmstudio_double.py): replies,
usage, stateful turns that send only the new message, stored ids the server no longer knows,
Anthropic's x-api-key, and routes a server lacks."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from atom_core.chat import (
    STATE_LOST_NOTE,
    ChatTurn,
    ConversationRoute,
    conversation_route,
    history_for_request,
    set_conversation_route,
)
from atom_core.cli import main
from atom_core.errors import AuthError, BadRequest, NotSupported, ServerError, StreamInterrupted
from atom_core.history.tinydb_store import HistoryStore, open_store
from atom_core.server.client import LMStudioClient
from atom_core.server.streaming import ReplyBuffer
from atom_core.types import ChatMessage, SamplingOptions
from tests.fixtures.lmstudio_double import DoubleServer, serve

pytestmark = pytest.mark.integration

STATEFUL = ["native", "responses"]
NEW_ROUTES = ["native", "responses", "messages"]
PATHS = {"native": "/api/v1/chat", "responses": "/v1/responses", "messages": "/v1/messages"}
CONFIG = {"models": [
    {"key": "r/plain", "ttft_ms": 10, "token_gap_ms": 5, "reply": "one two three four"},
    {"key": "r/thinker", "ttft_ms": 10, "token_gap_ms": 5, "reply": "yes", "reasoning": "hm ok"},
    {"key": "r/cut", "ttft_ms": 10, "token_gap_ms": 5, "reply": "a b c d", "fail_mode":
     "cut_after:2"},
    {"key": "r/err", "ttft_ms": 10, "token_gap_ms": 5, "reply": "a b c d", "fail_mode":
     "error_in_stream:2"},
]}


@pytest.fixture(scope="module")
def double() -> Iterator[DoubleServer]:
    with serve(CONFIG) as server:
        yield server


@pytest.fixture
def client(double: DoubleServer) -> Iterator[LMStudioClient]:
    double.set_config(CONFIG)
    with LMStudioClient(double.url) as c:
        yield c


def ask(client: LMStudioClient, route: str, model: str, messages: list[ChatMessage],
        **kwargs: object) -> ReplyBuffer:
    reply = ReplyBuffer()
    stream = client.stream_route(route, model, messages, **kwargs)  # type: ignore[arg-type]
    with stream:
        try:
            for event in stream:
                reply.add(event)
        finally:
            reply.t_request_ns, reply.t_end_ns = stream.t_request_ns, stream.t_end_ns
    return reply


@pytest.mark.parametrize("route", NEW_ROUTES)
def test_each_route_streams_reasoning_and_the_reply_with_usage(
    route: str, client: LMStudioClient
) -> None:
    reply = ask(client, route, "r/thinker", [ChatMessage("user", "Is it?")])
    assert reply.content == "yes" and reply.reasoning == "hm ok"
    m = reply.metrics()
    assert m.output_tokens == 3 and m.tokens_source == "usage"
    # Anthropic's usage does not split out thinking tokens.
    assert m.reasoning_tokens == (None if route == "messages" else 2)
    assert m.prompt_tokens == 2 and reply.finish_reason == "stop"
    if route == "native":
        assert reply.server_stats and reply.server_stats["total_output_tokens"] == 3


@pytest.mark.parametrize("route", STATEFUL)
def test_a_stateful_second_turn_sends_only_the_new_message(
    route: str, client: LMStudioClient, double: DoubleServer
) -> None:
    first = [ChatMessage("user", "Hello there")]
    one = ask(client, route, "r/plain", first)
    assert one.response_id and one.response_id.startswith("resp_")
    history = [*first, ChatMessage("assistant", one.content), ChatMessage("user", "More")]
    two = ask(client, route, "r/plain", history, previous_response_id=one.response_id)
    assert two.content == "one two three four" and two.response_id != one.response_id
    body = [r for r in double.log() if r["path"] == PATHS[route]][-1]["body"]
    assert body["previous_response_id"] == one.response_id
    assert "Hello there" not in str(body["input"]) and "More" in str(body["input"])


@pytest.mark.parametrize("route", STATEFUL)
def test_an_id_the_server_does_not_know_is_a_sentence(route: str,
                                                      client: LMStudioClient) -> None:
    with pytest.raises(BadRequest) as e:
        ask(client, route, "r/plain", [ChatMessage("user", "hi")],
            previous_response_id="resp_" + "0" * 48)
    assert "resp_000" in e.value.sentence and e.value.param == "previous_response_id"


@pytest.mark.parametrize("route", NEW_ROUTES)
def test_a_cut_stream_and_an_error_mid_stream(route: str, client: LMStudioClient) -> None:
    with pytest.raises(StreamInterrupted):
        ask(client, route, "r/cut", [ChatMessage("user", "hi")])
    with pytest.raises(ServerError) as e:
        ask(client, route, "r/err", [ChatMessage("user", "hi")])
    assert "failed while generating" in e.value.sentence


def test_messages_takes_the_token_as_x_api_key(double: DoubleServer) -> None:
    double.set_config({**CONFIG, "api_token": "sk-lm-aaaaaaaa:bbbbbbbbbbbbbbbbbbbb"})
    with LMStudioClient(double.url, token="sk-lm-aaaaaaaa:bbbbbbbbbbbbbbbbbbbb") as c:
        reply = ask(c, "messages", "r/plain", [ChatMessage("user", "hi")],
                    options=SamplingOptions(max_tokens=2))
    assert reply.content == "one two" and reply.finish_reason == "length"
    request = [r for r in double.log() if r["path"] == "/v1/messages"][-1]
    assert request["status"] == 200
    with LMStudioClient(double.url) as anonymous, pytest.raises(AuthError):
        ask(anonymous, "messages", "r/plain", [ChatMessage("user", "hi")])


@pytest.mark.parametrize(("dialect", "missing"), [
    ("lmstudio-0.3", ["native", "messages"]),
    ("openai", ["native", "responses", "messages"]),
])
def test_routes_a_server_lacks_are_found_and_remembered(
    dialect: str, missing: list[str], double: DoubleServer
) -> None:
    double.set_config({**CONFIG, "dialect": dialect})
    with LMStudioClient(double.url) as c:
        for route in NEW_ROUTES:
            problem = c.probe_route(route)
            assert (problem is not None) == (route in missing), (route, problem)
        with pytest.raises(NotSupported):
            ask(c, "messages", "r/plain", [ChatMessage("user", "hi")])


# -- the command line -----------------------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("route", STATEFUL)
def test_cli_chat_prints_the_response_id_and_continues_from_it(
    route: str, double: DoubleServer, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    double.set_config(CONFIG)
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    code, out, err = run_cli("chat", "--model", "r/plain", "--route", route, "Hello there")
    assert code == 0 and out.strip() == "one two three four"
    (line,) = [x for x in err.splitlines() if x.startswith("response id: ")]
    rid = line.removeprefix("response id: ")
    assert rid.startswith("resp_")
    code, out, err = run_cli("chat", "--model", "r/plain", "--route", route, "--previous", rid,
                             "More")
    assert code == 0 and out.strip() == "one two three four"
    body = [r for r in double.log() if r["path"] == PATHS[route]][-1]["body"]
    assert body["previous_response_id"] == rid
    runs = open_store(isolated_env).run_rows()
    assert [r["route"] for r in runs] == [route, route]
    assert runs[0]["response_id"] == rid and runs[1]["previous_response_id"] == rid
    if route == "native":  # the server's own figures are saved beside ATOM's
        assert runs[0]["server_tps"] is not None and runs[0]["server_ttft_s"] is not None


def test_cli_chat_over_messages_and_a_refused_previous(
    double: DoubleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    double.set_config(CONFIG)
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    code, out, err = run_cli("chat", "--model", "r/plain", "--route", "messages", "--no-record",
                             "Hi")
    assert code == 0 and out.strip() == "one two three four"
    assert "response id" not in err
    code, _, err = run_cli("chat", "--model", "r/plain", "--route", "messages", "--previous",
                           "resp_x", "Hi")
    assert code == 2 and "--previous needs a stateful route" in err


def test_bench_takes_a_route(double: DoubleServer, monkeypatch: pytest.MonkeyPatch,
                             isolated_env: Path) -> None:
    double.set_config(CONFIG)
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    before = len(double.log())
    code, out, _ = run_cli("bench", "--models", "r/plain", "--prompt", "Hi", "--repeat", "2",
                           "--route", "responses", "--json")
    assert code == 0
    records = [json.loads(x) for x in out.splitlines() if '"record"' in x]
    assert len(records) == 2 and all(r["ok"] for r in records)
    assert {r["path"] for r in double.log()[before:]} == {"/v1/responses"}
    assert [r["route"] for r in open_store(isolated_env).run_rows()] == ["responses", "responses"]


# -- a stored conversation over a stateful route (ChatTurn) ---------------------------------------


def turn(store: HistoryStore, client: LMStudioClient, conv_id: str, text: str) -> ChatTurn:
    store.add_message(conv_id, role="user", content=text)
    chosen = conversation_route(store, conv_id)
    t = ChatTurn(store=store, client=client, conversation_id=conv_id, model="r/plain",
                 history=history_for_request(store.messages(conv_id)), route=chosen.route,
                 previous_response_id=chosen.continues_from)
    t.start()
    try:
        while not t.done:
            t.poll(0.05)
    finally:
        t.finish()
    return t


@pytest.mark.parametrize("route", STATEFUL)
def test_a_conversation_continues_from_the_stored_response(
    route: str, client: LMStudioClient, double: DoubleServer, isolated_env: Path
) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t", model="r/plain")
    assert conversation_route(store, conv.id) == ConversationRoute()
    set_conversation_route(store, conv.id, route=route)
    turn(store, client, conv.id, "Hello there")
    first = conversation_route(store, conv.id).response_id
    assert first and first.startswith("resp_")
    second = turn(store, client, conv.id, "More please")
    assert second.note == "" and second.slot.reply.content == "one two three four"
    body = [r for r in double.log() if r["path"] == PATHS[route]][-1]["body"]
    assert body["previous_response_id"] == first and "Hello" not in str(body["input"])
    now = conversation_route(store, conv.id)
    assert now.response_id not in (None, first) and now.continues_from == now.response_id
    runs = store.run_rows()
    assert [(r["route"], r["previous_response_id"]) for r in runs] == [(route, None),
                                                                        (route, first)]
    assert runs[1]["conversation_id"] == conv.id
    # Back to full-history mode: the next turn sends everything and no id.
    set_conversation_route(store, conv.id, full_history=True)
    assert conversation_route(store, conv.id).continues_from is None
    turn(store, client, conv.id, "Third")
    body = [r for r in double.log() if r["path"] == PATHS[route]][-1]["body"]
    assert "previous_response_id" not in body and "Hello there" in str(body["input"])
    # The request size is kept: a stateful turn stays small, the full history grows.
    sizes = [r["request_bytes"] for r in store.run_rows()]
    assert all(isinstance(n, int) and n > 0 for n in sizes)
    assert sizes[1] < sizes[2] and conversation_route(store, conv.id).request_bytes == sizes[2]


@pytest.mark.parametrize("route", STATEFUL)
def test_an_id_the_server_lost_falls_back_to_the_history_with_a_note(
    route: str, client: LMStudioClient, double: DoubleServer, isolated_env: Path
) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t", model="r/plain")
    lost = "resp_" + "f" * 48
    set_conversation_route(store, conv.id, route=route)
    set_conversation_route(store, conv.id, response_id=lost)
    before = len(double.log())
    t = turn(store, client, conv.id, "Still there?")
    assert t.note == STATE_LOST_NOTE and t.slot.error is None
    sent = [r["body"] for r in double.log()[before:] if r["path"] == PATHS[route]]
    assert [b.get("previous_response_id") for b in sent] == [lost, None]
    (reply,) = [m for m in store.messages(conv.id) if m.role == "assistant"]
    assert reply.state == "complete" and reply.content == "one two three four"
    assert conversation_route(store, conv.id).response_id not in (None, lost)


def test_a_route_is_only_one_of_the_four(isolated_env: Path) -> None:
    store = open_store(isolated_env)
    conv = store.create_conversation(title="t")
    with pytest.raises(ValueError, match="unknown chat route"):
        set_conversation_route(store, conv.id, route="smoke-signals")
    set_conversation_route(store, conv.id, route="native")
    set_conversation_route(store, conv.id, response_id="resp_1")
    # Switching route forgets the id: it means nothing on another route.
    assert set_conversation_route(store, conv.id, route="responses") == ConversationRoute(
        route="responses")
