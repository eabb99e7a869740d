"""Server-Sent Events -> typed, timestamped StreamEvents.

SSEStream is the shape every chat route's stream has: an iterator and a context manager with
`abort()`. Leaving it early (break, an exception, Stop, garbage collection) closes the HTTP
response, which is what makes the server stop generating. ChatStream reads
/v1/chat/completions; the other routes' streams are in routes.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import ServerSentEvent, SSEError

from ..config import DEFAULT_LIMITS, StreamLimits
from ..errors import AtomError, ServerError, StreamInterrupted, StreamStalled
from ..measure import hardware
from ..metrics import GenerationMetrics, compute_metrics
from ..types import StreamEvent
from .http_errors import cap, error_for_response, from_transport, is_error_body, stream_error

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


class SSEParser:
    """Server-Sent Events, line by line (WHATWG rules that chat streams use: `event:`,
    multi-line `data:`, `id:`, `:` comments, dispatch on a blank line).

    Fed every line, comments included, so the caller sees keep-alives arrive and can still
    decide that a stream without tokens has stalled."""

    __slots__ = ("_data", "_event", "_id")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id = ""

    def feed(self, line: str) -> ServerSentEvent | None:
        """Returns the event when a blank line ends one, else None."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            out = ServerSentEvent(event=self._event or "message", data="\n".join(self._data),
                                  id=self._id)
            self._data, self._event = [], ""
            return out
        if line[0] == ":":
            return None  # a comment: keep-alive
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


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


ErrorMapper = Callable[[httpx.Response], AtomError]

# Errors that mean "the server closed this kept-alive connection before answering on it".
# llama.cpp's server (the demo engine) ends a reply it breaks off, e.g. a conversation longer
# than its context, with a well-formed empty body and then hangs up: the pool keeps that
# connection, and a request sent on it at once fails before any answer.
STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def request_sent(trace_event: str) -> bool:
    """Whether an httpcore trace event (the `trace` request extension) marks the request as
    sent: its headers are written and its body is going out ("http11.send_request_body.started",
    one write before the end of the request, so the server cannot have the whole request yet
    and no token can seem to arrive before the server's own schedule). TTFT starts there.
    Anything before it (waiting for a free connection, connecting, a client too busy to write)
    is ATOM's own wait."""
    return trace_event.endswith(".send_request_body.started")


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


class SSEStream:
    """A streamed reply over one chat route. Iterate for StreamEvents; `with` it (or exhaust
    it) to close. Each route (ChatStream here, the others in routes.py) says how its frames
    read (`_on_sse`) and what a whole JSON answer means (`_non_stream_body`); sending, closing,
    `abort()` and the mapping of failures to AtomErrors (http_errors) are shared, and so are
    the stall rules (StallWatch: a token resets the clock, keep-alives do not) and the timing
    of the wait for a free connection (`pool_wait_ns`, kept out of TTFT).

    Raises (while iterating): ServerUnreachable, AuthError, ModelNotFound, BadRequest,
    NotSupported, ServerError, StreamInterrupted (StreamStalled), RequestTimeout,
    ClientPoolTimeout.
    """

    def __init__(
        self,
        http: httpx.Client,
        request: httpx.Request,
        *,
        base_url: str,
        model: str = "",
        error_for: ErrorMapper | None = None,
        limits: StreamLimits = DEFAULT_LIMITS,
    ) -> None:
        self._http = http
        self._request = request
        # httpcore calls this back at each step of the request; `request_sent` picks the moment
        # its body goes out: TTFT starts there, and anything before it is pool wait.
        request.extensions = {**request.extensions, "trace": self._on_trace}
        self._base_url = base_url
        self._limits = limits
        self._watch: StallWatch | None = None
        self._stalled: StreamStalled | None = None
        self._error_for: ErrorMapper = error_for or (
            lambda r: error_for_response(r, url=base_url, model=model)
        )
        self._response: httpx.Response | None = None
        self._iterator: Iterator[StreamEvent] | None = None
        self.t_call_ns: int = 0  # when ATOM asked to send (before any wait for a connection)
        self.t_sent_ns: int = 0  # when the request got a connection (0: not observed)
        self.t_request_ns: int = 0  # when the request was sent: TTFT's start
        self.t_end_ns: int = 0
        self.tokens = 0  # content and reasoning events yielded so far
        self.malformed_lines = 0  # data lines that were not JSON, or not a shape we read; skipped
        self.finished = False  # the server said the reply is complete
        self._done = False  # stop reading: the route's last frame has come

    @property
    def request_bytes(self) -> int:
        """Size of the request body: on a stateful route it stays flat as a chat grows."""
        return len(self._request.content)

    def __iter__(self) -> Iterator[StreamEvent]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    def __next__(self) -> StreamEvent:
        return next(iter(self))

    def __enter__(self: S) -> S:
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

    @property
    def pool_wait_ns(self) -> int | None:
        """How long the request waited for a free connection (None: not observed)."""
        return self.t_sent_ns - self.t_call_ns if self.t_sent_ns else None

    def check_stall(self, now_ns: int | None = None) -> bool:
        """From another thread: ends the stream if it has stalled (see StallWatch); the reader
        then raises StreamStalled. Returns True when it did."""
        watch = self._watch
        if watch is None or self._stalled is not None or self.t_end_ns:
            return self._stalled is not None
        stalled = watch.stalled(now_ns or time.perf_counter_ns(), self._base_url)
        if stalled is None:
            return False
        self._stalled = stalled
        self.abort()
        return True

    def _on_trace(self, name: str, info: dict[str, Any]) -> None:
        if not self.t_sent_ns and request_sent(name):
            self.t_sent_ns = time.perf_counter_ns()
            self.t_request_ns = self.t_sent_ns

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
        self.t_call_ns = self.t_request_ns = time.perf_counter_ns()
        self._watch = watch = StallWatch(self._limits, self.t_call_ns)
        try:
            response = send_retrying_stale(
                self._http, self._request, stream=True, on_retry=self._restart_clock
            )
        except httpx.TransportError as e:
            self.t_end_ns = time.perf_counter_ns()
            raise from_transport(e, url=self._base_url) from e
        self._response = response
        if self.t_sent_ns:
            watch.started_ns = self.t_sent_ns
        watch.answering(time.perf_counter_ns())  # the headers: the stall clock runs from here
        try:
            yield from self._read(response)
        except (httpx.TransportError, SSEError) as e:
            if self._stalled is not None:  # check_stall() cut the socket
                raise self._stalled from e
            if isinstance(e, httpx.TimeoutException) and watch.last_token_ns:
                # tokens had begun: the stream went silent
                raise StreamStalled.no_token(
                    self._base_url, (time.perf_counter_ns() - watch.last_token_ns) / 1e9
                ) from e
            # A read timeout after tokens arrived is a stopped stream, not a slow model load.
            raise from_transport(
                e, url=self._base_url, midstream=True, tokens_arrived=self.tokens > 0
            ) from e
        finally:
            self.t_end_ns = time.perf_counter_ns()
            response.close()

    def _restart_clock(self) -> None:
        # time the request that gets the answer
        self.t_call_ns = self.t_request_ns = time.perf_counter_ns()
        self.t_sent_ns = 0

    def _read(self, response: httpx.Response) -> Iterator[StreamEvent]:
        if response.status_code >= 400:
            response.read()
            raise self._error_for(response)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            yield from self._non_stream_body(response)
            return
        parser = SSEParser()
        watch = self._watch
        assert watch is not None
        for line in response.iter_lines():
            t_ns = time.perf_counter_ns()
            stalled = self._stalled or watch.stalled(t_ns, self._base_url)
            if stalled is not None:
                raise stalled
            sse = parser.feed(line.rstrip("\r"))
            if sse is None:
                continue
            watch.answering(t_ns)  # an event (not a keep-alive comment): the server is working
            for event in self._on_sse(sse, t_ns):
                if event.kind in ("content", "reasoning"):
                    self.tokens += 1
                    watch.token(t_ns)
                yield event
            if self._done:
                break
        else:
            if self._stalled is not None:
                raise self._stalled
            if not self.finished:
                raise self._ended_early()
        if not self.tokens and self.malformed_lines:
            # e.g. every `delta` a string: saved as a fine reply of 0 tokens before
            raise ServerError(
                f"The server's reply could not be read: {self.malformed_lines} of its chunks "
                "were not in a shape ATOM reads, and no token came.", url=self._base_url)

    def _ended_early(self) -> AtomError:
        """What a stream that closed before its route's last frame raises."""
        return StreamInterrupted(
            "The reply ended before the server finished it. What arrived so far is kept.",
            url=self._base_url,
        )

    def _on_sse(self, sse: ServerSentEvent, t_ns: int) -> Iterable[StreamEvent]:
        """The events one SSE frame carries; sets `finished` / `_done` at the route's end."""
        raise NotImplementedError

    def _non_stream_body(self, response: httpx.Response) -> Iterator[StreamEvent]:
        """A JSON answer where a stream was asked for."""
        raise NotImplementedError

    def _json_body(self, response: httpx.Response, what: str) -> Any:
        """The whole JSON answer, read; raises the mapped error for an error body (LM Studio's
        200 + error) and ServerError when it is not JSON at all."""
        response.read()
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            raise ServerError(
                f"The server answered with something that is not {what} "
                f"(HTTP {response.status_code}, {response.headers.get('content-type', '?')}).",
                url=self._base_url,
                detail=cap(response.text),
            ) from None
        if is_error_body(body):
            raise self._error_for(response)
        return body

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


S = TypeVar("S", bound=SSEStream)


class ChatStream(SSEStream):
    """A streamed reply from `POST /v1/chat/completions`: `data: {chunk}` lines, then
    `data: [DONE]`. Reasoning arrives as `delta.reasoning_content`, `delta.reasoning` or inline
    `<think>...</think>`; usage on the finish chunk or a separate one."""

    def __init__(
        self,
        http: httpx.Client,
        request: httpx.Request,
        *,
        base_url: str,
        model: str = "",
        error_for: ErrorMapper | None = None,
        limits: StreamLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(http, request, base_url=base_url, model=model, error_for=error_for,
                         limits=limits)
        self._splitter = ThinkSplitter()

    def _on_sse(self, sse: ServerSentEvent, t_ns: int) -> Iterable[StreamEvent]:
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

    def _non_stream_body(self, response: httpx.Response) -> Iterator[StreamEvent]:
        """A JSON answer where a stream was asked for: an error (LM Studio's 200 + error) or a
        server that ignored `stream: true` and sent the whole completion at once."""
        body = self._json_body(response, "a chat reply")
        t_ns = time.perf_counter_ns()
        choices = body.get("choices") if isinstance(body, dict) else None
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(first, dict) or not isinstance(message, dict):
            raise ServerError(
                "The server's reply had no message in it.",
                url=self._base_url,
                detail=cap(response.text),
            )
        delta = {k: message.get(k) for k in ("content", "reasoning_content", "reasoning")}
        finish = first.get("finish_reason") or "stop"
        chunk = {
            "choices": [{"delta": delta, "finish_reason": finish}],
            "usage": body.get("usage"),
        }
        for event in chunk_events(chunk, t_ns, ThinkSplitter()):
            if event.kind == "finish":
                self.finished = True
            yield event


@dataclass(slots=True)
class ReplyBuffer:
    """Everything one streamed reply said, kept as it arrives; replays into metrics at the end."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None  # the server's own figures (llama.cpp)
    token_times_ns: list[int] = field(default_factory=list)
    first_answer_ns: int | None = None
    reasoning_chunks: int = 0
    t_request_ns: int = 0
    t_end_ns: int = 0
    pool_wait_ns: int | None = None
    response_id: str | None = None  # stateful routes: the id the next turn continues from
    server_stats: dict[str, Any] | None = None  # the server's own figures (native `stats`)
    # model_load / prompt_processing progress (0-1) while the reply waits (native route)
    progress: dict[str, float] = field(default_factory=dict)

    def add(self, event: StreamEvent) -> None:
        if event.kind == "content":
            self.content += event.text
            self.token_times_ns.append(event.t_ns)
            if self.first_answer_ns is None:
                self.first_answer_ns = event.t_ns
        elif event.kind == "reasoning":
            self.reasoning += event.text
            self.token_times_ns.append(event.t_ns)
            self.reasoning_chunks += 1
        elif event.kind == "finish":
            self.finish_reason = event.finish_reason
        elif event.kind == "usage":
            self.usage = event.usage
        elif event.kind == "progress" and event.progress is not None:
            self.progress[event.text] = event.progress
        elif event.kind == "response":
            self.response_id = event.response_id or self.response_id
            self.server_stats = event.stats or self.server_stats
        elif event.kind == "timings":
            self.timings = event.timings

    def timed_by(self, stream: SSEStream) -> None:
        """Takes the request's clock from the stream that carried it."""
        self.t_request_ns, self.t_end_ns = stream.t_request_ns, stream.t_end_ns
        self.pool_wait_ns = stream.pool_wait_ns

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
            first_answer_ns=self.first_answer_ns,
            reasoning_chunks=self.reasoning_chunks,
            pool_wait_ns=self.pool_wait_ns,
            server_timings=self.timings,
        )
