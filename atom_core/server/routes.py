"""The chat routes beside /v1/chat/completions, each a stream with ChatStream's shape
(iterate / `with` / `abort()`, closes in `finally`), all yielding the same StreamEvents.

    NativeChatStream   LM Studio's native POST /api/v1/chat: named events, chat.end last
                       (even after an error), the server's own `stats` and a `response_id`

Event shapes follow /work/shared/reference/lmstudio-api.md §8; where it says UNCONFIRMED, the
reader takes what it knows and skips the rest (unknown event names, missing fields).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from ..errors import AtomError, ServerError
from ..types import StreamEvent, to_float, to_int
from .http_errors import cap, stream_error
from .streaming import SSEStream

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
    ) -> None:
        super().__init__(http, request, base_url=base_url, model=model)
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
