"""LMStudioClient against respx-mocked routes: every route, fallback and error a user can meet."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from atom_core.errors import (
    AuthError,
    BadRequest,
    ModelNotFound,
    NotSupported,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    StreamInterrupted,
    StreamStalled,
)
from atom_core.runs import reply_state
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage, Dialect, LoadConfig, SamplingOptions
from tests.fixtures.payloads import AUTH_BODY, BASE, NATIVE_MODELS, UNEXPECTED
from tests.fixtures.sse import SSE_HEADERS, chunk, sse_body


@pytest.fixture
def client() -> Iterator[LMStudioClient]:
    with LMStudioClient(BASE) as c:
        yield c


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


# -- listing ----------------------------------------------------------------------------------


def test_native_listing_reads_every_field(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    listing = client.list_models()
    assert listing.dialect is Dialect.LMSTUDIO_04 and client.dialect is Dialect.LMSTUDIO_04
    assert listing.route == "/api/v1/models" and not listing.loaded_only
    gemma = listing.get("google/gemma-4-26b-a4b")
    assert gemma is not None
    assert gemma.display_name == "Gemma 4 26B A4B" and gemma.publisher == "google"
    assert gemma.architecture == "gemma4" and gemma.quantization == "Q4_K_M"
    assert gemma.bits_per_weight == 4 and gemma.size_bytes == 17990911801
    assert gemma.params == "26B-A4B" and gemma.max_context == 262144 and gemma.format == "gguf"
    assert gemma.capabilities == ("vision", "tools", "reasoning")
    assert gemma.is_loaded and gemma.loaded_instances[0].config["parallel"] == 4
    assert [m.key for m in listing.llms] == ["google/gemma-4-26b-a4b", "qwen/qwen3-4b"]
    assert [m.key for m in listing.loaded] == ["google/gemma-4-26b-a4b"]
    qwen = listing.get("qwen/qwen3-4b")
    assert qwen is not None and not qwen.is_loaded and qwen.capabilities == ()
    assert qwen.architecture is None  # optional fields may be missing
    embed = listing.models[2]
    assert embed.type == "embedding" and not embed.is_llm


def test_falls_back_to_v0_when_v1_is_an_unknown_route(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    # LM Studio 0.3 answers unknown routes with HTTP 200 and an error body.
    mock.get("/api/v1/models").respond(200, json=UNEXPECTED)
    mock.get("/api/v0/models").respond(
        json={
            "object": "list",
            "data": [
                {
                    "id": "google/gemma-3-4b",
                    "object": "model",
                    "type": "vlm",
                    "publisher": "google",
                    "arch": "gemma3",
                    "compatibility_type": "gguf",
                    "quantization": "Q4_K_M",
                    "state": "loaded",
                    "max_context_length": 131072,
                    "loaded_context_length": 12918,
                    "capabilities": ["tool_use"],
                },
                {"id": "b", "object": "model", "type": "llm", "state": "not-loaded"},
                {"id": "e", "object": "model", "type": "embeddings", "state": "not-loaded"},
            ],
        }
    )
    listing = client.list_models()
    assert listing.dialect is Dialect.LMSTUDIO_03 and listing.route == "/api/v0/models"
    gemma = listing.models[0]
    assert gemma.is_loaded and gemma.loaded_instances[0].config == {"context_length": 12918}
    assert gemma.quantization == "Q4_K_M" and set(gemma.capabilities) == {"tools", "vision"}
    assert not listing.models[1].is_loaded
    assert [m.key for m in listing.llms] == ["google/gemma-3-4b", "b"]
    assert not Dialect.LMSTUDIO_03.can_manage_models


def test_falls_back_to_openai_models_flagged_loaded_only(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    mock.get("/api/v1/models").respond(404, json={"error": "not found"})
    mock.get("/api/v0/models").respond(404, text="Not Found")
    mock.get("/v1/models").respond(
        json={
            "object": "list",
            "data": [
                {"id": "openai/gpt-oss-20b", "object": "model", "owned_by": "organization_owner"},
                {"id": "text-embedding-nomic", "object": "model", "owned_by": "x"},
            ],
        }
    )
    listing = client.list_models()
    assert listing.dialect is Dialect.OPENAI and listing.loaded_only
    assert [m.key for m in listing.llms] == ["openai/gpt-oss-20b"]
    assert not listing.models[0].load_state_known
    assert not Dialect.OPENAI.knows_load_state


def test_remembers_dialect_and_asks_that_route_first(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    native = mock.get("/api/v1/models").respond(404)
    mock.get("/api/v0/models").respond(404)
    openai = mock.get("/v1/models").respond(json={"data": [{"id": "m"}]})
    client.list_models()
    client.list_models()
    assert native.call_count == 1  # the second listing went straight to /v1/models
    assert openai.call_count == 2


def test_listing_401_stops_at_once_with_the_auth_sentence(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    mock.get("/api/v1/models").respond(401, json=AUTH_BODY)
    fallback = mock.get("/v1/models").respond(json={"data": []})
    with pytest.raises(AuthError) as e:
        client.list_models()
    assert "requires an API token" in e.value.sentence and not e.value.token_sent
    assert fallback.call_count == 0


def test_refused_token_says_so(mock: respx.MockRouter) -> None:
    route = mock.get("/api/v1/models").respond(401, json=AUTH_BODY)
    with LMStudioClient(BASE, token="sk-lm-abc:def") as c, pytest.raises(AuthError) as e:
        c.list_models()
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-lm-abc:def"
    assert "refused the API token" in e.value.sentence and e.value.token_sent
    assert "sk-lm" not in e.value.sentence and "sk-lm" not in repr(c)


def test_unreachable_server_names_url_and_how_to_start(client: LMStudioClient,
                                                       mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ServerUnreachable) as e:
        client.list_models()
    assert BASE in e.value.sentence and "lms server start" in e.value.sentence


def test_timeout_is_its_own_error(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RequestTimeout):
        client.list_models()


def test_status_summarises_without_raising(client: LMStudioClient,
                                           mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    status = client.status()
    assert status.reachable and status.llm_count == 2 and status.loaded_count == 1
    assert status.sentence == "LM Studio 0.4+ (native API) · 2 models, 1 loaded"
    mock.get("/api/v1/models").mock(side_effect=httpx.ConnectError("refused"))
    down = client.status()
    assert not down.reachable and isinstance(down.error, ServerUnreachable)


def test_not_a_model_server_at_all(client: LMStudioClient, mock: respx.MockRouter) -> None:
    for route in ("/api/v1/models", "/api/v0/models", "/v1/models"):
        mock.get(route).respond(200, json={"hello": "world"})
    with pytest.raises(NotSupported) as e:
        client.list_models()
    assert "not like LM Studio" in e.value.sentence


def test_base_url_is_normalised() -> None:
    with LMStudioClient("localhost:1234/v1/") as c:
        assert c.base_url == "http://localhost:1234"


# -- streaming chat ---------------------------------------------------------------------------


def test_stream_request_body_has_options_system_ttl(mock: respx.MockRouter) -> None:
    route = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("Hi")
    )
    with LMStudioClient(BASE, token="tok") as c:
        reply = c.chat(
            "m",
            [ChatMessage("user", "hello")],
            options=SamplingOptions(temperature=0.2, top_k=40, max_tokens=64, stop=("##",),
                                    seed=7, repeat_penalty=1.1, presence_penalty=0.5,
                                    frequency_penalty=0.25, top_p=0.9),
            system_prompt="Be brief.",
            ttl=300,
        )
    req = route.calls.last.request
    body = json.loads(req.content)
    assert req.headers["authorization"] == "Bearer tok"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert body["temperature"] == 0.2 and body["top_k"] == 40 and body["max_tokens"] == 64
    assert body["stop"] == ["##"] and body["seed"] == 7 and body["repeat_penalty"] == 1.1
    assert body["presence_penalty"] == 0.5 and body["frequency_penalty"] == 0.25
    assert body["top_p"] == 0.9 and body["ttl"] == 300
    assert reply.content == "Hi"


def test_ttl_is_not_sent_to_a_server_known_to_be_plain_openai(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=UNEXPECTED)
    mock.get("/api/v0/models").respond(json=UNEXPECTED)
    mock.get("/v1/models").respond(json={"object": "list", "data": [{"id": "m"}]})
    route = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("Hi"))
    with LMStudioClient(BASE) as c:
        c.chat("m", [ChatMessage("user", "hello")], ttl=300)  # dialect not known yet: sent
        assert json.loads(route.calls.last.request.content)["ttl"] == 300
        assert c.list_models().dialect is Dialect.OPENAI
        c.chat("m", [ChatMessage("user", "hello")], ttl=300)
        assert "ttl" not in json.loads(route.calls.last.request.content)


def test_unset_options_are_not_sent(client: LMStudioClient, mock: respx.MockRouter) -> None:
    route = mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("x")
    )
    client.chat("m", [ChatMessage("user", "q")])
    body = json.loads(route.calls.last.request.content)
    assert set(body) == {"model", "messages", "stream", "stream_options"}


@pytest.mark.parametrize("usage_shape", ["separate", "on_finish"])
def test_usage_in_both_shapes(client: LMStudioClient, mock: respx.MockRouter,
                              usage_shape: str) -> None:
    mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("Hello", " there", "!", usage=usage_shape)
    )
    reply = client.chat("m", [ChatMessage("user", "q")])
    assert reply.content == "Hello there!" and reply.finish_reason == "stop"
    assert reply.usage is not None and reply.usage["completion_tokens"] == 3
    m = reply.metrics()
    assert m.output_tokens == 3 and m.tokens_source == "usage" and m.prompt_tokens == 7


def test_without_usage_tokens_are_counted(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=sse_body("a", "b", usage="none")
    )
    m = client.chat("m", [ChatMessage("user", "q")]).metrics()
    assert m.output_tokens == 2 and m.tokens_source == "chunks"


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_fields(client: LMStudioClient, mock: respx.MockRouter, key: str) -> None:
    body = (
        chunk(reasoning="Let me ", reasoning_key=key, role=True)
        + chunk(reasoning="think.", reasoning_key=key)
        + chunk("Answer")
        + chunk(finish="stop")
        + "data: [DONE]\n\n"
    )
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body)
    reply = client.chat("m", [ChatMessage("user", "q")])
    assert reply.reasoning == "Let me think." and reply.content == "Answer"
    assert reply.metrics().chunks == 3  # reasoning tokens count toward TTFT and speed


def test_inline_think_tags_split_across_chunks(client: LMStudioClient,
                                               mock: respx.MockRouter) -> None:
    pieces = ["<thi", "nk>Plan", " it</th", "ink>", "Done", " <think> stays"]
    body = "".join(chunk(p) for p in pieces) + chunk(finish="stop") + "data: [DONE]\n\n"
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body)
    reply = client.chat("m", [ChatMessage("user", "q")])
    assert reply.reasoning == "Plan it"
    assert reply.content == "Done <think> stays"  # a tag after content is just text


def test_keepalive_comments_and_malformed_lines_are_skipped(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    body = (
        ": keep-alive\n\n"
        + chunk("A", role=True)
        + "data: {not json\n\n"
        + "garbage line without a field\n\n"
        + "data: [1, 2]\n\n"
        + ": another comment\n"
        + chunk("B")
        + chunk(finish="stop")
        + "data: [DONE]\n\n"
    )
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body)
    with client.stream_chat("m", [ChatMessage("user", "q")]) as stream:
        text = "".join(e.text for e in stream if e.kind == "content")
    assert text == "AB" and stream.malformed_lines == 2


class CutStream(httpx.SyncByteStream):
    """Yields some bytes, then the connection breaks (as when the server crashes)."""

    def __init__(self, payload: bytes, error: Exception | None = None) -> None:
        self.payload = payload
        self.error = error
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for line in self.payload.split(b"\n\n"):
            if line:
                yield line + b"\n\n"
        if self.error:
            raise self.error

    def close(self) -> None:
        self.closed = True


def test_stream_cut_midway_keeps_what_arrived(client: LMStudioClient,
                                              mock: respx.MockRouter) -> None:
    payload = (chunk("Half", role=True) + chunk(" a reply")).encode()
    stream_body = CutStream(payload, httpx.RemoteProtocolError("peer closed connection"))
    mock.post("/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers=SSE_HEADERS, stream=stream_body)
    )
    got = []
    with pytest.raises(StreamInterrupted) as e:
        with client.stream_chat("m", [ChatMessage("user", "q")]) as stream:
            for event in stream:
                got.append(event.text)
    assert "".join(got) == "Half a reply"
    assert "kept" in e.value.sentence


def test_stream_ending_without_finish_or_done_is_interrupted(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    mock.post("/v1/chat/completions").respond(
        200, headers=SSE_HEADERS, content=chunk("partial", role=True)
    )
    with pytest.raises(StreamInterrupted):
        client.chat("m", [ChatMessage("user", "q")])


def test_leaving_the_stream_early_closes_the_response(client: LMStudioClient,
                                                      mock: respx.MockRouter) -> None:
    stream_body = CutStream(sse_body(*["t"] * 50))
    mock.post("/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers=SSE_HEADERS, stream=stream_body)
    )
    stream = client.stream_chat("m", [ChatMessage("user", "q")])
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert stream_body.closed


def test_abandoning_the_iterator_closes_via_context_manager(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    stream_body = CutStream(sse_body(*["t"] * 50))
    mock.post("/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers=SSE_HEADERS, stream=stream_body)
    )
    with client.stream_chat("m", [ChatMessage("user", "q")]) as stream:
        next(iter(stream))
    assert stream_body.closed and stream.t_end_ns >= stream.t_request_ns > 0


def test_error_payload_inside_the_stream(client: LMStudioClient, mock: respx.MockRouter) -> None:
    body = chunk("x", role=True) + 'data: {"error": {"message": "Context overflow"}}\n\n'
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body)
    with pytest.raises(ServerError) as e:
        client.chat("m", [ChatMessage("user", "q")])
    assert "Context overflow" in e.value.sentence


def test_http_200_with_error_body_is_not_success(client: LMStudioClient,
                                                 mock: respx.MockRouter) -> None:
    mock.post("/v1/chat/completions").respond(
        200, json={"error": "Unexpected endpoint or method. (POST /v1/chat/completions)"}
    )
    with pytest.raises(NotSupported) as e:
        client.chat("m", [ChatMessage("user", "q")])
    assert "does not offer POST /v1/chat/completions" in e.value.sentence


def test_server_that_ignores_stream_true_still_works(client: LMStudioClient,
                                                     mock: respx.MockRouter) -> None:
    mock.post("/v1/chat/completions").respond(
        200,
        json={
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Whole"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        },
    )
    reply = client.chat("m", [ChatMessage("user", "q")])
    assert reply.content == "Whole" and reply.finish_reason == "stop"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"error": {"message": "Model \"nope\" not found. Please specify a valid model.",
                         "type": "invalid_request_error", "param": "model",
                         "code": "model_not_found"}}),
        (400, {"error": {"message": "Invalid model identifier \"nope\".",
                         "type": "invalid_request_error", "param": "model",
                         "code": "model_not_found"}}),
    ],
)
def test_unknown_model(client: LMStudioClient, mock: respx.MockRouter, status: int,
                       body: dict[str, object]) -> None:
    mock.post("/v1/chat/completions").respond(status, json=body)
    with pytest.raises(ModelNotFound) as e:
        client.chat("nope", [ChatMessage("user", "q")])
    assert "“nope”" in e.value.sentence and e.value.model == "nope"


def test_chat_401(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/v1/chat/completions").respond(401, json=AUTH_BODY)
    with pytest.raises(AuthError):
        client.chat("m", [ChatMessage("user", "q")])


def test_server_error_carries_the_servers_message(client: LMStudioClient,
                                                  mock: respx.MockRouter) -> None:
    mock.post("/v1/chat/completions").respond(
        500, json={"error": {"message": "Failed to load model: out of memory",
                             "type": "internal_error"}}
    )
    with pytest.raises(ServerError) as e:
        client.chat("m", [ChatMessage("user", "q")])
    assert "out of memory" in e.value.sentence and "500" in e.value.sentence


def test_plain_string_400(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/v1/chat/completions").respond(
        400, json={"error": "'response_format.type' must be 'json_schema' or 'text'"}
    )
    with pytest.raises(BadRequest) as e:
        client.chat("m", [ChatMessage("user", "q")])
    assert "response_format" in e.value.sentence


def test_chat_unreachable_and_timeout(client: LMStudioClient, mock: respx.MockRouter) -> None:
    route = mock.post("/v1/chat/completions")
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ServerUnreachable):
        client.chat("m", [ChatMessage("user", "q")])
    route.mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RequestTimeout):
        client.chat("m", [ChatMessage("user", "q")])


def test_read_timeout_after_tokens_is_an_interrupted_reply(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    """Issue 14 §5: tokens arrived, then silence: the stream stopped (saved as interrupted),
    not "did not answer in time... loading the model"."""
    stream_body = CutStream(chunk("a", role=True).encode(), httpx.ReadTimeout("stalled"))
    mock.post("/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers=SSE_HEADERS, stream=stream_body)
    )
    with pytest.raises(StreamStalled) as e:
        client.chat("m", [ChatMessage("user", "q")])
    # a stall is an interrupted reply (kept), never "did not answer in time... loading"
    assert isinstance(e.value, StreamInterrupted)
    assert "stalled" in e.value.sentence and "loading" not in e.value.sentence
    assert reply_state(e.value, cancelled=False) == "interrupted"


def test_read_timeout_before_any_token_may_be_a_model_load(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    stream_body = CutStream(chunk("", role=True).encode(), httpx.ReadTimeout("stalled"))
    mock.post("/v1/chat/completions").mock(
        return_value=httpx.Response(200, headers=SSE_HEADERS, stream=stream_body)
    )
    with pytest.raises(RequestTimeout) as e:
        client.chat("m", [ChatMessage("user", "q")])
    assert "loading the model" in e.value.sentence


# -- load / unload / download -------------------------------------------------------------------


def test_load_sends_only_documented_keys(client: LMStudioClient, mock: respx.MockRouter) -> None:
    route = mock.post("/api/v1/models/load").respond(
        json={"type": "llm", "instance_id": "m", "load_time_seconds": 9.099, "status": "loaded",
              "load_config": {"context_length": 16384, "flash_attention": True}}
    )
    result = client.load_model("m", LoadConfig(context_length=16384, flash_attention=True))
    assert json.loads(route.calls.last.request.content) == {
        "model": "m", "context_length": 16384, "flash_attention": True, "echo_load_config": True,
    }
    assert result.instance_id == "m" and result.load_time_s == pytest.approx(9.099)
    assert result.applied_config == {"context_length": 16384, "flash_attention": True}
    assert result.rejected_keys == ()


def test_load_reads_the_older_instance_field(client: LMStudioClient,
                                             mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/load").respond(json={"model_instance_id": "m:2",
                                                   "load_time_seconds": 1})
    assert client.load_model("m").instance_id == "m:2"


def test_load_retries_without_a_rejected_key(client: LMStudioClient,
                                             mock: respx.MockRouter) -> None:
    route = mock.post("/api/v1/models/load")
    route.side_effect = [
        httpx.Response(400, json={"error": {"type": "invalid_request",
                                            "message": "Unrecognized key(s) in object: "
                                                       "'num_experts'",
                                            "code": "unrecognized_keys",
                                            "param": "num_experts"}}),
        httpx.Response(200, json={"instance_id": "m", "status": "loaded"}),
    ]
    result = client.load_model("m", LoadConfig(context_length=4096, num_experts=4))
    assert result.rejected_keys == ("num_experts",)
    assert "num_experts" not in json.loads(route.calls.last.request.content)


def test_load_unknown_model(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/load").respond(
        404, json={"error": {"type": "model_not_found", "message": "Model \"x\" not found"}}
    )
    with pytest.raises(ModelNotFound):
        client.load_model("x")


def test_load_on_a_server_without_the_route(client: LMStudioClient,
                                            mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/load").respond(
        200, json={"error": "Unexpected endpoint or method. (POST /api/v1/models/load)"}
    )
    with pytest.raises(NotSupported):
        client.load_model("x")


def test_unload(client: LMStudioClient, mock: respx.MockRouter) -> None:
    route = mock.post("/api/v1/models/unload").respond(json={"instance_id": "m"})
    assert client.unload_model("m") == "m"
    assert json.loads(route.calls.last.request.content) == {"instance_id": "m"}


def test_unload_unknown_instance(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/unload").respond(
        404, json={"error": {"type": "invalid_request", "message": "No instance \"zz\""}}
    )
    with pytest.raises(ModelNotFound) as e:
        client.unload_model("zz")
    assert "already be unloaded" in e.value.sentence


def test_download_and_status(client: LMStudioClient, mock: respx.MockRouter) -> None:
    start = mock.post("/api/v1/models/download").respond(
        json={"job_id": "job_493c7c9ded", "status": "downloading",
              "total_size_bytes": 2279145003, "started_at": "2025-10-03T15:33:23.496Z"}
    )
    job = client.download_model("https://huggingface.co/x/y-GGUF", quantization="Q4_K_M")
    assert json.loads(start.calls.last.request.content) == {
        "model": "https://huggingface.co/x/y-GGUF", "quantization": "Q4_K_M"}
    assert job.job_id == "job_493c7c9ded" and not job.done
    mock.get("/api/v1/models/download/status/job_493c7c9ded").respond(
        json={"job_id": "job_493c7c9ded", "status": "downloading", "total_size_bytes": 1000,
              "downloaded_bytes": 250, "bytes_per_second": 50.5,
              "estimated_completion": "2025-10-03T15:43:12.102Z"}
    )
    status = client.download_status("job_493c7c9ded")
    assert status.fraction == 0.25 and status.bytes_per_second == 50.5


def test_download_already_there(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/download").respond(json={"status": "already_downloaded"})
    job = client.download_model("ibm/granite-4-micro")
    assert job.done and job.fraction == 1.0 and job.job_id is None


def test_download_status_unknown_job(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models/download/status/job_0").respond(
        404, json={"error": {"type": "job_not_found", "message": "No job job_0"}}
    )
    with pytest.raises(ServerError) as e:
        client.download_status("job_0")
    assert "no download job" in e.value.sentence


# -- a kept-alive connection the server closed (seen with llama.cpp's server, the demo engine) ---
# After a reply it breaks off (a conversation longer than its context), llama.cpp's server sends a
# well-formed empty body, then hangs up; a request sent at once on that pooled connection fails
# before any answer ("Server disconnected without sending a response", or a reset).


@pytest.mark.parametrize(
    "stale",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
    ],
)
def test_chat_is_sent_again_after_a_stale_connection(
    client: LMStudioClient, mock: respx.MockRouter, stale: httpx.TransportError
) -> None:
    route = mock.post("/v1/chat/completions").mock(
        side_effect=[stale, httpx.Response(200, headers=SSE_HEADERS, content=sse_body("Hi", "!"))]
    )
    reply = client.chat("m", [ChatMessage("user", "hello")])
    assert reply.content == "Hi!" and reply.finish_reason == "stop"
    assert route.call_count == 2
    assert reply.t_request_ns <= reply.token_times_ns[0]


def test_chat_fails_when_the_second_try_fails_too(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/chat/completions").mock(
        side_effect=httpx.RemoteProtocolError("Server disconnected without sending a response.")
    )
    with pytest.raises(ServerUnreachable):
        client.chat("m", [ChatMessage("user", "hello")])
    assert route.call_count == 2


def test_a_refused_connection_is_not_retried(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/chat/completions").mock(
        side_effect=httpx.ConnectError("[Errno 111] Connection refused")
    )
    with pytest.raises(ServerUnreachable):
        client.chat("m", [ChatMessage("user", "hello")])
    assert route.call_count == 1


def test_listing_is_read_again_after_a_stale_connection(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    mock.get("/api/v1/models").respond(404, json={"detail": "Not Found"})
    mock.get("/api/v0/models").respond(404, json={"detail": "Not Found"})
    route = mock.get("/v1/models").mock(
        side_effect=[
            httpx.ReadError("[Errno 104] Connection reset by peer"),
            httpx.Response(200, json={"object": "list", "data": [
                {"id": "gemma-3-270m-a", "object": "model", "owned_by": "me"}]}),
        ]
    )
    listing = client.list_models()
    assert [m.key for m in listing.models] == ["gemma-3-270m-a"]
    assert listing.dialect is Dialect.OPENAI  # (and described: the demo engine's own ids)
    assert route.call_count == 2


def test_a_load_is_never_sent_twice(client: LMStudioClient, mock: respx.MockRouter) -> None:
    route = mock.post("/api/v1/models/load").mock(
        side_effect=httpx.RemoteProtocolError("Server disconnected without sending a response.")
    )
    with pytest.raises(ServerUnreachable):
        client.load_model("qwen/qwen3-4b")
    assert route.call_count == 1


# -- load / unload / download: the remaining error paths (Models page) ---------------------------


def test_load_drops_each_rejected_key_in_turn(client: LMStudioClient,
                                              mock: respx.MockRouter) -> None:
    def refuse(key: str) -> httpx.Response:
        return httpx.Response(400, json={"error": {
            "type": "invalid_request", "code": "unrecognized_keys",
            "message": f"Unrecognized key(s) in object: '{key}'"}})  # named only in the text

    route = mock.post("/api/v1/models/load")
    route.side_effect = [refuse("num_experts"), refuse("flash_attention"),
                         httpx.Response(200, json={"instance_id": "m", "status": "loaded"})]
    result = client.load_model("m", LoadConfig(context_length=8192, flash_attention=True,
                                               num_experts=2))
    assert result.rejected_keys == ("num_experts", "flash_attention")
    assert json.loads(route.calls.last.request.content) == {
        "model": "m", "context_length": 8192, "echo_load_config": True}
    assert result.applied_config is None  # not echoed: the page says "not reported"


def test_load_400_about_something_else_is_not_retried(client: LMStudioClient,
                                                       mock: respx.MockRouter) -> None:
    route = mock.post("/api/v1/models/load").respond(400, json={"error": {
        "type": "invalid_request", "message": "Expected number, received string",
        "code": "invalid_type", "param": "model"}})
    with pytest.raises(BadRequest) as e:
        client.load_model("m", LoadConfig(context_length=4096))
    assert route.call_count == 1 and "Expected number" in e.value.sentence


def test_load_failure_carries_the_servers_message(client: LMStudioClient,
                                                  mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/load").respond(500, json={"error": {
        "type": "internal_error", "message": "Failed to load model: out of memory"}})
    with pytest.raises(ServerError) as e:
        client.load_model("big/model")
    assert "out of memory" in e.value.sentence


def test_unload_needs_a_token(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/unload").respond(401, json=AUTH_BODY)
    with pytest.raises(AuthError) as e:
        client.unload_model("m")
    assert "requires an API token" in e.value.sentence


def test_download_that_fails_midway(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models/download/status/job_1").respond(json={
        "job_id": "job_1", "status": "failed", "total_size_bytes": 1000,
        "downloaded_bytes": 500})
    job = client.download_status("job_1")
    assert job.done and job.status == "failed" and job.fraction == 0.5


def test_download_quantization_for_a_catalog_id_is_not_implemented(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    mock.post("/api/v1/models/download").respond(400, json={"error": {
        "type": "not_implemented",
        "message": "Specifying quantizations for downloading models with LM Studio Model "
                   "Catalog identifiers is coming soon"}})
    with pytest.raises(BadRequest) as e:
        client.download_model("ibm/granite-4-micro", quantization="Q4_K_M")
    assert "coming soon" in e.value.sentence


def test_download_unknown_model(client: LMStudioClient, mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/download").respond(404, json={"error": {
        "type": "model_not_found", "message": "No model nobody/nothing in the catalog"}})
    with pytest.raises(ModelNotFound):
        client.download_model("nobody/nothing")


def test_download_on_a_server_without_the_route(client: LMStudioClient,
                                                mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/download").respond(
        200, json={"error": "Unexpected endpoint or method. (POST /api/v1/models/download)"})
    with pytest.raises(NotSupported):
        client.download_model("ibm/granite-4-micro")
