"""One request on LM Studio's native `POST /api/v1/chat`, measured by ATOM *and* by the server.

LM Studio 0.4's native route ends its stream with `chat.end`, whose result carries the server's
own figures (`stats.tokens_per_second`, `time_to_first_token_seconds`,
`model_load_time_seconds`, token counts). ATOM times the same stream from the client side
(atom_core.metrics), so a user can see both and the difference: ATOM's clock starts when the
request leaves ATOM and so includes the network, any queueing and any model load.

The request sets `store: false`, so the server keeps no stateful chat for it. Servers other
than LM Studio 0.4 answer NotSupported.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ..metrics import GenerationMetrics
from ..runs import RunRecord
from ..types import to_float, to_int
from .routes import NativeChatStream
from .streaming import ReplyBuffer

if TYPE_CHECKING:
    from .client import LMStudioClient

SERVER_CHECK_SOURCE = "server-check"
NATIVE_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=30.0, pool=10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStats:
    """What LM Studio reported about a generation (`stats` of the native chat result)."""

    tokens_per_second: float | None = None
    time_to_first_token_s: float | None = None
    model_load_time_s: float | None = None  # only when this request loaded the model
    input_tokens: int | None = None
    output_tokens: int | None = None  # total, reasoning included
    reasoning_output_tokens: int | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ServerStats | None:
        if not isinstance(d, dict) or not d:
            return None
        return cls(
            tokens_per_second=to_float(d.get("tokens_per_second")),
            time_to_first_token_s=to_float(d.get("time_to_first_token_seconds")),
            model_load_time_s=to_float(d.get("model_load_time_seconds")),
            input_tokens=to_int(d.get("input_tokens")),
            output_tokens=to_int(d.get("total_output_tokens")),
            reasoning_output_tokens=to_int(d.get("reasoning_output_tokens")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeChatResult:
    model: str
    server: str  # base URL
    instance_id: str
    content: str
    reasoning: str
    metrics: GenerationMetrics  # ATOM's own measurement of this stream
    server_stats: ServerStats | None  # None when the server sent no stats

    def as_run(self) -> RunRecord:
        """The run the runs table keeps, with the server's figures beside ATOM's."""
        s = self.server_stats or ServerStats()
        return RunRecord.measured(source=SERVER_CHECK_SOURCE, server=self.server,
                                  model=self.model, metrics=self.metrics,
                                  server_tps=s.tokens_per_second,
                                  server_ttft_s=s.time_to_first_token_s,
                                  server_load_s=s.model_load_time_s)

    def run_row(self) -> dict[str, Any]:
        """That run as its stored row."""
        return self.as_run().to_record()


def native_chat(
    client: LMStudioClient,
    model: str,
    prompt: str,
    *,
    system_prompt: str | None = None,
    max_output_tokens: int | None = None,
    temperature: float | None = None,
    cancel: threading.Event | None = None,
) -> NativeChatResult:
    """Streams one reply from `POST /api/v1/chat` and returns it with both measurements.

    Raises NotSupported (not LM Studio 0.4), ModelNotFound, AuthError, BadRequest, ServerError
    (also for an `error` event mid-stream), StreamInterrupted, RequestTimeout, ServerUnreachable.
    """
    body: dict[str, Any] = {"model": model, "input": prompt, "stream": True, "store": False}
    if system_prompt and system_prompt.strip():
        body["system_prompt"] = system_prompt
    if max_output_tokens:
        body["max_output_tokens"] = int(max_output_tokens)
    if temperature is not None:
        body["temperature"] = float(temperature)
    request = client.build_request("POST", "/api/v1/chat", json=body, timeout=NATIVE_TIMEOUT)
    reply = ReplyBuffer()
    with client.open_stream(NativeChatStream, request, model=model) as stream:
        try:
            for event in stream:
                reply.add(event)
                if cancel is not None and cancel.is_set():
                    break
        finally:
            stream.close()
            reply.timed_by(stream)  # also first answer, pool wait
    result = stream.result or {}
    return NativeChatResult(
        model=model, server=client.base_url,
        instance_id=stream.instance_id or model,
        content=reply.content, reasoning=reply.reasoning, metrics=reply.metrics(),
        server_stats=ServerStats.from_dict(result.get("stats")),
    )


COMPARISON_COLUMNS: dict[str, tuple[str, str]] = {
    "measure": ("Measure", "text"),
    "atom": ("ATOM measured", "seconds"),
    "server": ("Server reported", "seconds"),
    "difference": ("Difference (ATOM − server)", "seconds"),
    "why": ("Why they differ", "text"),
}


def comparison_rows(result: NativeChatResult) -> list[dict[str, Any]]:
    """ATOM's measurement beside the server's, one row per measure, with the difference
    (ATOM minus server) and why they differ."""
    m = result.metrics
    s = result.server_stats or ServerStats()
    load = s.model_load_time_s
    rows = [
        _row("Time to first token (s)", m.ttft_s, s.time_to_first_token_s,
             "ATOM's clock starts when the request leaves ATOM: it adds the network and any "
             "queueing" + (f", and this request's model load ({load:.2f} s)" if load else "")
             + "."),
        _row("Decode speed (tok/s)", m.decode_tps, s.tokens_per_second,
             "Both leave out the first token's wait; ATOM times token arrivals, so network "
             "batching shows up here."),
        _row("Output tokens", m.chunks, s.output_tokens,
             "ATOM counts streamed pieces; the server counts tokens (a piece may hold several)."),
        _row("Prompt tokens", None, s.input_tokens, "Only the server can count these."),
        _row("Model load (s)", None, load,
             "Reported only when this request made the server load the model."),
        _row("End-to-end (s)", m.e2e_s, None, "Request sent to stream closed, as ATOM saw it."),
    ]
    return rows


def _row(measure: str, atom: float | int | None, server: float | int | None,
         why: str) -> dict[str, Any]:
    diff = atom - server if atom is not None and server is not None else None
    return {"measure": measure, "atom": atom, "server": server, "difference": diff, "why": why}


