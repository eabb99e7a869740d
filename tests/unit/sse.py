"""Builders for OpenAI-style SSE bodies, used by the respx tests."""

from __future__ import annotations

import json
from typing import Any


def chunk(
    content: str | None = None,
    *,
    reasoning: str | None = None,
    reasoning_key: str = "reasoning_content",
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
    role: bool = False,
    choices: bool = True,
) -> str:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta[reasoning_key] = reasoning
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices
        else [],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def sse_body(*tokens: str, usage: str = "separate", finish: str = "stop") -> bytes:
    """A complete stream: role chunk, one chunk per token, finish, usage, [DONE]."""
    n = len(tokens)
    u = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
    parts = [chunk("", role=True)]
    parts += [chunk(t) for t in tokens]
    if usage == "on_finish":
        parts.append(chunk(finish=finish, usage=u))
    else:
        parts.append(chunk(finish=finish))
        if usage == "separate":
            parts.append(chunk(choices=False, usage=u))
    parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


SSE_HEADERS = {"content-type": "text/event-stream"}
