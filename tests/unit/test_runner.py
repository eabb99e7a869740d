"""FanOut: several streams at once in worker threads; the caller's thread collects them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import respx

from atom_core.errors import ModelNotFound
from atom_core.measure.runner import FanOut
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage
from tests.fixtures.sse import SSE_HEADERS, chunk

BASE = "http://lms.test:1234"


class SlowStream(httpx.SyncByteStream):
    """Emits tokens with a delay and records when it ran and whether it was closed."""

    def __init__(self, model: str, tokens: int, gap_s: float) -> None:
        self.model, self.tokens, self.gap_s = model, tokens, gap_s
        self.started = self.ended = 0.0
        self.closed = False
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        self.started = time.monotonic()
        yield chunk("", role=True).encode()
        for i in range(self.tokens):
            time.sleep(self.gap_s)
            self.sent += 1
            yield chunk(f"{self.model}-{i} ").encode()
        yield (chunk(finish="stop") + "data: [DONE]\n\n").encode()
        self.ended = time.monotonic()

    def close(self) -> None:
        self.closed = True
        self.ended = self.ended or time.monotonic()


def drain(run: FanOut, limit_s: float = 10) -> None:
    deadline = time.monotonic() + limit_s
    while not run.all_done and time.monotonic() < deadline:
        run.poll(0.05)


def test_three_streams_run_at_the_same_time_and_one_failure_stays_in_its_slot() -> None:
    streams: dict[str, SlowStream] = {}

    def respond(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        if model == "broken":
            return httpx.Response(404, json={"error": {"code": "model_not_found",
                                                       "message": "no such model"}})
        streams[model] = SlowStream(model, tokens=5, gap_s=0.2)
        return httpx.Response(200, headers=SSE_HEADERS, stream=streams[model])

    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").mock(side_effect=respond)
        models = ["a", "broken", "c"]
        factories = [
            (lambda m=m: client.stream_chat(m, [ChatMessage("user", "go")])) for m in models
        ]
        with FanOut(factories) as run:
            drain(run)
        assert run.slots[0].reply.content == "a-0 a-1 a-2 a-3 a-4 " and run.slots[0].ok
        assert run.slots[2].reply.content == "c-0 c-1 c-2 c-3 c-4 " and run.slots[2].ok
        assert isinstance(run.slots[1].error, ModelNotFound) and not run.slots[1].ok
        # Truly parallel: each stream started before the other had ended.
        a, c = streams["a"], streams["c"]
        assert a.started < c.ended and c.started < a.ended
        for slot in (run.slots[0], run.slots[2]):
            m = slot.reply.metrics()
            assert m.output_tokens == 5 and m.ttft_s is not None and m.finish_reason == "stop"


def test_cancel_ends_every_upstream_request_and_keeps_partial_text() -> None:
    streams: list[SlowStream] = []

    def respond(request: httpx.Request) -> httpx.Response:
        s = SlowStream(json.loads(request.content)["model"], tokens=200, gap_s=0.01)
        streams.append(s)
        return httpx.Response(200, headers=SSE_HEADERS, stream=s)

    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.post("/v1/chat/completions").mock(side_effect=respond)
        run = FanOut([
            (lambda m=m: client.stream_chat(m, [ChatMessage("user", "go")])) for m in ("x", "y")
        ]).start()
        # Each slot must have text before Stop (on a busy machine one can lag the other).
        while not all(len(s.reply.content) >= 5 for s in run.slots):
            run.poll(0.05)
        run.cancel()
        assert run.all_done and all(s.cancelled for s in run.slots)
        run.join(timeout=5)
        assert all(s.closed for s in streams) and len(streams) == 2
        assert all(s.sent < 200 for s in streams)  # they did not run to the end
        assert all(s.reply.content for s in run.slots)  # what arrived is kept
        assert not any(t.name.startswith("atom-stream") for t in threading.enumerate())


