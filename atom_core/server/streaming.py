"""Server-Sent Events -> typed, timestamped StreamEvents, over a synchronous httpx.Client.

SSEStream is the shape every chat route's stream has: an iterator and a context manager with
`abort()`. Leaving it early (break, an exception, Stop, garbage collection) closes the HTTP
response, which is what makes the server stop generating. ChatStream reads
/v1/chat/completions; the other routes' streams are in routes.py, the load engine's asyncio
twin of ChatStream in async_stream.py. What they all share (the SSE decoder, the request's
clock, the stall rules, completions frames) is in sse.py.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import ServerSentEvent, SSEError

from ..config import DEFAULT_LIMITS, StreamLimits
from ..errors import AtomError, ServerError, StreamInterrupted, StreamStalled
from ..metrics import GenerationMetrics, compute_metrics
from ..types import StreamEvent
from .http_errors import cap, error_for_response, from_transport, is_error_body
from .sse import CompletionFrames, SSEDecoder, StallWatch, StreamClock, StreamState, ThinkSplitter

# While any request is in flight the machine is sampled: atom_core.measure.hardware sets this
# hook as it is imported (a server stream knows nothing of the measuring room above it, as
# runs.set_hardware_probe). Without it a request is just a request.
InFlight = Callable[[], AbstractContextManager[None]]
_in_flight: InFlight = contextlib.nullcontext


def set_in_flight(hook: InFlight | None) -> None:
    """What every stream enters while its request is in flight (None: nothing)."""
    global _in_flight
    _in_flight = hook or contextlib.nullcontext


def in_flight() -> AbstractContextManager[None]:
    """`with in_flight():` around a request (sync or async stream alike)."""
    return _in_flight()


def stream_timeout(limits: StreamLimits) -> httpx.Timeout:
    """httpx timeouts for a streamed reply: a read may wait as long as a first token may (a
    long prompt, a model loading); the stall rules in StallWatch end it sooner once tokens
    have begun."""
    read = max(limits.first_token_timeout_s, limits.stall_timeout_s)
    return httpx.Timeout(connect=5.0, read=read, write=30.0, pool=limits.pool_timeout_s)


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
    on_retry: Callable[[], object] | None = None,
) -> httpx.Response:
    """Sends `request`; if a pooled connection turns out to be closed before any answer, sends
    it once more (on a new connection). Other errors, and a second failure, are raised."""
    try:
        return http.send(request, stream=stream)
    except STALE_CONNECTION_ERRORS:
        if on_retry is not None:
            on_retry()
        return http.send(request, stream=stream)


class SSEStream(StreamState):
    """A streamed reply over one chat route. Iterate for StreamEvents; `with` it (or exhaust
    it) to close. Each route (ChatStream here, the others in routes.py) says how its frames
    read (`_on_sse`) and what a whole JSON answer means (`_non_stream_body`); sending, closing,
    `abort()` and the mapping of failures to AtomErrors (http_errors) are shared, and so are
    the stall rules (StallWatch: a token resets the clock, keep-alives do not) and the clock
    (StreamClock: TTFT from the request going out, the wait for a connection apart).

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
        super().__init__(base_url)
        self._http = http
        self._request = request
        # httpcore calls this back at each step of the request; StreamClock picks the moment
        # its body goes out: TTFT starts there, and anything before it is pool wait.
        request.extensions = {**request.extensions, "trace": self.on_trace}
        self._limits = limits
        self._watch: StallWatch | None = None
        self._stalled: StreamStalled | None = None
        self._error_for: ErrorMapper = error_for or (
            lambda r: error_for_response(r, url=base_url, model=model)
        )
        self._response: httpx.Response | None = None
        self._iterator: Iterator[StreamEvent] | None = None

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

    def close(self) -> None:
        """Ends the request: the server sees the connection close and stops generating."""
        if self._iterator is not None:
            self._iterator.close()  # type: ignore[attr-defined]
        if self._response is not None:
            self._response.close()
        self.end()

    def _events(self) -> Iterator[StreamEvent]:
        with in_flight():  # the machine is sampled while any request is in flight
            yield from self._send_and_read()

    def _send_and_read(self) -> Iterator[StreamEvent]:
        self._watch = watch = StallWatch(self._limits, self.start())
        try:
            response = send_retrying_stale(
                self._http, self._request, stream=True, on_retry=self.start
            )
        except httpx.TransportError as e:
            self.end()
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
            self.end()
            response.close()

    def _read(self, response: httpx.Response) -> Iterator[StreamEvent]:
        if response.status_code >= 400:
            response.read()
            raise self._error_for(response)
        ctype = response.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            yield from self._non_stream_body(response)
            return
        decoder = SSEDecoder()
        watch = self._watch
        assert watch is not None
        for raw in response.iter_bytes():
            stalled = self._stalled or watch.stalled(time.perf_counter_ns(), self._base_url)
            if stalled is not None:  # a read of keep-alives is a look at the clock too
                raise stalled
            for sse in decoder.feed(raw):
                t_ns = time.perf_counter_ns()
                watch.answering(t_ns)  # an event (not a keep-alive comment): the server works
                for event in self._on_sse(sse, t_ns):
                    if event.kind in ("content", "reasoning"):
                        self.tokens += 1
                        watch.token(t_ns)
                    yield event
                if self._done:
                    break
            if self._done:
                break
        else:
            if self._stalled is not None:
                raise self._stalled
            if not self.finished:
                raise self._ended_early()
        if (unreadable := self._unreadable()) is not None:
            raise unreadable

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


S = TypeVar("S", bound=SSEStream)


class ChatStream(CompletionFrames, SSEStream):
    """A streamed reply from `POST /v1/chat/completions` (the frames: sse.CompletionFrames)."""

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
        return self._completion_events(sse, t_ns)

    def _non_stream_body(self, response: httpx.Response) -> Iterator[StreamEvent]:
        """A JSON answer where a stream was asked for: an error (LM Studio's 200 + error) or a
        server that ignored `stream: true` and sent the whole completion at once."""
        body = self._json_body(response, "a chat reply")
        yield from self._whole_completion(body, time.perf_counter_ns(), response.text)


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

    def timed_by(self, stream: StreamClock) -> None:
        """Takes the request's clock from the stream that carried it (sync or async)."""
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
