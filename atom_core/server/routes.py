"""The chat routes: ROUTE_TABLE, one row per route (path, label, stateful or not, body
builder, stream class, extra headers), which LMStudioClient.stream_route reads; and the
streams beside /v1/chat/completions, each with ChatStream's shape (iterate / `with` /
`abort()`, closes in `finally`), all yielding the same StreamEvents, with the body each
route takes. A new route is its stream class, its body builder and one row of the table.

    completions        POST /v1/chat/completions (ChatStream, streaming.py): the default
    native             LM Studio's POST /api/v1/chat: named events, chat.end last (even after
                       an error), the server's own `stats`, a `response_id` to continue from
    responses          POST /v1/responses (OpenAI Responses): response.* events, usage on
                       response.completed, `previous_response_id` for stateful turns
    messages           POST /v1/messages (Anthropic Messages): content blocks, `system` as a
                       top-level field, auth by `x-api-key` as well as Bearer

Event shapes follow /work/shared/reference/lmstudio-api.md §8-9; where it says UNCONFIRMED,
each reader takes what it knows and skips the rest (unknown event names, missing fields).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from ..config import DEFAULT_LIMITS, StreamLimits
from ..errors import AtomError, ServerError
from ..types import ChatMessage, EventKind, SamplingOptions, StreamEvent, to_float, to_int
from .http_errors import cap, stream_error
from .streaming import ChatStream, ErrorMapper, SSEStream

REASONING_LEVELS = ("off", "on", "low", "medium", "high")
ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_DEFAULT_MAX_TOKENS = 4096  # Anthropic's route requires max_tokens
PROGRESS_STAGES = ("model_load", "prompt_processing")


def native_usage(stats: Any) -> dict[str, Any] | None:
    """The native route's `stats` as an OpenAI-style usage dict (for metrics' token counts)."""
    if not isinstance(stats, dict):
        return None
    output = to_int(stats.get("total_output_tokens"))
    if output is None:
        return None
    return {
        "completion_tokens": output,
        "prompt_tokens": to_int(stats.get("input_tokens")),
        "completion_tokens_details": {
            "reasoning_tokens": to_int(stats.get("reasoning_output_tokens"))
        },
    }


class NativeChatStream(SSEStream):
    """A streamed reply from LM Studio's native `POST /api/v1/chat`.

    Named SSE events: `chat.start`, `model_load.*` and `prompt_processing.*` (progress events),
    `reasoning.delta`, `message.delta`, `tool_call.*` (skipped), `error` (raised once `chat.end`
    has come, since the stream always ends with it), `chat.end` (its `result` carries `stats`
    and `response_id`: usage, finish and response events). No `[DONE]`."""

    def __init__(
        self, http: httpx.Client, request: httpx.Request, *, base_url: str, model: str = "",
        error_for: ErrorMapper | None = None, limits: StreamLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(http, request, base_url=base_url, model=model, error_for=error_for,
                         limits=limits)
        self.instance_id = ""  # from chat.start / the result
        self.result: dict[str, Any] | None = None  # chat.end's result
        self._error: AtomError | None = None

    def _on_sse(self, sse: ServerSentEvent, t_ns: int) -> Iterable[StreamEvent]:
        data = self._json_data(sse)
        if data is None:
            return []
        kind = sse.event if sse.event and sse.event != "message" else str(data.get("type", ""))
        stage, _, step = kind.partition(".")
        if kind in ("message.delta", "reasoning.delta"):
            text = data.get("content")
            if not isinstance(text, str) or not text:
                return []
            return [StreamEvent("content" if stage == "message" else "reasoning", t_ns, text=text)]
        if stage in PROGRESS_STAGES and step in ("start", "progress", "end"):
            value = {"start": 0.0, "end": 1.0}.get(step, to_float(data.get("progress")))
            return [StreamEvent("progress", t_ns, text=stage, progress=value)]
        if kind == "chat.start":
            self.instance_id = str(data.get("model_instance_id") or "")
        elif kind == "error":
            self._error = stream_error(data, url=self._base_url)
        elif kind == "chat.end":
            self._done = True
            if self._error is not None:
                raise self._error
            result = data.get("result")
            return self._end(result if isinstance(result, dict) else {}, t_ns)
        return []

    def _ended_early(self) -> AtomError:
        # An error event, then the stream closed without chat.end: the error says more.
        return self._error if self._error is not None else super()._ended_early()

    def _end(self, result: dict[str, Any], t_ns: int) -> list[StreamEvent]:
        self.result = result
        self.finished = True
        self.instance_id = str(result.get("model_instance_id") or self.instance_id)
        stats = result.get("stats") if isinstance(result.get("stats"), dict) else None
        events = [StreamEvent("finish", t_ns, finish_reason="stop")]
        usage = native_usage(stats)
        if usage is not None:
            events.append(StreamEvent("usage", t_ns, usage=usage))
        rid = result.get("response_id")
        events.append(StreamEvent("response", t_ns, response_id=rid if isinstance(rid, str)
                                  else None, stats=stats))
        return events

    def _non_stream_body(self, response: httpx.Response) -> Iterator[StreamEvent]:
        """A server that ignored `stream: true` (or an error body): one timestamp for all."""
        body = self._json_body(response, "a chat result")
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise ServerError("The server's answer to /api/v1/chat was not a chat result.",
                              url=self._base_url, detail=cap(response.text))
        t_ns = time.perf_counter_ns()
        for item in body["output"]:
            if isinstance(item, dict) and item.get("type") in ("message", "reasoning"):
                text = item.get("content")
                if isinstance(text, str) and text:
                    self.tokens += 1
                    yield StreamEvent("content" if item["type"] == "message" else "reasoning",
                                      t_ns, text=text)
        yield from self._end(body, t_ns)


def _last_user_text(messages: Sequence[ChatMessage]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            return m.content
    return ""


def _transcript(messages: Sequence[ChatMessage]) -> str:
    """The native route takes no assistant messages: a full history goes as one transcript."""
    turns = [m for m in messages if m.role != "system"]
    if len(turns) == 1:
        return turns[0].content
    names = {"user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m.role]}: {m.content}" for m in turns)


def _native_input(messages: Sequence[ChatMessage], stateful: bool) -> str | list[dict[str, Any]]:
    """The native route's `input`: plain text, or with images, a text item and one
    `{"type": "image", "data_url": ...}` item per image (the images of the user messages sent:
    the last one when continuing a stored conversation, otherwise all of them)."""
    text = _last_user_text(messages) if stateful else _transcript(messages)
    users = [m for m in messages if m.role == "user"]
    sent = users[-1:] if stateful else users
    images = [url for m in sent for url in m.images]
    if not images:
        return text
    return [{"type": "text", "content": text}] + [
        {"type": "image", "data_url": url} for url in images]


def _responses_content(m: ChatMessage) -> str | list[dict[str, Any]]:
    """A Responses-API message's content: text, or with images `input_text` + `input_image`."""
    if not m.images:
        return m.content
    return [{"type": "input_text", "text": m.content}] + [
        {"type": "input_image", "image_url": url} for url in m.images]


def _messages_content(m: ChatMessage) -> str | list[dict[str, Any]]:
    """An Anthropic message's content: text, or with images a text block and one base64
    `image` block per data URL (a URL that is not a base64 data URL is left out)."""
    if not m.images:
        return m.content
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}]
    for url in m.images:
        head, sep, data = url.partition(";base64,")
        if sep and head.startswith("data:"):
            blocks.append({"type": "image", "source": {
                "type": "base64", "media_type": head[len("data:"):], "data": data}})
    return blocks


def _system(messages: Sequence[ChatMessage], system_prompt: str | None) -> str | None:
    parts = [system_prompt or ""] + [m.content for m in messages if m.role == "system"]
    text = "\n\n".join(p for p in parts if p.strip())
    return text or None


def completions_body(
    model: str,
    messages: Sequence[ChatMessage],
    *,
    options: SamplingOptions | None = None,
    system_prompt: str | None = None,
    ttl: int | None = None,
    **_unused: object,
) -> dict[str, Any]:
    """`POST /v1/chat/completions`: the whole history every turn, usage asked for; `ttl` (LM
    Studio's just-in-time unload, seconds) when given."""
    wire = [m.to_request() for m in messages]
    if system_prompt and system_prompt.strip():
        wire = [{"role": "system", "content": system_prompt}, *wire]
    body: dict[str, Any] = {
        "model": model,
        "messages": wire,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    body.update((options or SamplingOptions()).to_request())
    if ttl:
        body["ttl"] = int(ttl)
    return body


def native_body(
    model: str,
    messages: Sequence[ChatMessage],
    *,
    options: SamplingOptions | None = None,
    system_prompt: str | None = None,
    previous_response_id: str | None = None,
    reasoning: str | None = None,
    store: bool = True,
    **_unused: object,
) -> dict[str, Any]:
    """`POST /api/v1/chat`: with `previous_response_id`, only the new message goes; without
    it, the whole history as one transcript (the route takes no assistant messages)."""
    o = options or SamplingOptions()
    body: dict[str, Any] = {
        "model": model,
        "input": _native_input(messages, bool(previous_response_id)),
        "stream": True,
        "store": store,
    }
    if system := _system(messages, system_prompt):
        body["system_prompt"] = system
    if previous_response_id:
        body["previous_response_id"] = previous_response_id
    if reasoning:
        body["reasoning"] = reasoning
    for key, value in (("temperature", o.temperature), ("top_p", o.top_p), ("top_k", o.top_k),
                       ("repeat_penalty", o.repeat_penalty), ("max_output_tokens", o.max_tokens)):
        if value is not None:
            body[key] = value
    return body


def responses_body(
    model: str,
    messages: Sequence[ChatMessage],
    *,
    options: SamplingOptions | None = None,
    system_prompt: str | None = None,
    previous_response_id: str | None = None,
    reasoning: str | None = None,
    **_unused: object,
) -> dict[str, Any]:
    """`POST /v1/responses`: `instructions` for the system prompt; with `previous_response_id`
    only the new message goes."""
    o = options or SamplingOptions()
    turns = [m for m in messages if m.role != "system"]
    if previous_response_id:
        turns = [m for m in messages if m.role == "user"][-1:] or [ChatMessage("user", "")]
    body: dict[str, Any] = {
        "model": model,
        "input": [{"role": m.role, "content": _responses_content(m)} for m in turns],
        "stream": True,
    }
    if system := _system(messages, system_prompt):
        body["instructions"] = system
    if previous_response_id:
        body["previous_response_id"] = previous_response_id
    if reasoning:
        body["reasoning"] = {"effort": {"off": "none", "on": "medium"}.get(reasoning, reasoning)}
    for key, value in (("temperature", o.temperature), ("top_p", o.top_p),
                       ("max_output_tokens", o.max_tokens)):
        if value is not None:
            body[key] = value
    return body


def messages_body(
    model: str,
    messages: Sequence[ChatMessage],
    *,
    options: SamplingOptions | None = None,
    system_prompt: str | None = None,
    **_unused: object,
) -> dict[str, Any]:
    """`POST /v1/messages`: `system` is a top-level field, `max_tokens` is required."""
    o = options or SamplingOptions()
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": o.max_tokens or MESSAGES_DEFAULT_MAX_TOKENS,
        "messages": [{"role": m.role, "content": _messages_content(m)} for m in messages
                     if m.role != "system"],
        "stream": True,
    }
    if system := _system(messages, system_prompt):
        body["system"] = system
    for key, value in (("temperature", o.temperature), ("top_p", o.top_p), ("top_k", o.top_k)):
        if value is not None:
            body[key] = value
    if o.stop:
        body["stop_sequences"] = list(o.stop)
    return body


def _openai_usage(input_tokens: Any, output_tokens: Any, reasoning_tokens: Any = None,
                  cached_tokens: Any = None) -> dict[str, Any] | None:
    """Responses / Anthropic usage in the OpenAI shape metrics reads."""
    out = to_int(output_tokens)
    if out is None and to_int(input_tokens) is None:
        return None
    usage: dict[str, Any] = {"completion_tokens": out, "prompt_tokens": to_int(input_tokens)}
    if to_int(reasoning_tokens) is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": to_int(reasoning_tokens)}
    if to_int(cached_tokens) is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": to_int(cached_tokens)}
    return usage


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class ResponsesStream(SSEStream):
    """A streamed reply from `POST /v1/responses` (OpenAI Responses).

    Reads `response.created` (the id), `response.output_text.delta`, reasoning deltas
    (`response.reasoning_text.delta`, `response.reasoning.delta`,
    `response.reasoning_summary_text.delta`), `response.completed` / `response.incomplete`
    (usage, end), `response.failed` and `error` (raised). Other events are skipped."""

    REASONING_EVENTS = ("response.reasoning_text.delta", "response.reasoning.delta",
                        "response.reasoning_summary_text.delta")

    def __init__(
        self, http: httpx.Client, request: httpx.Request, *, base_url: str, model: str = "",
        error_for: ErrorMapper | None = None, limits: StreamLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(http, request, base_url=base_url, model=model, error_for=error_for,
                         limits=limits)
        self.response_id: str | None = None

    def _on_sse(self, sse: ServerSentEvent, t_ns: int) -> Iterable[StreamEvent]:
        if sse.data.strip() == "[DONE]":
            self._done = True
            return []
        data = self._json_data(sse)
        if data is None:
            return []
        kind = str(data.get("type") or sse.event or "")
        if kind == "response.output_text.delta" or kind in self.REASONING_EVENTS:
            text = data.get("delta")
            if not isinstance(text, str) or not text:
                return []
            return [StreamEvent("content" if kind == "response.output_text.delta"
                                else "reasoning", t_ns, text=text)]
        if kind in ("error", "response.failed") or (kind == "" and data.get("error")):
            raise stream_error(data.get("response", data) if kind == "response.failed"
                               else data, url=self._base_url)
        response = _dict(data.get("response"))
        if isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if kind in ("response.completed", "response.incomplete"):
            self._done = self.finished = True
            return self._end(response, kind, t_ns)
        return []

    def _end(self, response: dict[str, Any], kind: str, t_ns: int) -> list[StreamEvent]:
        usage = _dict(response.get("usage"))
        reason = _dict(response.get("incomplete_details")).get("reason")
        finish = "stop" if kind == "response.completed" else (
            "length" if reason in (None, "max_output_tokens") else str(reason))
        events = [StreamEvent("finish", t_ns, finish_reason=finish)]
        openai = _openai_usage(usage.get("input_tokens"), usage.get("output_tokens"),
                               _dict(usage.get("output_tokens_details")).get("reasoning_tokens"),
                               _dict(usage.get("input_tokens_details")).get("cached_tokens"))
        if openai is not None:
            events.append(StreamEvent("usage", t_ns, usage=openai))
        events.append(StreamEvent("response", t_ns, response_id=self.response_id))
        return events

    def _non_stream_body(self, response: httpx.Response) -> Iterator[StreamEvent]:
        body = self._json_body(response, "a Responses reply")
        if not isinstance(body, dict) or not isinstance(body.get("output"), list):
            raise ServerError("The server's answer to /v1/responses was not a response.",
                              url=self._base_url, detail=cap(response.text))
        t_ns = time.perf_counter_ns()
        self.response_id = body.get("id") if isinstance(body.get("id"), str) else None
        for item in body["output"]:
            item = _dict(item)
            kind: EventKind = "content" if item.get("type") == "message" else "reasoning"
            for part in item.get("content") or []:
                text = _dict(part).get("text")
                if item.get("type") in ("message", "reasoning") and isinstance(text, str) and text:
                    self.tokens += 1
                    yield StreamEvent(kind, t_ns, text=text)
        self.finished = True
        yield from self._end(body, "response.completed", t_ns)


ANTHROPIC_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                          "tool_use": "tool_calls"}


class MessagesStream(SSEStream):
    """A streamed reply from `POST /v1/messages` (Anthropic Messages).

    Reads `message_start` (input tokens), `content_block_delta` (`text_delta` -> content,
    `thinking_delta` -> reasoning), `message_delta` (stop reason, output tokens),
    `message_stop` (the end), `error` (raised); `ping` and other events are skipped."""

    def __init__(
        self, http: httpx.Client, request: httpx.Request, *, base_url: str, model: str = "",
        error_for: ErrorMapper | None = None, limits: StreamLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(http, request, base_url=base_url, model=model, error_for=error_for,
                         limits=limits)
        self.message_id: str | None = None
        self._input_tokens: Any = None
        self._stop_reason: str | None = None

    def _on_sse(self, sse: ServerSentEvent, t_ns: int) -> Iterable[StreamEvent]:
        data = self._json_data(sse)
        if data is None:
            return []
        kind = str(data.get("type") or sse.event or "")
        if kind == "content_block_delta":
            delta = _dict(data.get("delta"))
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return [StreamEvent("content", t_ns, text=delta["text"])] if delta["text"] else []
            if delta.get("type") == "thinking_delta" and isinstance(delta.get("thinking"), str):
                text = delta["thinking"]
                return [StreamEvent("reasoning", t_ns, text=text)] if text else []
            return []
        if kind == "error" or (kind == "" and data.get("error")):
            raise stream_error(data, url=self._base_url)
        if kind == "message_start":
            message = _dict(data.get("message"))
            self.message_id = message.get("id") if isinstance(message.get("id"), str) else None
            self._input_tokens = _dict(message.get("usage")).get("input_tokens")
        elif kind == "message_delta":
            reason = _dict(data.get("delta")).get("stop_reason")
            self._stop_reason = str(reason) if reason else self._stop_reason
            usage = _openai_usage(self._input_tokens, _dict(data.get("usage")).get("output_tokens"))
            events = [StreamEvent("usage", t_ns, usage=usage)] if usage else []
            if self._stop_reason:
                events.append(StreamEvent("finish", t_ns, finish_reason=ANTHROPIC_STOP_REASONS.get(
                    self._stop_reason, self._stop_reason)))
            return events
        elif kind == "message_stop":
            self._done = self.finished = True
        return []

    def _non_stream_body(self, response: httpx.Response) -> Iterator[StreamEvent]:
        body = self._json_body(response, "a Messages reply")
        if not isinstance(body, dict) or not isinstance(body.get("content"), list):
            raise ServerError("The server's answer to /v1/messages was not a message.",
                              url=self._base_url, detail=cap(response.text))
        t_ns = time.perf_counter_ns()
        for block in body["content"]:
            block = _dict(block)
            is_text = block.get("type") == "text"
            text = block.get("text" if is_text else "thinking")
            if isinstance(text, str) and text:
                self.tokens += 1
                yield StreamEvent("content" if is_text else "reasoning", t_ns, text=text)
        usage = _dict(body.get("usage"))
        openai = _openai_usage(usage.get("input_tokens"), usage.get("output_tokens"))
        reason = str(body.get("stop_reason") or "end_turn")
        self.finished = True
        yield StreamEvent("finish", t_ns, finish_reason=ANTHROPIC_STOP_REASONS.get(reason, reason))
        if openai is not None:
            yield StreamEvent("usage", t_ns, usage=openai)


def server_stat_fields(stats: Any) -> dict[str, Any]:
    """The server's own figures (native `stats`) as RunRecord's server_* fields."""
    s = _dict(stats)
    return {
        "server_tps": to_float(s.get("tokens_per_second")),
        "server_ttft_s": to_float(s.get("time_to_first_token_seconds")),
        "server_load_s": to_float(s.get("model_load_time_seconds")),
    }


# -- the table ------------------------------------------------------------------------------------

# A route's body: (model, messages, *, options, system_prompt, previous_response_id, reasoning,
# ttl) -> the JSON body; each takes the keywords it knows and leaves the rest.
BodyBuilder = Callable[..., dict[str, Any]]


def no_headers(token: str | None) -> dict[str, str]:
    return {}


def anthropic_headers(token: str | None) -> dict[str, str]:
    """Anthropic clients authenticate with x-api-key (Bearer is sent too) and name a version."""
    return {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": token} if token else {})}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRoute:
    """One chat route: where it is, what people call it, whether the server keeps the
    conversation (the next turn sends `previous_response_id`), how its body is built, which
    stream reads its reply, and the headers it adds (given the client's token)."""

    path: str
    label: str
    stateful: bool
    body: BodyBuilder
    stream: type[SSEStream]
    headers: Callable[[str | None], dict[str, str]] = no_headers


ROUTE_TABLE: dict[str, ChatRoute] = {
    "completions": ChatRoute(path="/v1/chat/completions", label="Chat completions (OpenAI)",
                             stateful=False, body=completions_body, stream=ChatStream),
    "native": ChatRoute(path="/api/v1/chat", label="LM Studio native",
                        stateful=True, body=native_body, stream=NativeChatStream),
    "responses": ChatRoute(path="/v1/responses", label="Responses (OpenAI)",
                           stateful=True, body=responses_body, stream=ResponsesStream),
    "messages": ChatRoute(path="/v1/messages", label="Messages (Anthropic)",
                          stateful=False, body=messages_body, stream=MessagesStream,
                          headers=anthropic_headers),
}
# What pages, the CLI and the stores read, drawn from the table.
ROUTES: tuple[str, ...] = tuple(ROUTE_TABLE)
ROUTE_PATHS: dict[str, str] = {name: r.path for name, r in ROUTE_TABLE.items()}
ROUTE_LABELS: dict[str, str] = {name: r.label for name, r in ROUTE_TABLE.items()}
STATEFUL_ROUTES = frozenset(name for name, r in ROUTE_TABLE.items() if r.stateful)
