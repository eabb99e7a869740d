"""What every chat stream shares, synchronous or asyncio: the one Server-Sent Events decoder,
the one clock of a request ("asked to send", "sent", "ended"), the stall rules, and how
`/v1/chat/completions` frames read.

The I/O lives in the streams: SSEStream and its routes (streaming.py, routes.py) read with a
synchronous httpx.Client; AsyncChatStream (async_stream.py, the load engine's) with an
httpx.AsyncClient. Both feed the bytes they read to SSEDecoder, stamp their request with
StreamClock, and turn completions frames into StreamEvents with CompletionFrames, so a figure
from the load engine and one from Chat are measured by the same code.
"""

from __future__ import annotations

import json
import time
from typing import Any

from httpx_sse import ServerSentEvent

from ..config import StreamLimits
from ..errors import ServerError, StreamStalled
from ..types import StreamEvent
from .http_errors import cap, stream_error

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


def well_formed_chunk(chunk: Any) -> bool:
    """A chunk ATOM can read: an object whose `choices` (if any) is a list of objects, whose
    `delta` (if any) is an object. Anything else is skipped and counted, like invalid JSON."""
    if not isinstance(chunk, dict):
        return False
    choices = chunk.get("choices")
    if choices is None:
        return True
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        return False
    return all(isinstance(c.get("delta"), dict | None) for c in choices)


def chunk_events(chunk: dict[str, Any], t_ns: int, splitter: ThinkSplitter) -> list[StreamEvent]:
    """Turns one parsed `chat.completion.chunk` into events (may be several, or none)."""
    events: list[StreamEvent] = []
    choices = chunk.get("choices") or []
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    delta = choice.get("delta") or {}
    delta = delta if isinstance(delta, dict) else {}
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
    timings = chunk.get("timings")  # llama.cpp's llama-server, on its last chunk
    if isinstance(timings, dict) and timings:
        events.append(StreamEvent("timings", t_ns, timings=timings))
    return events


class SSEDecoder:
    """Server-Sent Events from the bytes of a response as they arrive (the WHATWG rules chat
    streams use: `event:`, multi-line `data:`, `id:`, `:` comments, dispatch on a blank line;
    lines end with LF, CRLF or CR, split anywhere across reads). The one decoder of every
    stream, sync and async.

    `feed` takes each read and returns the events it completed. Comments (keep-alives) never
    make an event, so a caller that looks at the clock on every read still sees a stream of
    nothing but keep-alives stall."""

    __slots__ = ("_buffer", "_data", "_event", "_id")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = ""
        self._id = ""

    def feed(self, raw: bytes) -> list[ServerSentEvent]:
        buffer = self._buffer + raw if self._buffer else raw
        held = b""
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
            if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: decide on the next read
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r", b"\n")
        if b"\n" not in buffer:
            self._buffer = buffer + held
            return []
        *lines, rest = buffer.split(b"\n")
        self._buffer = rest + held
        out: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(ServerSentEvent(
                        event=self._event or "message", id=self._id,
                        data=b"\n".join(self._data).decode("utf-8", "replace")))
                    self._data = []
                self._event = ""
                continue
            if line[0] == 58:  # b":": a comment (keep-alive)
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"id" and b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        return out


class StallWatch:
    """Decides when a stream has stalled: no token for `stall_timeout_s` once tokens have
    begun; before the first token, nothing but keep-alives for `stall_timeout_s` once the
    server has begun answering (its headers, or its last non-comment event such as LM Studio's
    load and prompt progress), or no first token within `first_token_timeout_s`; or past
    `request_deadline_s`. Keep-alive comments are never progress. Times are perf_counter_ns."""

    __slots__ = ("answering_ns", "deadline_ns", "last_token_ns", "limits", "started_ns")

    def __init__(self, limits: StreamLimits, started_ns: int) -> None:
        self.limits = limits
        self.started_ns = started_ns
        self.answering_ns = 0  # the server's last sign of work before the first token
        self.last_token_ns = 0
        self.deadline_ns = started_ns + int(limits.request_deadline_s * 1e9)

    def token(self, t_ns: int) -> None:
        self.last_token_ns = t_ns

    def answering(self, t_ns: int) -> None:
        """The server began answering, or sent an event that is not a token (progress)."""
        if not self.last_token_ns:
            self.answering_ns = t_ns

    def stalled(self, now_ns: int, url: str) -> StreamStalled | None:
        """The error to end the stream with, or None while it is making progress."""
        if now_ns >= self.deadline_ns:
            return StreamStalled.deadline(url, self.limits.request_deadline_s)
        stall_ns = self.limits.stall_timeout_s * 1e9
        if self.last_token_ns:
            if now_ns - self.last_token_ns >= stall_ns:
                return StreamStalled.no_token(url, (now_ns - self.last_token_ns) / 1e9)
        elif now_ns - self.started_ns >= self.limits.first_token_timeout_s * 1e9:
            return StreamStalled.no_first_token(url, (now_ns - self.started_ns) / 1e9)
        elif self.answering_ns and now_ns - self.answering_ns >= stall_ns:
            return StreamStalled.no_token(url, (now_ns - self.answering_ns) / 1e9)
        return None


def request_sent(trace_event: str) -> bool:
    """Whether an httpcore trace event (the `trace` request extension) marks the request as
    sent: its headers are written and its body is going out ("http11.send_request_body.started",
    one write before the end of the request, so the server cannot have the whole request yet
    and no token can seem to arrive before the server's own schedule). TTFT starts there.
    Anything before it (waiting for a free connection, connecting, a client too busy to write)
    is ATOM's own wait."""
    return trace_event.endswith(".send_request_body.started")


class StreamClock:
    """The clock of one streamed request, the one place that stamps it, for sync and async
    streams alike: `t_call_ns` when ATOM asked to send (`start`, again on a retry), `t_sent_ns`
    / `t_request_ns` when httpcore started writing the body (`on_trace`, the request's `trace`
    extension: TTFT starts there), `t_end_ns` when the stream closed (`end`). Until the request
    is seen going out, `t_request_ns` is the ask (a mocked transport reports no trace)."""

    def __init__(self) -> None:
        self.t_call_ns: int = 0  # when ATOM asked to send (before any wait for a connection)
        self.t_sent_ns: int = 0  # when the request went on the wire (0: not observed)
        self.t_request_ns: int = 0  # TTFT's start: the send, else the ask
        self.t_end_ns: int = 0

    @property
    def pool_wait_ns(self) -> int | None:
        """How long the request waited for a free connection (None: not observed)."""
        return self.t_sent_ns - self.t_call_ns if self.t_sent_ns else None

    def start(self) -> int:
        """ATOM asks to send (or to send again, on a fresh connection): the clock restarts."""
        self.t_call_ns = self.t_request_ns = time.perf_counter_ns()
        self.t_sent_ns = 0
        return self.t_call_ns

    def on_trace(self, name: str, info: dict[str, Any]) -> None:
        """httpcore's trace callback (a sync client's): stamps the moment the body goes out."""
        if not self.t_sent_ns and request_sent(name):
            self.t_sent_ns = self.t_request_ns = time.perf_counter_ns()

    async def on_trace_async(self, name: str, info: dict[str, Any]) -> None:
        """The same, for an httpx.AsyncClient (whose trace callbacks are awaited)."""
        self.on_trace(name, info)

    def end(self) -> None:
        """The stream closed (the first close counts)."""
        if not self.t_end_ns:
            self.t_end_ns = time.perf_counter_ns()


class StreamState(StreamClock):
    """What every chat stream knows as it reads, sync or async: its clock, whether the server
    said the reply is complete, the tokens and the unreadable frames seen."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self._base_url = base_url
        self.tokens = 0  # content and reasoning events yielded so far
        self.malformed_lines = 0  # data lines that were not JSON, or not a shape we read; skipped
        self.finished = False  # the server said the reply is complete
        self._done = False  # stop reading: the route's last frame has come

    def _json_data(self, sse: ServerSentEvent) -> dict[str, Any] | None:
        """The frame's data as a JSON object; None (counted as malformed) when it is not."""
        data = sse.data.strip()
        if not data:
            return None
        try:
            obj = json.loads(data)
        except ValueError:
            self.malformed_lines += 1
            return None
        if not isinstance(obj, dict):
            self.malformed_lines += 1
            return None
        return obj

    def _unreadable(self) -> ServerError | None:
        """The error for a stream that ended with no token and unreadable frames (e.g. every
        `delta` a string: saved as a fine reply of 0 tokens before); None otherwise."""
        if self.tokens or not self.malformed_lines:
            return None
        return ServerError(
            f"The server's reply could not be read: {self.malformed_lines} of its chunks "
            "were not in a shape ATOM reads, and no token came.", url=self._base_url)


class CompletionFrames(StreamState):
    """A stream of `POST /v1/chat/completions`: `data: {chunk}` frames, then `data: [DONE]`.
    Reasoning arrives as `delta.reasoning_content`, `delta.reasoning` or inline
    `<think>...</think>`; usage on the finish chunk or a separate one. The frame reading that
    ChatStream (sync) and AsyncChatStream (the load engine's) share; each sets `_splitter`."""

    _splitter: ThinkSplitter

    def _completion_events(self, sse: ServerSentEvent, t_ns: int) -> list[StreamEvent]:
        if sse.data.strip() == "[DONE]":
            self.finished = self._done = True
            return []
        chunk = self._json_data(sse)
        if chunk is None:
            return []
        if chunk.get("error"):
            raise stream_error(chunk, url=self._base_url)
        if not well_formed_chunk(chunk):
            self.malformed_lines += 1
            return []
        events = chunk_events(chunk, t_ns, self._splitter)
        if any(e.kind == "finish" for e in events):
            self.finished = True
        return events

    def _whole_completion(self, body: Any, t_ns: int, text: str) -> list[StreamEvent]:
        """A server that ignored `stream: true` and sent the whole completion at once (`body`,
        parsed; `text`, as sent, for the error's detail): its events, all at `t_ns`."""
        choices = body.get("choices") if isinstance(body, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(first, dict) or not isinstance(message, dict):
            raise ServerError("The server's reply had no message in it.", url=self._base_url,
                              detail=cap(text))
        delta = {k: message.get(k) for k in ("content", "reasoning_content", "reasoning")}
        finish = first.get("finish_reason") or "stop"
        chunk = {"choices": [{"delta": delta, "finish_reason": finish}], "usage": body.get("usage")}
        events = chunk_events(chunk, t_ns, ThinkSplitter())
        if any(e.kind == "finish" for e in events):
            self.finished = True
        return events
