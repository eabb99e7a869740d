"""The one HTTP error seam (atom_core.server.http_errors) and what bad servers send (issue 14 §5):
bodies capped, malformed chunks skipped, a stall after tokens saved as interrupted."""

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
)
from atom_core.runs import reply_state
from atom_core.server.client import LMStudioClient
from atom_core.server.http_errors import (
    MAX_BODY_CHARS,
    cap,
    error_for_response,
    from_transport,
)
from atom_core.types import ChatMessage
from tests.fixtures.payloads import BASE
from tests.fixtures.sse import SSE_HEADERS, chunk

HUGE = "Traceback: " + "x" * 2_000_000
HTML = ("<!DOCTYPE html><html><body><h1>500 Internal Server Error</h1>"
        "<pre>TypeError at server.js:42</pre></body></html>")


@pytest.fixture
def client() -> Iterator[LMStudioClient]:
    with LMStudioClient(BASE) as c:
        yield c


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def ask(client: LMStudioClient) -> object:
    return client.chat("m", [ChatMessage("user", "q")])


def response(status: int, *, path: str = "/v1/chat/completions", token: bool = False,
             **kwargs: object) -> httpx.Response:
    headers = {"Authorization": "Bearer sk-lm-x"} if token else {}
    request = httpx.Request("POST", f"{BASE}{path}", headers=headers)
    return httpx.Response(status, request=request, **kwargs)  # type: ignore[arg-type]


# -- cap ------------------------------------------------------------------------------------------


def test_cap_keeps_short_text_and_says_how_much_was_cut() -> None:
    assert cap("short") == "short"
    assert cap("a" * MAX_BODY_CHARS) == "a" * MAX_BODY_CHARS
    assert cap("a" * 510) == "a" * 500 + "…(10 more)"


# -- statuses and bodies --------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body", "kind"), [
    (401, {"error": {"code": "invalid_api_key", "message": "no"}}, AuthError),
    (403, {"error": "forbidden"}, AuthError),
    (200, {"error": "Unexpected endpoint or method. (POST /v1/messages)"}, NotSupported),
    (404, {"error": {"message": "File Not Found"}}, NotSupported),
    (404, {"error": {"message": "model missing", "code": "model_not_found"}}, ModelNotFound),
    (400, {"error": {"message": "bad", "param": "temperature"}}, BadRequest),
    (500, {"error": {"message": "GPU fell over"}}, ServerError),
    (200, {"error": {"message": "odd"}}, ServerError),
])
def test_each_status_maps_to_its_error(status: int, body: object, kind: type) -> None:
    err = error_for_response(response(status, json=body), url=BASE, model="m")
    assert type(err) is kind and err.sentence


def test_the_token_sent_is_read_from_the_request_headers() -> None:
    body = {"error": {"code": "invalid_api_key"}}
    sent = error_for_response(response(401, json=body, token=True), url=BASE)
    unsent = error_for_response(response(401, json=body), url=BASE)
    assert isinstance(sent, AuthError) and sent.token_sent and "refused" in sent.sentence
    assert isinstance(unsent, AuthError) and not unsent.token_sent


def test_a_2_mb_500_body_becomes_a_short_sentence(client: LMStudioClient,
                                                 mock: respx.MockRouter) -> None:
    mock.post("/v1/chat/completions").respond(500, text=HUGE)
    with pytest.raises(ServerError) as e:
        ask(client)
    assert len(e.value.sentence) < 700 and "more)" in e.value.sentence
    assert len(e.value.detail) < 700
    assert f"…({len(HUGE) - MAX_BODY_CHARS} more)" in e.value.sentence


def test_a_500_html_page_and_an_empty_500_are_sentences(client: LMStudioClient,
                                                       mock: respx.MockRouter) -> None:
    route = mock.post("/v1/chat/completions")
    route.respond(500, text=HTML, headers={"content-type": "text/html"})
    with pytest.raises(ServerError) as e:
        ask(client)
    assert e.value.sentence.startswith("The server failed (HTTP 500)")
    route.respond(500, content=b"")
    with pytest.raises(ServerError) as e:
        ask(client)
    assert e.value.sentence == "The server failed (HTTP 500) and said nothing more."


def test_listing_and_admin_use_the_same_seam(client: LMStudioClient,
                                             mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/unload").respond(500, text=HUGE)
    with pytest.raises(ServerError) as e:
        client.unload_model("m")
    assert len(e.value.sentence) < 700


# -- transport ------------------------------------------------------------------------------------


def test_from_transport_tells_unreachable_timeout_and_interrupted_apart() -> None:
    refused = from_transport(httpx.ConnectError("refused"), url=BASE)
    assert isinstance(refused, ServerUnreachable) and "lms server start" in refused.sentence
    slow = from_transport(httpx.ReadTimeout("t"), url=BASE)
    assert isinstance(slow, RequestTimeout) and "loading the model" in slow.sentence
    listing = from_transport(httpx.ReadTimeout("t"), url=BASE, request_line="GET /v1/models")
    assert isinstance(listing, RequestTimeout) and "GET /v1/models" in listing.sentence
    stalled = from_transport(httpx.ReadTimeout("t"), url=BASE, midstream=True,
                             tokens_arrived=True)
    assert isinstance(stalled, StreamInterrupted) and "stopped part-way" in stalled.sentence
    broke = from_transport(httpx.RemoteProtocolError("x"), url=BASE, midstream=True)
    assert isinstance(broke, StreamInterrupted) and "connection broke" in broke.sentence
    assert reply_state(stalled, cancelled=False) == "interrupted"


# -- malformed streams ----------------------------------------------------------------------------


def raw(obj: object) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def test_a_delta_that_is_a_string_or_a_list_is_skipped(client: LMStudioClient,
                                                       mock: respx.MockRouter) -> None:
    body = (chunk("one", role=True)
            + raw({"choices": [{"index": 0, "delta": "oops"}]})
            + raw({"choices": [{"index": 0, "delta": ["a", "b"]}]})
            + raw({"choices": {"delta": {"content": "x"}}})
            + raw({"choices": ["not an object"]})
            + "data: {not json\n\n"
            + chunk(" two") + chunk(finish="stop") + "data: [DONE]\n\n")
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body.encode())
    with client.stream_chat("m", [ChatMessage("user", "q")]) as stream:
        events = list(stream)
    assert "".join(e.text for e in events if e.kind == "content") == "one two"
    assert stream.malformed_lines == 5 and stream.finished


def test_bytes_that_are_not_utf8_do_not_end_the_reply(client: LMStudioClient,
                                                      mock: respx.MockRouter) -> None:
    bad = chunk(" MARK").encode().replace(b"MARK", b"\xff\xfetwo")
    body = chunk("one", role=True).encode() + bad + (chunk(finish="stop")
                                                      + "data: [DONE]\n\n").encode()
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body)
    reply = client.chat("m", [ChatMessage("user", "q")])
    assert reply.content.startswith("one ") and reply.content.endswith("two")
    assert reply.finish_reason == "stop"


def test_an_error_object_mid_stream_is_one_capped_sentence(client: LMStudioClient,
                                                          mock: respx.MockRouter) -> None:
    body = chunk("one", role=True) + raw({"error": {"message": "boom " * 1000}})
    mock.post("/v1/chat/completions").respond(200, headers=SSE_HEADERS, content=body.encode())
    with pytest.raises(ServerError) as e:
        ask(client)
    assert e.value.sentence.startswith("The server reported an error mid-reply: boom")
    assert len(e.value.sentence) < 700


def test_no_done_after_a_finish_is_complete_but_no_finish_is_interrupted(
    client: LMStudioClient, mock: respx.MockRouter
) -> None:
    route = mock.post("/v1/chat/completions")
    route.respond(200, headers=SSE_HEADERS,
                  content=(chunk("one", role=True) + chunk(finish="stop")).encode())
    assert ask(client).finish_reason == "stop"  # type: ignore[attr-defined]
    route.respond(200, headers=SSE_HEADERS, content=chunk("one", role=True).encode())
    with pytest.raises(StreamInterrupted) as e:
        ask(client)
    assert "ended before the server finished" in e.value.sentence


def test_an_html_error_page_becomes_its_visible_words() -> None:
    err = error_for_response(response(500, text=HTML, headers={"content-type": "text/html"}),
                             url=BASE)
    assert err.sentence == ("The server failed (HTTP 500): 500 Internal Server Error "
                            "TypeError at server.js:42")
    assert "<" not in err.sentence
