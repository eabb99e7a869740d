"""The load engine against the real test server: per-model K, pool waits kept out of TTFT, pool
timeouts as client-side errors, pool wait in Chat and Arena, and jobs on other chat routes."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from atom_core.config import StreamLimits
from atom_core.errors import ClientPoolTimeout
from atom_core.measure import engine
from atom_core.measure.loadrun import LoadJob, run_load, summarize
from atom_core.measure.runner import FanOut
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage
from tests.fixtures.lmstudio_double import max_overlap, serve

T = TypeVar("T")

TWO = {"models": [
    {"key": "a", "loaded": True, "ttft_ms": 100, "token_gap_ms": 10, "reply_tokens": 6},
    {"key": "b", "loaded": True, "ttft_ms": 100, "token_gap_ms": 10, "reply_tokens": 6},
]}



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


def run_apart(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on a thread of its own: Playwright's sync API (the browser tests earlier in
    the same pytest process) leaves an event loop running on the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_pool_wait_is_recorded_apart_from_ttft() -> None:
    slow = {"models": [{"key": "a", "loaded": True, "ttft_ms": 100, "token_gap_ms": 25,
                        "reply_tokens": 40}]}

    async def two_on_one_connection(client: LMStudioClient) -> list[engine.Outcome]:
        async with client.async_http(1) as http:  # one connection for two requests
            return list(await asyncio.gather(
                *(engine.run_one(LoadJob(model="a", prompt="x"), client, http)
                  for _ in range(2))))

    with serve(slow) as double, LMStudioClient(double.url) as client:
        outcomes = run_apart(two_on_one_connection(client))
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
        outcomes = run_apart(two_on_one_connection(client))
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


@pytest.mark.parametrize(("route", "path"), [("native", "/api/v1/chat"),
                                              ("responses", "/v1/responses")])
def test_jobs_on_other_routes_run_their_route_with_k_in_flight(route: str, path: str) -> None:
    with serve(TWO) as double, LMStudioClient(double.url) as client:
        jobs = [LoadJob(model="a", prompt="x", route=route) for _ in range(4)]
        records = list(run_load(jobs, client=client, concurrency=2))
        log = [r for r in double.log(wait=2) if r["path"] == path]
    assert len(records) == 4 and all(r.ok for r in records), [r.error for r in records]
    assert len(log) == 4 and max_overlap(log) == 2
    assert all(r.content and r.metrics.pool_wait_s is not None for r in records)


def test_other_routes_put_more_than_32_requests_on_the_wire_at_once() -> None:
    """K = 40 over the native route: the synchronous client's default pool (32) would hold 8
    back until a reply ended. Each reply takes over 2 s, so every request has arrived before
    the first one ends, unless some waited for a connection."""
    slow = {"models": [{"key": "a", "loaded": True, "ttft_ms": 2000, "token_gap_ms": 10,
                        "reply_tokens": 3}]}
    with serve(slow) as double, LMStudioClient(double.url) as client:
        jobs = [LoadJob(model="a", prompt="x", route="native") for _ in range(40)]
        records = list(run_load(jobs, client=client, concurrency=40))
        log = [r for r in double.log(wait=5) if r["path"] == "/api/v1/chat"]
    assert len(records) == 40 and all(r.ok for r in records), [r.error for r in records][:3]
    assert len(log) == 40 and max_overlap(log) == 40
