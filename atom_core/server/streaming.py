"""Server-Sent Events from /v1/chat/completions -> typed, timestamped StreamEvents.

A ChatStream is an iterator and a context manager. Leaving it early (break, an exception, Stop,
garbage collection) closes the HTTP response, which is what makes the server stop generating.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from ..errors import (
    AtomError,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    StreamInterrupted,
)
from ..measure import hardware
from ..metrics import GenerationMetrics, compute_metrics
from ..types import StreamEvent

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class ThinkSplitter:
    """Splits inline `<think>...</think>` reasoning out of content deltas.

    Tags may be split across chunks ("<thi" + "nk>"), so a possible tag prefix at the end of a
    delta is held back until the next delta decides it. An opening tag counts only before any
    visible content, so a reply that merely talks about the tag is left alone.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._in_think = False
        self._seen_content = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        """Returns (kind, text) pieces, kind being "content" or "reasoning"."""
        out: list[tuple[str, str]] = []
        s = self._pending + text
        self._pending = ""
        while s:
            tag = THINK_CLOSE if self._in_think else THINK_OPEN
            kind = "reasoning" if self._in_think else "content"
            looking = self._in_think or not self._seen_content
            idx = s.find(tag) if looking else -1
            if idx > 0 and not self._in_think and s[:idx].strip():
                idx = -1  # visible text comes first: this tag is part of the answer
                looking = False
                self._seen_content = True
            if idx >= 0:
                self._emit(out, kind, s[:idx])
                s = s[idx + len(tag) :]
                self._in_think = not self._in_think
                continue
            hold = _partial_suffix(s, tag) if looking else 0
            self._emit(out, kind, s[: len(s) - hold])
            self._pending = s[len(s) - hold :]
            break
        return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._emit(out, "reasoning" if self._in_think else "content", self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[tuple[str, str]], kind: str, text: str) -> None:
        if not text:
            return
        if kind == "content" and text.strip():
            self._seen_content = True
        out.append((kind, text))


def _partial_suffix(s: str, tag: str) -> int:
    """Length of the longest suffix of s that is a proper prefix of tag."""
    for k in range(min(len(tag) - 1, len(s)), 0, -1):
        if s.endswith(tag[:k]):
            return k
    return 0


def chunk_events(chunk: dict[str, Any], t_ns: int, splitter: ThinkSplitter) -> list[StreamEvent]:
    """Turns one parsed `chat.completion.chunk` into events (may be several, or none)."""
    events: list[StreamEvent] = []
    choices = chunk.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    delta = choice.get("delta") or {}
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        events.append(StreamEvent("reasoning", t_ns, text=reasoning))
    content = delta.get("content")
    if isinstance(content, str) and content:
        for kind, text in splitter.feed(content):
            events.append(StreamEvent(kind, t_ns, text=text))  # type: ignore[arg-type]
    finish = choice.get("finish_reason")
    if finish:
        for kind, text in splitter.flush():
            events.append(StreamEvent(kind, t_ns, text=text))  # type: ignore[arg-type]
        events.append(StreamEvent("finish", t_ns, finish_reason=str(finish)))
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage:
        events.append(StreamEvent("usage", t_ns, usage=usage))
    return events


def error_message(body: Any) -> str:
    """The human part of an error body: `{"error": "..."}` or `{"error": {"message": ...}}`."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, str):
            return err
        if isinstance(err, dict):
            return str(err.get("message") or err.get("type") or err)
    return str(body)


ErrorMapper = Callable[[httpx.Response], AtomError]

# Errors that mean "the server closed this kept-alive connection before answering on it".
# llama.cpp's server (the demo engine) ends a reply it breaks off, e.g. a conversation longer
# than its context, with a well-formed empty body and then hangs up: the pool keeps that
# connection, and a request sent on it at once fails before any answer.
STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def send_retrying_stale(
    http: httpx.Client,
    request: httpx.Request,
    *,
    stream: bool = False,
    on_retry: Callable[[], None] | None = None,
) -> httpx.Response:
    """Sends `request`; if a pooled connection turns out to be closed before any answer, sends
    it once more (on a new connection). Other errors, and a second failure, are raised."""
    try:
        return http.send(request, stream=stream)
    except STALE_CONNECTION_ERRORS:
        if on_retry is not None:
            on_retry()
        return http.send(request, stream=stream)


class ChatStream:
    """A streamed chat reply. Iterate for StreamEvents; `with` it (or exhaust it) to close.

    Raises (while iterating): ServerUnreachable, AuthError, ModelNotFound, BadRequest,
    ServerError, StreamInterrupted, RequestTimeout.
    """

    def __init__(
        self,
        http: httpx.Client,
        request: httpx.Request,
        *,
        base_url: str,
        error_for: ErrorMapper,
    ) -> None:
        self._http = http
        self._request = request
        self._base_url = base_url
        self._error_for = error_for
        self._response: httpx.Response | None = None
        self._iterator: Iterator[StreamEvent] | None = None
        self.t_request_ns: int = 0
        self.t_end_ns: int = 0
        self.malformed_lines = 0  # data lines that were not JSON; skipped
        self.finished = False  # the server sent a finish_reason or [DONE]

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    def __next__(self) -> StreamEvent:
        return next(iter(self))

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def abort(self) -> None:
        """Ends the request from another thread, at once.

        A worker blocked reading (say, while a long prompt is processed and no token has come
        yet) would only notice a cancel at the next token. Shutting the socket down wakes that
        read and tells the server right away that the client left; the worker then ends with
        the connection broken. Does nothing before the response headers have arrived."""
        response = self._response
        if response is None:
            return
        network = response.extensions.get("network_stream")
        sock = network.get_extra_info("socket") if network is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Ends the request: the server sees the connection close and stops generating."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        if self._response is not None:
            self._response.close()
        if not self.t_end_ns:
            self.t_end_ns = time.perf_counter_ns()

    def _events(self) -> Iterator[StreamEvent]:
        with hardware.in_flight():  # the machine is sampled while any request is in flight
            yield from self._send_and_read()

    def _send_and_read(self) -> Iterator[StreamEvent]:
        self.t_request_ns = time.perf_counter_ns()
        try:
            response = send_retrying_stale(
                self._http, self._request, stream=True, on_retry=self._restart_clock
            )
        except httpx.TimeoutException as e:
            self.t_end_ns = time.perf_counter_ns()
            raise _timeout(self._base_url, e) from e
        except httpx.TransportError as e:
            self.t_end_ns = time.perf_counter_ns()
            raise ServerUnreachable.at(self._base_url, str(e)) from e
        self._response = response
        try:
            yield from self._read(response)
        except httpx.TimeoutException as e:
            raise _timeout(self._base_url, e) from e
        except (httpx.TransportError, SSEError) as e:
            raise StreamInterrupted(
                "The server stopped the reply part-way (the connection broke). "
                "What arrived so far is kept.",
                url=self._base_url,
                detail=str(e),
            ) from e
        finally:
            self.t_end_ns = time.perf_counter_ns()
            response.close()

    def _restart_clock(self) -> None:
        self.t_request_ns = time.perf_counter_ns()  # time the request that gets the answer

    def _read(self, response: httpx.Response) -> Iterator[StreamEvent]:
        if response.status_code >= 400:
            response.read()
            raise self._error_for(response)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            yield from self._non_stream_body(response)
            return
        splitter = ThinkSplitter()
        for sse in EventSource(response).iter_sse():
            t_ns = time.perf_counter_ns()
            data = sse.data.strip()
            if not data:
                continue
            if data == "[DONE]":
                self.finished = True
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                self.malformed_lines += 1
                continue
            if not isinstance(chunk, dict):
                self.malformed_lines += 1
                continue
            if chunk.get("error"):
                raise ServerError(
                    f"The server reported an error mid-reply: {error_message(chunk)}",
                    url=self._base_url,
                    detail=json.dumps(chunk)[:500],
                )
            for event in chunk_events(chunk, t_ns, splitter):
                if event.kind == "finish":
                    self.finished = True
                yield event
        if not self.finished:
            raise StreamInterrupted(
                "The reply ended before the server finished it. What arrived so far is kept.",
                url=self._base_url,
            )

    def _non_stream_body(self, response: httpx.Response) -> Iterator[StreamEvent]:
        """A JSON answer where a stream was asked for: an error (LM Studio's 200 + error) or a
        server that ignored `stream: true` and sent the whole completion at once."""
        response.read()
        t_ns = time.perf_counter_ns()
        try:
            body = response.json()
        except ValueError:
            raise ServerError(
                f"The server answered with something that is not a chat reply "
                f"(HTTP {response.status_code}, {response.headers.get('content-type', '?')}).",
                url=self._base_url,
                detail=response.text[:500],
            ) from None
        if isinstance(body, dict) and body.get("error"):
            raise self._error_for(response)
        choices = body.get("choices") if isinstance(body, dict) else None
        if not choices:
            raise ServerError(
                "The server's reply had no message in it.",
                url=self._base_url,
                detail=response.text[:500],
            )
        message = choices[0].get("message") or {}
        delta = {k: message.get(k) for k in ("content", "reasoning_content", "reasoning")}
        finish = choices[0].get("finish_reason") or "stop"
        chunk = {
            "choices": [{"delta": delta, "finish_reason": finish}],
            "usage": body.get("usage"),
        }
        for event in chunk_events(chunk, t_ns, ThinkSplitter()):
            if event.kind == "finish":
                self.finished = True
            yield event


def _timeout(base_url: str, e: Exception) -> RequestTimeout:
    return RequestTimeout(
        f"The server at {base_url} did not answer in time. It may still be loading the model; "
        "try again in a moment.",
        url=base_url,
        detail=str(e),
    )


@dataclass(slots=True)
class ReplyBuffer:
    """Everything one streamed reply said, kept as it arrives; replays into metrics at the end."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    token_times_ns: list[int] = field(default_factory=list)
    t_request_ns: int = 0
    t_end_ns: int = 0

    def add(self, event: StreamEvent) -> None:
        if event.kind == "content":
            self.content += event.text
            self.token_times_ns.append(event.t_ns)
        elif event.kind == "reasoning":
            self.reasoning += event.text
            self.token_times_ns.append(event.t_ns)
        elif event.kind == "finish":
            self.finish_reason = event.finish_reason
        elif event.kind == "usage":
            self.usage = event.usage

    @property
    def tokens(self) -> int:
        return len(self.token_times_ns)

    def live_tps(self, now_ns: int | None = None) -> float | None:
        """Decode speed so far, for a live readout while streaming."""
        if len(self.token_times_ns) < 2:
            return None
        last = self.token_times_ns[-1] if now_ns is None else now_ns
        span = (last - self.token_times_ns[0]) / 1e9
        return (len(self.token_times_ns) - 1) / span if span > 0 else None

    def metrics(self) -> GenerationMetrics:
        end = self.t_end_ns or time.perf_counter_ns()
        return compute_metrics(
            t_request_ns=self.t_request_ns,
            token_times_ns=self.token_times_ns,
            t_end_ns=end,
            usage=self.usage,
            finish_reason=self.finish_reason,
        )
