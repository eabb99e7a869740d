"""The load engine (asyncio over httpx.AsyncClient): per-model K, pool sizing, pool waits kept
out of TTFT, pool timeouts as client-side errors, and stalls that keep-alives cannot hide."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from atom_core.config import StreamLimits
from atom_core.errors import ClientPoolTimeout, StreamInterrupted, StreamStalled
from atom_core.measure import engine
from atom_core.measure.loadrun import LoadJob, run_load, summarize
from atom_core.measure.runner import FanOut
from atom_core.runs import RunRecord
from atom_core.server.client import LMStudioClient, pool_limits
from atom_core.server.streaming import SSEParser, StallWatch
from atom_core.types import ChatMessage
from tests.fixtures.lmstudio_double import max_overlap, serve
from tests.fixtures.payloads import BASE
from tests.fixtures.sse import SSE_HEADERS, chunk

S = 1_000_000_000

TWO = {"models": [
    {"key": "a", "loaded": True, "ttft_ms": 100, "token_gap_ms": 10, "reply_tokens": 6},
    {"key": "b", "loaded": True, "ttft_ms": 100, "token_gap_ms": 10, "reply_tokens": 6},
]}


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


def test_sse_parser_sees_comments_but_dispatches_only_events() -> None:
    p = SSEParser()
    assert p.feed(": keep-alive") is None and p.feed("") is None
    assert p.feed("event: chat.end") is None and p.feed("data: {\"a\":") is None
    assert p.feed("data: 1}") is None
    assert p.feed("") == ("chat.end", "{\"a\":\n1}")
    assert p.feed("data:[DONE]") is None and p.feed("") == ("message", "[DONE]")


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


# -- per-model K and pool waits, against the real test server ---------------------------------


@pytest.mark.parametrize(("shared", "expected"), [(False, 4), (True, 2)])
def test_each_model_gets_its_own_k_unless_shared(shared: bool, expected: int) -> None:
    with serve(TWO) as double, LMStudioClient(double.url) as client:
        jobs = [LoadJob(model=m, prompt="x") for _ in range(6) for m in ("a", "b")]
        records = list(run_load(jobs, client=client, concurrency=2, shared=shared))
        log = [r for r in double.log(wait=2) if r["path"] == "/v1/chat/completions"]
    assert len(records) == 12 and all(r.ok for r in records)
    assert max_overlap(log) == expected
    if not shared:  # each model had exactly its own K in flight
        for model in ("a", "b"):
            assert max_overlap([r for r in log if r["model"] == model]) == 2
    # every request's wait before sending was observed and kept apart from TTFT (how long it
    # was is the machine's business: no timed assertion)
    assert all(r.metrics.pool_wait_s is not None for r in records)
    assert {s.model for s in summarize(records)} == {"a", "b"}


def test_pool_wait_is_recorded_apart_from_ttft() -> None:
    slow = {"models": [{"key": "a", "loaded": True, "ttft_ms": 100, "token_gap_ms": 25,
                        "reply_tokens": 40}]}

    async def two_on_one_connection(client: LMStudioClient) -> list[engine.Outcome]:
        async with client.async_http(1) as http:  # one connection for two requests
            return list(await asyncio.gather(
                *(engine.run_one(LoadJob(model="a", prompt="x"), client, http)
                  for _ in range(2))))

    with serve(slow) as double, LMStudioClient(double.url) as client:
        outcomes = asyncio.run(two_on_one_connection(client))
    first, waiter = sorted(outcomes, key=lambda o: o.reply.pool_wait_ns or 0)
    assert first.error is None and waiter.error is None
    wait = waiter.reply.metrics().pool_wait_s
    ttft = waiter.reply.metrics().ttft_s
    assert wait is not None and ttft is not None
    # it waited for the whole first reply (100 ms + 39 x 25 ms on the server's schedule) ...
    assert wait >= 1.0
    # ... and that wait is not in its TTFT (the server answers 100 ms after it is sent)
    assert ttft < wait


def test_pool_timeout_is_a_client_side_error_with_its_own_sentence() -> None:
    slow = {"models": [{"key": "a", "loaded": True, "ttft_ms": 100, "token_gap_ms": 50,
                        "reply_tokens": 20}]}
    limits = StreamLimits(pool_timeout_s=0.05)

    async def two_on_one_connection(client: LMStudioClient) -> list[engine.Outcome]:
        async with client.async_http(1) as http:
            return list(await asyncio.gather(
                *(engine.run_one(LoadJob(model="a", prompt="x"), client, http)
                  for _ in range(2))))

    with serve(slow) as double, LMStudioClient(double.url, limits=limits) as client:
        outcomes = asyncio.run(two_on_one_connection(client))
    errors = [o.error for o in outcomes if o.error is not None]
    assert len(errors) == 1 and isinstance(errors[0], ClientPoolTimeout)
    assert "ATOM had no free connection" in errors[0].sentence
    assert "did not answer" not in errors[0].sentence


def test_fanout_records_pool_wait_for_chat_and_arena() -> None:
    with serve(TWO) as double, LMStudioClient(double.url) as client:
        with FanOut([lambda: client.stream_chat("a", [ChatMessage("user", "x")])]) as run:
            while not run.all_done:
                run.poll(0.1)
    slot = run.slots[0]
    assert slot.ok and slot.reply.pool_wait_ns is not None
    assert slot.reply.metrics().pool_wait_s is not None
