"""The load engine (asyncio over httpx.AsyncClient): per-model K, pool sizing, pool waits kept
out of TTFT, pool timeouts as client-side errors, and stalls that keep-alives cannot hide.
Against the real test server: tests/integration/test_engine_server.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from atom_core.config import StreamLimits
from atom_core.errors import (
    ClientPoolTimeout,
    NotSupported,
    ServerError,
    StreamInterrupted,
    StreamStalled,
)
from atom_core.measure import engine
from atom_core.measure.loadrun import LoadJob, run_load
from atom_core.runs import RunRecord
from atom_core.server.client import LMStudioClient, pool_limits
from atom_core.server.sse import SSEDecoder, StallWatch, request_sent
from atom_core.server.streaming import ReplyBuffer
from atom_core.types import ChatMessage
from tests.fixtures.payloads import BASE
from tests.fixtures.sse import SSE_HEADERS, chunk, sse_body

S = 1_000_000_000



# -- planning (no sockets) -----------------------------------------------------------------------


def test_lanes_and_pool_sizes_per_model_or_shared() -> None:
    jobs = [LoadJob(model=m, prompt="x", server=s) for m in ("a", "b")
            for s in ("http://one", "http://two") for _ in range(5)]
    per_model = engine.plan_lanes(jobs, shared=False)
    assert set(per_model) == {("http://one", "a"), ("http://two", "a"), ("http://one", "b"),
                              ("http://two", "b")}
    assert all(len(lane) == 5 for lane in per_model.values())
    assert list(engine.plan_lanes(jobs, shared=True)) == [("", "")]
    # K per lane, each lane sending to its own server; never more than a lane's jobs
    assert engine.pool_sizes(jobs, 3, False, lambda s: s) == {"http://one": 6, "http://two": 6}
    assert engine.pool_sizes(jobs, 64, False, lambda s: s) == {"http://one": 10,
                                                               "http://two": 10}
    # shared: one lane of K, which may send to either server
    assert engine.pool_sizes(jobs, 3, True, lambda s: s) == {"http://one": 3, "http://two": 3}


@pytest.mark.parametrize("k", [1, 32, 64, 256, 1024])
def test_pool_holds_k_connections_for_every_k_up_to_1024(k: int) -> None:
    jobs = [LoadJob(model="m", prompt="x") for _ in range(k)]
    (size,) = engine.pool_sizes(jobs, k, False, lambda s: "http://h").values()
    assert size >= k
    limits = pool_limits(size)
    assert limits.max_connections is not None and limits.max_connections >= k
    assert limits.max_keepalive_connections == limits.max_connections


def test_sse_decoder_sees_comments_but_dispatches_only_events() -> None:
    d = SSEDecoder()
    assert d.feed(b": keep-alive\n\n") == []
    assert d.feed(b"event: chat.end\ndata: {\"a\":\n") == [] and d.feed(b"data: 1}\n") == []
    (sse,) = d.feed(b"\n")
    assert (sse.event, sse.data) == ("chat.end", "{\"a\":\n1}")
    (sse,) = d.feed(b"id: r1\ndata:[DONE]\n\n")
    assert (sse.event, sse.data, sse.id) == ("message", "[DONE]", "r1")


@pytest.mark.parametrize("cut", range(1, 40))
def test_sse_decoder_reads_lines_ending_in_lf_crlf_or_cr_cut_anywhere(cut: int) -> None:
    """Sync and async streams share this decoder: however the reads fall, the same events."""
    raw = "data: {\"a\": \"é\"}\r\n\r\n: ping\rdata: x\rdata: y\r\rdata: [DONE]\n\n".encode()
    d = SSEDecoder()
    got = d.feed(raw[:cut]) + d.feed(raw[cut:])
    assert [s.data for s in got] == ['{"a": "é"}', "x\ny", "[DONE]"]


def test_stall_watch_on_pinned_times() -> None:
    w = StallWatch(StreamLimits(stall_timeout_s=60, first_token_timeout_s=300,
                                request_deadline_s=1000), started_ns=0)
    assert w.stalled(299 * S, "u") is None  # a slow prompt: still waiting for a first token
    first = w.stalled(300 * S, "u")
    assert isinstance(first, StreamStalled) and first.waited_s == 300
    w.token(310 * S)
    assert w.stalled(369 * S, "u") is None
    late = w.stalled(370 * S, "u")
    assert isinstance(late, StreamStalled) and "no new token for 60 s" in late.sentence
    w.token(999 * S)
    over = w.stalled(1000 * S, "u")
    assert over is not None and "1000 s limit" in over.sentence
    assert isinstance(over, StreamInterrupted)  # so the reply is saved as interrupted


# -- stalls with keep-alive comments ---------------------------------------------------------


def _one_token_then_keepalives() -> Iterator[bytes]:
    yield chunk("", role=True).encode()
    yield chunk("Hello").encode()
    for _ in range(10_000):
        yield b": keep-alive\n\n"


def test_sync_stream_stalls_despite_keepalives_on_a_fake_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Each look at the clock moves it one second on: no sleeping, and a 5 s stall timeout.
    ticks = itertools.count(0, S)
    monkeypatch.setattr("atom_core.server.streaming.time.perf_counter_ns", lambda: next(ticks))
    limits = StreamLimits(stall_timeout_s=5, first_token_timeout_s=50, request_deadline_s=900)
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE, limits=limits) as client:
        mock.post("/v1/chat/completions").mock(return_value=httpx.Response(
            200, headers=SSE_HEADERS, content=_one_token_then_keepalives()))
        stream = client.stream_chat("m", [ChatMessage("user", "q")])
        got = []
        with pytest.raises(StreamStalled) as caught:
            for event in stream:
                got.append(event)
    assert [e.text for e in got if e.kind == "content"] == ["Hello"]
    assert caught.value.waited_s >= 5
    # how far it read past the token: a handful of keep-alives, not ten thousand
    assert (stream.t_end_ns - stream.t_request_ns) / S < 20


async def _async_one_token_then_keepalives() -> AsyncIterator[bytes]:
    yield chunk("", role=True).encode()
    yield chunk("Hello").encode()
    for _ in range(10_000):
        await asyncio.sleep(0.05)
        yield b": keep-alive\n\n"


def test_engine_ends_a_stalled_stream_and_keeps_what_arrived() -> None:
    limits = StreamLimits(stall_timeout_s=0.4, first_token_timeout_s=5, request_deadline_s=60)
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE, limits=limits) as client:
        mock.post("/v1/chat/completions").mock(side_effect=lambda request: httpx.Response(
            200, headers=SSE_HEADERS, content=_async_one_token_then_keepalives()))
        (record,) = list(run_load([LoadJob(model="m", prompt="q")], client=client))
    assert isinstance(record.error, StreamStalled)
    assert record.content == "Hello" and not record.cancelled
    row = RunRecord.from_record(record.run_row("cli"))
    assert row.state == "interrupted" and "stalled" in row.error
    # ended by the 0.4 s rule, long before the 10,000 keep-alives (500 s) ran out
    assert record.metrics.e2e_s < 30


# -- keep-alives and no token at all (issue 23 §3) ---------------------------------------------


def test_stall_watch_before_the_first_token_on_pinned_times() -> None:
    w = StallWatch(StreamLimits(stall_timeout_s=5, first_token_timeout_s=300,
                                request_deadline_s=1000), started_ns=0)
    assert w.stalled(100 * S, "u") is None  # no answer yet (a JIT load): the first-token rule
    w.answering(100 * S)  # the server's headers
    assert w.stalled(104 * S, "u") is None
    w.answering(103 * S)  # a progress event (LM Studio's prompt processing): work, not a stall
    assert w.stalled(107 * S, "u") is None
    stalled = w.stalled(108 * S, "u")
    assert isinstance(stalled, StreamStalled) and stalled.waited_s == 5
    assert "no new token for 5 s" in stalled.sentence and "Settings" in stalled.sentence
    late = StallWatch(StreamLimits(stall_timeout_s=60, first_token_timeout_s=30,
                                   request_deadline_s=1000), started_ns=0)
    late.answering(1 * S)
    never = late.stalled(30 * S, "u")
    assert never is not None and "never began" in never.sentence  # the first-token limit
    w.token(110 * S)
    w.answering(112 * S)  # after the first token only tokens count
    assert w.stalled(115 * S, "u") is not None


def _only_keepalives() -> Iterator[bytes]:
    for _ in range(10_000):
        yield b": keep-alive\n\n"


def test_sync_stream_of_keepalives_and_no_token_stalls_on_a_fake_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ATOM_STALL_TIMEOUT_S=5 and a server that sends nothing but keep-alives: ended at the
    stall timeout, not at the 300 s first-token limit (it ran on before)."""
    ticks = itertools.count(0, S)  # each look at the clock moves it one second on
    monkeypatch.setattr("atom_core.server.streaming.time.perf_counter_ns", lambda: next(ticks))
    limits = StreamLimits(stall_timeout_s=5, first_token_timeout_s=300, request_deadline_s=900)
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE, limits=limits) as client:
        mock.post("/v1/chat/completions").mock(return_value=httpx.Response(
            200, headers=SSE_HEADERS, content=_only_keepalives()))
        stream = client.stream_chat("m", [ChatMessage("user", "q")])
        with pytest.raises(StreamStalled) as caught:
            list(stream)
    assert "no new token for" in caught.value.sentence
    assert 5 <= caught.value.waited_s < 300
    assert stream.tokens == 0


async def _async_only_keepalives() -> AsyncIterator[bytes]:
    for _ in range(10_000):
        await asyncio.sleep(0.05)
        yield b": keep-alive\n\n"


def test_engine_ends_a_stream_of_keepalives_before_its_first_token() -> None:
    """The load engine (bench --stall-timeout): the same rule through its watcher."""
    limits = StreamLimits(stall_timeout_s=0.4, first_token_timeout_s=60, request_deadline_s=90)
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE, limits=limits) as client:
        mock.post("/v1/chat/completions").mock(side_effect=lambda request: httpx.Response(
            200, headers=SSE_HEADERS, content=_async_only_keepalives()))
        (record,) = list(run_load([LoadJob(model="m", prompt="q")], client=client))
    assert isinstance(record.error, StreamStalled)
    assert "never began" not in record.error.sentence  # the stall rule, not the 60 s limit
    assert record.error.waited_s < limits.first_token_timeout_s


def test_a_pool_timeout_goes_through_the_one_error_seam() -> None:
    from atom_core.server.http_errors import from_transport

    err = from_transport(httpx.PoolTimeout("no connection"), url=BASE)
    assert isinstance(err, ClientPoolTimeout) and "ATOM had no free connection" in err.sentence


# -- other chat routes run in threads over a synchronous client -----------------------------------


@pytest.mark.parametrize(("k", "shared", "models"), [(64, False, 1), (40, False, 2),
                                                      (40, True, 2), (8, False, 1)])
def test_threaded_routes_get_a_client_whose_pool_holds_every_request_in_flight(
        monkeypatch: pytest.MonkeyPatch, k: int, shared: bool, models: int) -> None:
    """The synchronous client's default pool holds 32: a native/responses/messages load at
    K > 32 must not queue on it. No sockets: the threaded runner is replaced by one that
    records the client it was given."""
    used: list[LMStudioClient] = []

    def fake_run_one_threaded(job: LoadJob, client: LMStudioClient, *_: object) -> engine.Outcome:
        used.append(client)
        return engine.Outcome(job=job, server=client.base_url, reply=ReplyBuffer(), error=None,
                              cancelled=True, started_at=0.0, t_call_ns=0)

    monkeypatch.setattr(engine, "run_one_threaded", fake_run_one_threaded)
    jobs = [LoadJob(model=f"m{i % models}", prompt="x", route="native")
            for i in range(k * models)]
    with LMStudioClient(BASE) as client:
        assert client.max_connections == 32
        records = list(run_load(jobs, client=client, concurrency=k, shared=shared))
        assert len(records) == len(jobs)
        in_flight = k if shared else k * models
        assert {c.max_connections >= in_flight for c in used} == {True}
        assert {c.base_url for c in used} == {client.base_url}
        if in_flight <= 32:
            assert {id(c) for c in used} == {id(client)}  # big enough already: no second client
        assert client.max_connections == 32  # the caller's client is left as it was


def test_with_pool_keeps_server_token_and_limits_and_learns_back_route_problems() -> None:
    limits = StreamLimits(stall_timeout_s=7.0)
    with LMStudioClient(BASE, token="t0k", limits=limits) as client:
        assert client.with_pool(16) is client
        with client.with_pool(100) as big:
            assert big is not client and big.max_connections == 100
            assert (big.base_url, big.token, big.limits) == (BASE, "t0k", limits)
            with respx.mock(base_url=BASE) as mock:
                mock.post("/api/v1/chat").respond(json={"error": "Unexpected endpoint or method."})
                with pytest.raises(NotSupported):
                    list(big.stream_route("native", "m", [ChatMessage("user", "q")]))
            assert big.route_problem("native")
            client.learn_routes(big)
        assert client.route_problem("native") == big.route_problem("native")


def test_ttft_starts_when_the_request_body_is_written_not_when_connecting() -> None:
    """httpcore's trace events in the order one request on a new connection sends them: the
    request is sent as its body goes out (one write before the end: the server cannot have
    the whole request yet); connecting is part of the wait before that."""
    events = ["connection.connect_tcp.started", "connection.connect_tcp.complete",
              "http11.send_request_headers.started", "http11.send_request_headers.complete",
              "http11.send_request_body.started", "http11.send_request_body.complete",
              "http11.receive_response_headers.started"]
    assert [e for e in events if request_sent(e)] == ["http11.send_request_body.started"]


@pytest.mark.parametrize("size", [1, 31, 32, 33, 100, 1024, 1030])
def test_sharded_pool_never_asks_a_client_for_more_connections_than_it_holds(size: int) -> None:
    made: list[int] = []

    def make(n: int) -> Any:  # a stand-in: the pool only hands clients out
        made.append(n)
        return object()

    pool = engine.ShardedPool(make, size)
    assert len(pool.clients) == len(made)
    assert all(n - 2 <= engine.SHARD for n in made)  # each client small (+2 spare)
    assert sum(n - 2 for n in made) >= size
    # `size` requests in flight, some ending and new ones starting in between
    held = [pool.acquire() for _ in range(size)]
    for i in held[::3]:
        pool.release(i)
    held = [i for j, i in enumerate(held) if j % 3] + [pool.acquire()
                                                        for _ in range(len(held[::3]))]
    counts = [held.count(i) for i in range(len(made))]
    assert sum(counts) == size
    assert all(c <= n - 2 for c, n in zip(counts, made, strict=True))


@pytest.mark.parametrize("k", [engine.START_BATCH - 1, engine.START_BATCH * 2 + 3])
def test_streams_start_in_batches_and_every_job_still_runs(k: int) -> None:
    """The engine starts its workers START_BATCH at a time, letting the loop read in between:
    none may be lost on the way, however K falls against the batches."""
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").mock(side_effect=lambda request: httpx.Response(
            200, headers=SSE_HEADERS, content=sse_body("a", "b")))
        jobs = [LoadJob(model="m", prompt="q", tags={"i": i}) for i in range(k + 5)]
        records = list(run_load(jobs, client=client, concurrency=k))
    assert sorted(r.job.tags["i"] for r in records) == list(range(k + 5))
    assert all(r.ok and r.content == "ab" for r in records)


def test_a_reply_of_only_unreadable_chunks_is_an_error_not_a_fine_empty_reply() -> None:
    """Issue 23: a reply whose every `delta` is a string was saved as a successful run with 0
    tokens. One with some unreadable chunks among real tokens still reads as fine."""
    bad = 'data: {"choices": [{"index": 0, "delta": "Hello", "finish_reason": null}]}\n\n'
    done = ('data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
            "data: [DONE]\n\n")
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        route = mock.post("/v1/chat/completions")
        route.mock(return_value=httpx.Response(200, headers=SSE_HEADERS,
                                               content=(bad * 3 + done).encode()))
        with pytest.raises(ServerError) as caught:
            list(client.stream_chat("m", [ChatMessage("user", "q")]))
        assert "3 of its chunks were not in a shape ATOM reads" in caught.value.sentence
        route.mock(return_value=httpx.Response(
            200, headers=SSE_HEADERS, content=(bad + chunk("Hi") + done).encode()))
        events = list(client.stream_chat("m", [ChatMessage("user", "q")]))
    assert [e.text for e in events if e.kind == "content"] == ["Hi"]


# -- one decoder, one clock for the sync and async streams (issue 19) ----------------------------

_TOKENS = (chunk("", role=True) + chunk("Hel") + chunk("lo") + chunk(finish="stop")
           + "data: [DONE]\n\n")


@pytest.mark.parametrize(("body", "outcome"), [
    (_TOKENS, "Hello"),
    (_TOKENS.replace("\n", "\r\n"), "Hello"),
    (_TOKENS.replace("\n", "\r"), "Hello"),  # lines may end in a lone CR too (WHATWG)
    ('data: {"choices": [{"delta": "x"}]}\n\n' * 2 + "data: [DONE]\n\n", ServerError),
])
def test_sync_and_async_streams_read_the_same_bytes_the_same_way(
        body: str, outcome: str | type[Exception]) -> None:
    """Chat's ChatStream and the load engine's AsyncChatStream share one SSE decoder and one
    completions reader: the same bytes make the same reply, or the same error."""
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").mock(side_effect=lambda request: httpx.Response(
            200, headers=SSE_HEADERS, content=body.encode()))
        (record,) = list(run_load([LoadJob(model="m", prompt="q")], client=client))
        try:
            sync: object = client.chat("m", [ChatMessage("user", "q")]).content
        except ServerError as e:
            sync = e
    if isinstance(outcome, str):
        assert sync == record.content == outcome and record.ok
    else:
        assert isinstance(sync, outcome) and isinstance(record.error, outcome)


class TracedTransport(httpx.MockTransport):
    """A mock that calls the request's httpcore trace as a real connection does (sync or
    async), so a stream sees its request go out."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["trace"]("http11.send_request_body.started", {})
        return super().handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.extensions["trace"]("http11.send_request_body.started", {})
        return await super().handle_async_request(request)


def test_sync_and_async_streams_are_stamped_by_one_clock() -> None:
    from atom_core.server.async_stream import AsyncChatStream
    from atom_core.server.routes import MessagesStream, NativeChatStream, ResponsesStream
    from atom_core.server.sse import StreamClock
    from atom_core.server.streaming import ChatStream

    for cls in (ChatStream, NativeChatStream, ResponsesStream, MessagesStream, AsyncChatStream):
        assert issubclass(cls, StreamClock)
        stampers = [k for k in cls.__mro__ if k is not StreamClock
                    and {"on_trace", "_on_trace", "start", "end"} & set(vars(k))]
        assert not stampers, f"{cls.__name__}: {stampers} stamp the request themselves"
    transport = TracedTransport(lambda request: httpx.Response(
        200, headers=SSE_HEADERS, content=sse_body("a", "b")))
    with LMStudioClient(BASE, transport=transport) as client:
        sync = client.chat("m", [ChatMessage("user", "q")]).metrics()
        (record,) = list(run_load([LoadJob(model="m", prompt="q")], client=client,
                                  transport_for=lambda _url: transport))
    for m in (sync, record.metrics):
        assert m.pool_wait_s is not None and m.ttft_s is not None and m.ttft_s >= 0
