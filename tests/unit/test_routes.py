"""Every chat route beside /v1/chat/completions (issue 11), against respx: LM Studio's native
/api/v1/chat, /v1/responses and Anthropic's /v1/messages. Streaming, usage and server stats,
reasoning, error events, the unknown route (LM Studio's 200 + error, others' 404), auth
headers, a cut stream, keep-alive comments and unknown events skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from atom_core.errors import NotSupported, ServerError, StreamInterrupted
from atom_core.server.client import LMStudioClient
from atom_core.server.routes import ROUTE_PATHS, ROUTES
from atom_core.server.streaming import ReplyBuffer
from atom_core.types import ChatMessage, SamplingOptions
from tests.fixtures.payloads import BASE, UNEXPECTED
from tests.fixtures.sse import SSE_HEADERS, named, sse_body

HISTORY = [ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello!"),
           ChatMessage("user", "And now?")]
KEEPALIVE = ": keep-alive\n\n"


@pytest.fixture
def client() -> Iterator[LMStudioClient]:
    with LMStudioClient(BASE, token="sk-lm-abc:def") as c:
        yield c


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def run(client: LMStudioClient, route: str, **kwargs: object) -> tuple[ReplyBuffer, object]:
    reply = ReplyBuffer()
    stream = client.stream_route(route, "m", HISTORY, **kwargs)  # type: ignore[arg-type]
    with stream:
        for event in stream:
            reply.add(event)
    reply.t_request_ns, reply.t_end_ns = stream.t_request_ns, stream.t_end_ns
    return reply, stream


def sent(route: respx.Route) -> dict[str, object]:
    return json.loads(route.calls.last.request.content)  # type: ignore[no-any-return]


class Cut(httpx.SyncByteStream):
    def __init__(self, text: str) -> None:
        self.text = text

    def __iter__(self) -> Iterator[bytes]:
        yield self.text.encode()
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


# -- native /api/v1/chat ------------------------------------------------------------------------

NATIVE_STATS = {"input_tokens": 12, "total_output_tokens": 3, "reasoning_output_tokens": 1,
                "tokens_per_second": 41.5, "time_to_first_token_seconds": 0.25,
                "model_load_time_seconds": 1.5}
NATIVE_OK = "".join([
    KEEPALIVE,
    named("chat.start", {"model_instance_id": "m"}),
    named("model_load.start", {"model_instance_id": "m"}),
    named("model_load.progress", {"model_instance_id": "m", "progress": 0.5}),
    named("model_load.end", {"model_instance_id": "m", "load_time_seconds": 1.5}),
    named("prompt_processing.start"),
    named("prompt_processing.progress", {"progress": 0.4}),
    named("prompt_processing.end"),
    named("reasoning.start"), named("reasoning.delta", {"content": "hmm"}),
    named("reasoning.end"),
    named("message.start"), named("message.delta", {"content": "Hi"}),
    named("some.future.event", {"x": 1}),
    named("message.delta", {"content": " there"}), named("message.end"),
    named("chat.end", {"result": {"model_instance_id": "m", "output": [], "stats": NATIVE_STATS,
                                  "response_id": "resp_abc"}}),
])


def test_native_streams_progress_reasoning_content_and_server_stats(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/api/v1/chat").respond(200, headers=SSE_HEADERS, content=NATIVE_OK)
    events = list(client.stream_route("native", "m", HISTORY[:1]))
    progress = [(e.text, e.progress) for e in events if e.kind == "progress"]
    assert progress == [("model_load", 0.0), ("model_load", 0.5), ("model_load", 1.0),
                        ("prompt_processing", 0.0), ("prompt_processing", 0.4),
                        ("prompt_processing", 1.0)]
    reply, stream = run(client, "native")
    assert reply.reasoning == "hmm" and reply.content == "Hi there"
    assert reply.response_id == "resp_abc" and reply.server_stats == NATIVE_STATS
    m = reply.metrics()
    assert m.output_tokens == 3 and m.tokens_source == "usage" and m.prompt_tokens == 12
    assert m.reasoning_tokens == 1
    assert stream.instance_id == "m" and stream.finished  # type: ignore[attr-defined]
    assert reply.progress == {"model_load": 1.0, "prompt_processing": 1.0}
    assert sent(route)["stream"] is True and sent(route)["store"] is True


def test_native_sends_a_transcript_or_only_the_new_message_when_continuing(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/api/v1/chat").respond(200, headers=SSE_HEADERS, content=NATIVE_OK)
    run(client, "native", system_prompt="Be brief.", reasoning="off",
        options=SamplingOptions(temperature=0.2, max_tokens=50))
    body = sent(route)
    assert body["input"] == "User: Hi\n\nAssistant: Hello!\n\nUser: And now?"
    assert body["system_prompt"] == "Be brief." and body["reasoning"] == "off"
    assert body["temperature"] == 0.2 and body["max_output_tokens"] == 50
    assert "previous_response_id" not in body
    run(client, "native", previous_response_id="resp_abc")
    body = sent(route)
    assert body["input"] == "And now?" and body["previous_response_id"] == "resp_abc"


def test_native_error_event_is_raised_once_chat_end_has_come(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    body = (named("chat.start", {"model_instance_id": "m"})
            + named("message.delta", {"content": "par"})
            + named("error", {"error": {"type": "internal_error", "message": "GPU fell over"}})
            + named("chat.end", {"result": {"output": [], "stats": {}}}))
    mock.post("/api/v1/chat").respond(200, headers=SSE_HEADERS, content=body)
    reply = ReplyBuffer()
    with pytest.raises(ServerError) as e:
        for event in client.stream_route("native", "m", HISTORY):
            reply.add(event)
    assert "GPU fell over" in e.value.sentence and reply.content == "par"


# -- /v1/responses ------------------------------------------------------------------------------

RESP = {"id": "resp_r1", "object": "response", "status": "in_progress"}
RESPONSES_OK = "".join([
    named("response.created", {"response": RESP}),
    KEEPALIVE,
    named("response.in_progress", {"response": RESP}),
    named("response.output_item.added", {"item": {"type": "reasoning"}}),
    named("response.reasoning_text.delta", {"delta": "think"}),
    named("response.reasoning_text.done", {"text": "think"}),
    named("response.output_text.delta", {"delta": "Hel"}),
    named("response.output_text.delta", {"delta": "lo"}),
    named("response.mystery", {"delta": "not text"}),
    named("response.output_text.done", {"text": "Hello"}),
    named("response.completed", {"response": {**RESP, "status": "completed", "usage": {
        "input_tokens": 9, "output_tokens": 3, "total_tokens": 12,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens_details": {"reasoning_tokens": 1}}}}),
])


def test_responses_streams_text_reasoning_usage_and_the_response_id(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/responses").respond(200, headers=SSE_HEADERS, content=RESPONSES_OK)
    reply, _ = run(client, "responses", system_prompt="Be brief.", reasoning="low",
                   options=SamplingOptions(max_tokens=64))
    assert reply.content == "Hello" and reply.reasoning == "think"
    assert reply.response_id == "resp_r1" and reply.finish_reason == "stop"
    assert reply.usage == {"completion_tokens": 3, "prompt_tokens": 9,
                           "completion_tokens_details": {"reasoning_tokens": 1},
                           "prompt_tokens_details": {"cached_tokens": 4}}
    body = sent(route)
    assert body["instructions"] == "Be brief." and body["reasoning"] == {"effort": "low"}
    assert body["input"] == [{"role": m.role, "content": m.content} for m in HISTORY]
    assert body["max_output_tokens"] == 64 and body["stream"] is True
    run(client, "responses", previous_response_id="resp_r1")
    body = sent(route)
    assert body["input"] == [{"role": "user", "content": "And now?"}]
    assert body["previous_response_id"] == "resp_r1"


def test_responses_error_event_and_failed_response_are_sentences(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/responses")
    route.respond(200, headers=SSE_HEADERS, content=named("response.created", {"response": RESP})
                  + named("error", {"code": "server_error", "message": "Model crashed"}))
    with pytest.raises(ServerError) as e:
        run(client, "responses")
    assert "Model crashed" in e.value.sentence
    route.respond(200, headers=SSE_HEADERS, content=named("response.failed", {"response": {
        **RESP, "status": "failed", "error": {"message": "Context overflow"}}}))
    with pytest.raises(ServerError) as e:
        run(client, "responses")
    assert "Context overflow" in e.value.sentence


# -- /v1/messages -------------------------------------------------------------------------------

MESSAGES_OK = "".join([
    named("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant",
                                        "content": [], "usage": {"input_tokens": 11}}}),
    named("content_block_start", {"index": 0, "content_block": {"type": "thinking",
                                                                 "thinking": ""}}),
    named("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta",
                                                        "thinking": "ponder"}}),
    named("content_block_stop", {"index": 0}),
    named("ping"),
    KEEPALIVE,
    named("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    named("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Yes"}}),
    named("content_block_delta", {"index": 1, "delta": {"type": "signature_delta",
                                                        "signature": "x"}}),
    named("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "!"}}),
    named("content_block_stop", {"index": 1}),
    named("message_delta", {"delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                            "usage": {"output_tokens": 3}}),
    named("message_stop"),
])


def test_messages_streams_blocks_with_system_on_top_and_x_api_key(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/messages").respond(200, headers=SSE_HEADERS, content=MESSAGES_OK)
    history = [ChatMessage("system", "Rules."), *HISTORY]
    reply = ReplyBuffer()
    for event in client.stream_route("messages", "m", history, system_prompt="Be brief.",
                                     options=SamplingOptions(stop=("END",))):
        reply.add(event)
    assert reply.content == "Yes!" and reply.reasoning == "ponder"
    assert reply.finish_reason == "length"
    assert reply.usage == {"completion_tokens": 3, "prompt_tokens": 11}
    request = route.calls.last.request
    assert request.headers["x-api-key"] == "sk-lm-abc:def"
    assert request.headers["authorization"] == "Bearer sk-lm-abc:def"
    assert request.headers["anthropic-version"] == "2023-06-01"
    body = sent(route)
    assert body["system"] == "Be brief.\n\nRules." and body["max_tokens"] == 4096
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]  # type: ignore[index]
    assert body["stop_sequences"] == ["END"]


def test_messages_without_a_token_sends_no_auth_header(mock: respx.MockRouter) -> None:
    route = mock.post("/v1/messages").respond(200, headers=SSE_HEADERS, content=MESSAGES_OK)
    with LMStudioClient(BASE) as anonymous:
        list(anonymous.stream_route("messages", "m", HISTORY))
    headers = route.calls.last.request.headers
    assert "x-api-key" not in headers and "authorization" not in headers


def test_messages_error_event_is_a_sentence(client: LMStudioClient,
                                            mock: respx.MockRouter) -> None:
    body = (named("message_start", {"message": {"id": "msg_1", "usage": {}}})
            + named("error", {"error": {"type": "api_error", "message": "failed to parse "
                                        "grammar"}}))
    mock.post("/v1/messages").respond(200, headers=SSE_HEADERS, content=body)
    with pytest.raises(ServerError) as e:
        run(client, "messages")
    assert "failed to parse grammar" in e.value.sentence


# -- every route ----------------------------------------------------------------------------------

STATEFUL_OK = {"native": NATIVE_OK, "responses": RESPONSES_OK, "messages": MESSAGES_OK}


@pytest.mark.parametrize("route", ["native", "responses", "messages"])
def test_an_unknown_route_is_detected_and_remembered(
    route: str, client: LMStudioClient, mock: respx.MockRouter
) -> None:
    """LM Studio answers a route it lacks with HTTP 200 and an error body; others with 404."""
    mock.post(ROUTE_PATHS[route]).respond(200, json=UNEXPECTED)
    assert client.route_problem(route) is None
    with pytest.raises(NotSupported) as e:
        run(client, route)
    assert client.route_problem(route) == e.value.sentence
    assert f"does not offer POST {ROUTE_PATHS[route]}" in e.value.sentence
    with LMStudioClient(BASE) as plain:
        mock.post(ROUTE_PATHS[route]).respond(404, json={"error": {"message": "Not Found"}})
        assert plain.probe_route(route) is not None
        assert plain.probe_route(route) == plain.route_problem(route)


def test_probing_a_route_that_exists_finds_no_problem(client: LMStudioClient,
                                                      mock: respx.MockRouter) -> None:
    probe = mock.post("/v1/responses").respond(
        400, json={"error": {"message": "Required", "param": "model"}})
    assert client.probe_route("responses") is None
    assert client.probe_route("responses") is None and probe.call_count == 1  # remembered


@pytest.mark.parametrize("route", ["native", "responses", "messages"])
def test_a_cut_stream_is_interrupted_and_keeps_what_arrived(
    route: str, client: LMStudioClient, mock: respx.MockRouter
) -> None:
    whole = STATEFUL_OK[route]
    first_text = {"native": "message.delta", "responses": "response.output_text.delta",
                  "messages": "text_delta"}[route]
    cut_at = whole.index("\n\n", whole.index(first_text)) + 2
    mock.post(ROUTE_PATHS[route]).mock(return_value=httpx.Response(
        200, headers=SSE_HEADERS, stream=Cut(whole[:cut_at])))
    reply = ReplyBuffer()
    with pytest.raises(StreamInterrupted) as e:
        for event in client.stream_route(route, "m", HISTORY):
            reply.add(event)
    assert "connection broke" in e.value.sentence and reply.content


@pytest.mark.parametrize("route", ["native", "responses", "messages"])
def test_a_stream_that_ends_without_its_last_event_is_interrupted(
    route: str, client: LMStudioClient, mock: respx.MockRouter
) -> None:
    whole = STATEFUL_OK[route]
    last = {"native": "event: chat.end", "responses": "event: response.completed",
            "messages": "event: message_stop"}[route]
    mock.post(ROUTE_PATHS[route]).respond(200, headers=SSE_HEADERS,
                                          content=whole[: whole.index(last)])
    with pytest.raises(StreamInterrupted):
        run(client, route)


@pytest.mark.parametrize("route", ["native", "responses", "messages"])
def test_missing_fields_and_junk_frames_are_skipped(
    route: str, client: LMStudioClient, mock: respx.MockRouter
) -> None:
    junk = ("data: {not json\n\n" + "data: [1, 2]\n\n"
            + named("message.delta" if route == "native" else "response.output_text.delta"
                    if route == "responses" else "content_block_delta", {})
            + named("content_block_delta", {"delta": "a string"}))
    whole = STATEFUL_OK[route]
    first = whole.index("event: ", whole.index("event: ") + 1)
    mock.post(ROUTE_PATHS[route]).respond(200, headers=SSE_HEADERS,
                                          content=whole[:first] + junk + whole[first:])
    reply, stream = run(client, route)
    assert reply.content == {"native": "Hi there", "responses": "Hello", "messages": "Yes!"}[route]
    assert stream.malformed_lines == 2  # type: ignore[attr-defined]


def test_every_route_is_named_once() -> None:
    assert ROUTES == ("completions", "native", "responses", "messages")
    assert set(ROUTE_PATHS) == set(ROUTES)


def test_a_route_is_one_row_of_the_table_that_stream_route_reads(
        client: LMStudioClient, mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    """stream_route has no branch per route: each row's path, body, headers and stream class is
    what it sends and reads, and a row added to the table is a route it serves."""
    from atom_core.server import routes
    from atom_core.server.streaming import ChatStream

    for name, spec in routes.ROUTE_TABLE.items():
        called = mock.post(spec.path).respond(200, headers=SSE_HEADERS, content=": nothing\n\n")
        stream = client.stream_route(name, "m", HISTORY)
        assert type(stream) is spec.stream
        with pytest.raises(StreamInterrupted):
            list(stream)
        assert called.call_count == 1
        assert sent(called) == spec.body("m", HISTORY)
        headers = called.calls.last.request.headers
        assert {k: headers.get(k) for k in spec.headers(client.token)} == spec.headers(
            client.token)
    assert routes.anthropic_headers("t")["x-api-key"] == "t"
    echo = routes.ChatRoute(path="/v1/echo", label="Echo", stateful=False,
                            body=lambda model, messages, **_: {"model": model, "stream": True},
                            stream=ChatStream, headers=lambda token: {"x-echo": "1"})
    monkeypatch.setitem(routes.ROUTE_TABLE, "echo", echo)
    route = mock.post("/v1/echo").respond(200, headers=SSE_HEADERS, content=sse_body("Hi"))
    reply, _ = run(client, "echo")
    assert reply.content == "Hi"
    assert json.loads(route.calls[0].request.content) == {"model": "m", "stream": True}
    assert route.calls[0].request.headers["x-echo"] == "1"
    assert routes.ROUTE_LABELS == {n: r.label for n, r in routes.ROUTE_TABLE.items()
                                   if n != "echo"}


def test_a_run_records_its_route_ids_and_the_servers_figures() -> None:
    from atom_core.metrics import compute_metrics
    from atom_core.runs import RunRecord
    from atom_core.server.routes import server_stat_fields

    metrics = compute_metrics(t_request_ns=0, token_times_ns=[10**8, 2 * 10**8], t_end_ns=3 * 10**8)
    record = RunRecord.measured(source="cli", server=BASE, model="m", metrics=metrics, ts=1.0,
                                route="native", response_id="resp_b", previous_response_id="resp_a",
                                **server_stat_fields(NATIVE_STATS))
    assert (record.route, record.response_id, record.previous_response_id) == (
        "native", "resp_b", "resp_a")
    assert (record.server_tps, record.server_ttft_s, record.server_load_s) == (41.5, 0.25, 1.5)
    assert dict(record.tags) == {}
    row = record.to_record()
    assert row["route"] == "native" and RunRecord.from_record(row) == record
    assert RunRecord.from_record({"ts": 1.0, "model": "m"}).route is None  # rows from before


def test_a_prompt_set_run_keeps_each_slots_route(isolated_env: object) -> None:
    from atom_core.arena import promptsets as ps
    from atom_core.arena.setup import SlotSetup
    from atom_core.history.tinydb_store import open_store

    store = open_store(isolated_env)  # type: ignore[arg-type]
    prompt_set = ps.parse_prompt_set('[{"prompt": "One"}, {"prompt": "Two"}]', name="t")
    setups = [SlotSetup(server=BASE, model="a"), SlotSetup(server=BASE, model="a",
                                                           route="responses")]
    run = ps.new_run(store, prompt_set, setups, ["a", "a"], ps.RunSettings(shuffle=False))
    jobs = ps.plan(run)
    assert [(j.tags["slot"], j.route) for j in jobs] == [
        (0, "completions"), (1, "responses"), (0, "completions"), (1, "responses")]
    assert [s.route for s in ps.run_setups(run)] == ["completions", "responses"]
    assert setups[1].contestant == "a (via responses)"


def test_native_error_then_a_close_without_chat_end_reports_the_error(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    body = (named("chat.start", {"model_instance_id": "m"})
            + named("error", {"error": {"type": "internal_error", "message": "Out of memory"}}))
    mock.post("/api/v1/chat").respond(200, headers=SSE_HEADERS, content=body)
    with pytest.raises(ServerError) as e:
        run(client, "native")
    assert "Out of memory" in e.value.sentence


def test_an_arena_column_says_what_the_native_route_is_doing_before_the_first_token() -> None:
    from atom_core.arena.results import live_line
    from atom_core.measure.runner import Slot
    from atom_core.types import StreamEvent

    slot = Slot(0, t_start_ns=0)
    assert live_line(slot, now_ns=1_500_000_000) == "waiting for the first token… 1.5 s"
    slot.reply.add(StreamEvent("progress", 1, text="model_load", progress=0.4))
    assert live_line(slot, now_ns=1_500_000_000) == "loading the model 40%… 1.5 s"
    slot.reply.add(StreamEvent("progress", 2, text="prompt_processing", progress=1.0))
    assert live_line(slot, now_ns=2_000_000_000) == "reading the prompt 100%… 2.0 s"


def test_arena_exports_carry_each_slots_route() -> None:
    import csv
    import io

    from atom_core.arena import report
    from atom_core.arena.rounds import ArenaRound, SlotResult

    slots = tuple(SlotResult(label=x, server=BASE, model="m", target="m", contestant=c,
                             route=r, state="complete")
                  for x, c, r in (("A", "m", "completions"), ("B", "m (via native)", "native")))
    rnd = ArenaRound(id="r1", ts=1.0, prompt="p", system_prompt="", slots=slots)
    rows = list(csv.DictReader(io.StringIO(report.round_csv(rnd))))
    assert [r["route"] for r in rows] == ["completions", "native"]
    assert "| Route | Chat completions (OpenAI) | LM Studio native |" in report.round_markdown(rnd)
    assert ArenaRound.from_record(rnd.to_record()).slots[1].route == "native"


def test_an_arena_slot_carries_a_reasoning_setting_where_its_route_takes_one() -> None:
    from atom_core.arena.results import stat_rows
    from atom_core.arena.rounds import ArenaRound, SlotResult
    from atom_core.arena.setup import SlotSetup

    native = SlotSetup(server=BASE, model="m", route="native", reasoning="low")
    assert native.contestant == "m (via native · reasoning low)"
    assert SlotSetup(server=BASE, model="m").contestant == "m"  # default: unchanged name
    with pytest.raises(ValueError, match="unknown reasoning"):
        SlotSetup(server=BASE, model="m", route="native", reasoning="max")
    with pytest.raises(ValueError, match="completions route takes no reasoning"):
        SlotSetup(server=BASE, model="m", reasoning="on")
    slots = tuple(SlotResult(label=x, server=BASE, model="m", target="m", contestant="m",
                             route="native", reasoning_setting=r, state="complete")
                  for x, r in (("A", "off"), ("B", None)))
    rnd = ArenaRound(id="r1", ts=1.0, prompt="p", system_prompt="", slots=slots)
    (row,) = [r for r in stat_rows(rnd) if r.key == "reasoning"]
    assert row.name == "Reasoning" and row.cells == ("off", "default")
    assert ArenaRound.from_record(rnd.to_record()).slots[0].reasoning_setting == "off"
    plain = ArenaRound(id="r2", ts=1.0, prompt="p", system_prompt="", slots=tuple(
        SlotResult(label=x, server=BASE, model="m", target="m", contestant="m",
                   state="complete") for x in "AB"))
    assert not [r for r in stat_rows(plain) if r.key == "reasoning"]
def test_images_go_in_each_routes_own_shape() -> None:
    from atom_core.server.routes import messages_body, native_body, responses_body
    from atom_core.types import ChatMessage

    url = "data:image/png;base64,iVBORw0KGgo="
    first = ChatMessage("user", "old picture", images=("data:image/jpeg;base64,/9j/",))
    history = [first, ChatMessage("assistant", "A cat."),
               ChatMessage("user", "And this?", images=(url,))]
    # native: a text item, then one image item per picture sent (all of them without state,
    # the last message's when continuing a stored conversation)
    fresh = native_body("m", history)["input"]
    assert fresh[0]["type"] == "text" and "User: And this?" in fresh[0]["content"]
    assert [i["type"] for i in fresh] == ["text", "image", "image"]
    assert fresh[2] == {"type": "image", "data_url": url}
    stateful = native_body("m", history, previous_response_id="resp_1")["input"]
    assert stateful == [{"type": "text", "content": "And this?"},
                        {"type": "image", "data_url": url}]
    assert native_body("m", [ChatMessage("user", "hi")])["input"] == "hi"  # no images: text
    # responses: input_text + input_image parts
    turns = responses_body("m", history, previous_response_id="resp_1")["input"]
    assert turns == [{"role": "user", "content": [{"type": "input_text", "text": "And this?"},
                                                   {"type": "input_image", "image_url": url}]}]
    # messages (Anthropic): base64 image blocks
    last = messages_body("m", history)["messages"][-1]["content"]
    assert last[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                   "data": "iVBORw0KGgo="}}
    # completions: image_url parts (ChatMessage.to_request)
    parts = history[-1].to_request()["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": url}}


def test_a_progress_stage_atom_does_not_know_is_shown_as_plain_text() -> None:
    from atom_core.arena.results import live_line
    from atom_core.measure.runner import Slot
    from atom_core.types import StreamEvent

    slot = Slot(0, t_start_ns=0)
    slot.reply.add(StreamEvent("progress", 1, text="![x](http://127.0.0.1:9/leak)", progress=0.5))
    line = live_line(slot, now_ns=1_000_000_000)
    assert "![" not in line and "50%" in line
