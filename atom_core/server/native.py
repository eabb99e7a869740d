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

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import EventSource, SSEError

from ..errors import AtomError, RequestTimeout, ServerError, ServerUnreachable, StreamInterrupted
from ..metrics import GenerationMetrics, compute_metrics
from ..runs import run_record
from ..types import to_float, to_int
from .streaming import error_message

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

    def run_row(self) -> dict[str, Any]:
        """The runs-table row, with the server's figures beside ATOM's."""
        s = self.server_stats or ServerStats()
        return run_record(source=SERVER_CHECK_SOURCE, server=self.server, model=self.model,
                          metrics=self.metrics, server_tps=s.tokens_per_second,
                          server_ttft_s=s.time_to_first_token_s,
                          server_load_s=s.model_load_time_s)


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
    http: httpx.Client = client._http  # the client's pool, headers and token
    request = http.build_request("POST", "/api/v1/chat", json=body, timeout=NATIVE_TIMEOUT)
    state = _Collected()
    t_request = time.perf_counter_ns()
    try:
        response = http.send(request, stream=True)
    except httpx.TimeoutException as e:
        raise RequestTimeout(f"The server at {client.base_url} did not answer in time.",
                             url=client.base_url, detail=str(e)) from e
    except httpx.TransportError as e:
        raise ServerUnreachable.at(client.base_url, str(e)) from e
    try:
        _read(client, response, model, state, cancel)
    except (httpx.TransportError, SSEError) as e:
        raise StreamInterrupted("The server stopped the reply part-way (the connection broke).",
                                url=client.base_url, detail=str(e)) from e
    finally:
        t_end = time.perf_counter_ns()
        response.close()
    stats = ServerStats.from_dict((state.result or {}).get("stats"))
    usage = None
    if stats is not None and stats.output_tokens is not None:
        usage = {"completion_tokens": stats.output_tokens, "prompt_tokens": stats.input_tokens,
                 "completion_tokens_details": {"reasoning_tokens": stats.reasoning_output_tokens}}
    metrics = compute_metrics(t_request_ns=t_request, token_times_ns=state.token_times,
                              t_end_ns=t_end, usage=usage, first_answer_ns=state.first_answer,
                              reasoning_chunks=state.reasoning_chunks)
    return NativeChatResult(
        model=model, server=client.base_url,
        instance_id=str((state.result or {}).get("model_instance_id") or state.instance_id
                        or model),
        content=state.content, reasoning=state.reasoning, metrics=metrics, server_stats=stats,
    )


@dataclass(slots=True)
class _Collected:
    content: str = ""
    reasoning: str = ""
    instance_id: str = ""
    result: dict[str, Any] | None = None
    token_times: list[int] = field(default_factory=list)
    first_answer: int | None = None  # arrival of the first message (answer) delta
    reasoning_chunks: int = 0


def _read(client: LMStudioClient, response: httpx.Response, model: str, state: _Collected,
          cancel: threading.Event | None) -> None:
    if response.status_code >= 400:
        response.read()
        raise client._error_for(response, model=model)
    if "text/event-stream" not in response.headers.get("content-type", ""):
        response.read()
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("error"):
            raise client._error_for(response, model=model)  # e.g. "Unexpected endpoint"
        if not isinstance(data, dict) or "output" not in data:
            raise ServerError("The server's answer to /api/v1/chat was not a chat result.",
                              url=client.base_url, detail=response.text[:500])
        # A server that ignored `stream: true`: one timestamp for everything.
        state.result = data
        t = time.perf_counter_ns()
        for item in data.get("output") or []:
            if isinstance(item, dict) and item.get("type") in ("message", "reasoning"):
                setattr(state, "content" if item["type"] == "message" else "reasoning",
                        str(item.get("content") or ""))
                state.token_times.append(t)
        return
    error: AtomError | None = None
    for sse in EventSource(response).iter_sse():
        t = time.perf_counter_ns()
        try:
            data = json.loads(sse.data) if sse.data.strip() else {}
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        kind = sse.event if sse.event and sse.event != "message" else str(data.get("type", ""))
        if kind == "message.delta":
            state.content += str(data.get("content") or "")
            state.token_times.append(t)
            if state.first_answer is None:
                state.first_answer = t
        elif kind == "reasoning.delta":
            state.reasoning += str(data.get("content") or "")
            state.token_times.append(t)
            state.reasoning_chunks += 1
        elif kind == "chat.start":
            state.instance_id = str(data.get("model_instance_id") or "")
        elif kind == "error":
            error = ServerError(f"The server reported an error mid-reply: {error_message(data)}",
                                url=client.base_url, detail=json.dumps(data)[:500])
        elif kind == "chat.end":
            result = data.get("result")
            state.result = result if isinstance(result, dict) else {}
            break
        if cancel is not None and cancel.is_set():
            return
    if error is not None:
        raise error
    if state.result is None:
        raise StreamInterrupted("The reply ended before the server finished it.",
                                url=client.base_url)


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


