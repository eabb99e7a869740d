"""`POST /v1/chat/completions` streamed on an httpx.AsyncClient: the load engine's twin of
ChatStream (measure/engine.py runs hundreds of them on one asyncio loop).

Everything that is not I/O is ChatStream's own (sse.py): the SSE decoder, the request's clock
(TTFT from the request going out, the wait for a connection apart), completions frames, the
stall rules. What differs is how the stall rules are applied: until the first token an
asyncio timeout holds the first-token limit, after it the request's deadline; stalls between
tokens are the engine's watcher's job (`stalled` / `watch` / `task`), one check for every
stream, so a token costs no timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from ..config import StreamLimits
from ..errors import AtomError, ServerError, StreamInterrupted, StreamStalled
from ..types import StreamEvent
from .http_errors import cap, error_for_response, from_transport, is_error_body
from .sse import CompletionFrames, SSEDecoder, StallWatch, ThinkSplitter
from .streaming import STALE_CONNECTION_ERRORS, stream_timeout

NS = 1_000_000_000


class AsyncChatStream(CompletionFrames):
    """One streamed completion on an AsyncClient, read into `add` (a ReplyBuffer's) by
    `read_into`. Raises the AtomErrors of ChatStream, StreamStalled and ClientPoolTimeout."""

    def __init__(self, http: httpx.AsyncClient, body: dict[str, Any], *, base_url: str,
                 model: str = "", limits: StreamLimits) -> None:
        super().__init__(base_url)
        self._http = http
        self._body = body
        self._model = model
        self._limits = limits
        self._splitter = ThinkSplitter()
        self.watch: StallWatch | None = None  # set once the response has begun
        self.task: asyncio.Task[Any] | None = None
        self.stalled: StreamStalled | None = None  # set by the watcher before it cancels

    @property
    def base_url(self) -> str:
        return self._base_url

    def _request(self) -> httpx.Request:
        return self._http.build_request(
            "POST", "/v1/chat/completions", json=self._body,
            timeout=stream_timeout(self._limits), extensions={"trace": self.on_trace_async})

    def _error_for(self, response: httpx.Response) -> AtomError:
        return error_for_response(response, url=self._base_url, model=self._model)

    async def read_into(self, add: Callable[[StreamEvent], None]) -> None:
        """Sends the request and passes every event to `add`."""
        base = self._base_url
        self.start()
        try:
            try:
                response = await self._http.send(self._request(), stream=True)
            except STALE_CONNECTION_ERRORS:
                # the server closed a kept-alive connection before answering: once more, fresh
                self.start()
                response = await self._http.send(self._request(), stream=True)
        except httpx.TransportError as e:  # a pool timeout is ClientPoolTimeout (ATOM's own)
            self.end()
            raise from_transport(e, url=base) from e
        watch = StallWatch(self._limits, self.t_request_ns)
        watch.answering(time.perf_counter_ns())  # the headers: the stall clock runs from here
        try:
            await self._read(response, add, watch)
        except TimeoutError as e:  # asyncio.timeout: a stall or the deadline
            now = time.perf_counter_ns()
            raise watch.stalled(now, base) or StreamStalled.no_token(
                base, (now - (watch.last_token_ns or watch.started_ns)) / NS) from e
        except httpx.TimeoutException as e:
            raise StreamStalled.no_token(base, self._limits.first_token_timeout_s) from e
        except httpx.TransportError as e:
            raise from_transport(e, url=base, midstream=True,
                                 tokens_arrived=bool(watch.last_token_ns)) from e
        finally:
            self.end()
            await response.aclose()

    async def _read(self, response: httpx.Response, add: Callable[[StreamEvent], None],
                    watch: StallWatch) -> None:
        if response.status_code >= 400:
            await response.aread()
            raise self._error_for(response)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()
            for event in self._whole_body(response):
                add(event)
            return
        loop = asyncio.get_running_loop()
        to_loop_s = loop.time() - time.perf_counter_ns() / NS  # perf_counter -> loop clock
        deadline = watch.deadline_ns / NS + to_loop_s
        decoder = SSEDecoder()
        self.watch = watch
        # Until the first token: the first-token limit. After it, the whole-request deadline.
        async with asyncio.timeout_at(
                min(deadline, loop.time() + self._limits.first_token_timeout_s)) as clock:
            # The body as it comes off the connection: httpx's own iterators add two generator
            # layers and a context manager per read, a third of the client's time per token at
            # hundreds of streams. Only a compressed body needs them (to be decoded).
            body: AsyncIterator[bytes] = (
                response.aiter_bytes() if response.headers.get("content-encoding")
                else response.stream)  # type: ignore[assignment]
            async for raw in body:
                for sse in decoder.feed(raw):
                    t_ns = time.perf_counter_ns()
                    watch.answering(t_ns)  # an event, not a keep-alive: the server is working
                    for event in self._completion_events(sse, t_ns):
                        kind = event.kind
                        if kind == "content" or kind == "reasoning":
                            if not watch.last_token_ns:
                                clock.reschedule(deadline)
                            watch.last_token_ns = t_ns
                            self.tokens += 1
                        add(event)
                    if self._done:
                        break
                if self._done:
                    break
        if not self.finished:
            raise StreamInterrupted(
                "The reply ended before the server finished it. What arrived so far is kept.",
                url=self._base_url)
        if (unreadable := self._unreadable()) is not None:
            raise unreadable

    def _whole_body(self, response: httpx.Response) -> list[StreamEvent]:
        """A JSON answer where a stream was asked for: an error, or the whole reply at once."""
        try:
            body = response.json()
        except ValueError:
            raise ServerError(
                f"The server answered with something that is not a chat reply "
                f"(HTTP {response.status_code}).", url=self._base_url, detail=cap(response.text)
            ) from None
        if is_error_body(body):
            raise self._error_for(response)
        return self._whole_completion(body, time.perf_counter_ns(), response.text)
