"""One process of ATOM's demo engine: llama-cpp-python's OpenAI-compatible server, unchanged but
for a default reply length.

This module runs inside the engine's own virtualenv (`.venv-demo`, see `atom_core.launch.demo`),
which has llama_cpp and uvicorn but not ATOM's requirements: it imports nothing from ATOM.
Started as `python -m atom_core.launch.demo_server --model FILE --alias NAME --port P` from the
repository root.

It also registers the few-shot prompt format the bundled base model answers best with (see
FEW_SHOT_FORMAT).

Why a wrapper at all: the bundled model is a small base model that never ends its turn, so a
request without `max_tokens` (ATOM's chat sends none unless the user sets one) would ramble until
the context is full: 2,000 tokens, 40 s, and the next turn would not fit. A request that names
no `max_tokens` gets `--default-max-tokens` instead; every other byte goes to llama.cpp's server
as the client sent it, and every reply comes back as llama.cpp wrote it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")

# How the bundled model is prompted. Gemma 3 270M is a base model: given Gemma's chat template it
# rarely ends its turn, echoes the prompt and drifts into other languages. Shown a few short
# question/answer pairs, it continues the pattern: a short answer, then the next "Question:",
# where a stop sequence ends the reply. (bench/bench_demo_prompting.py measured both.)
FEW_SHOT_FORMAT = "atom-fewshot"
FEW_SHOT_PREAMBLE = (
    "Below are questions with short, correct, helpful answers in plain English.\n\n"
    "Question: What is the capital of France?\n"
    "Answer: The capital of France is Paris.\n\n"
    "Question: Name three primary colours.\n"
    "Answer: Red, yellow and blue.\n\n"
    "Question: Why do we have seasons?\n"
    "Answer: Because the Earth's axis is tilted, so each half of the Earth gets more direct "
    "sunlight for part of the year.\n\n"
)
FEW_SHOT_STOPS = ["\nQuestion:", "Question:", "\n\n\n", "<end_of_turn>", "<start_of_turn>"]


def few_shot_prompt(messages: list[dict[str, Any]]) -> str:
    """The conversation as question/answer pairs after the preamble, ending in "Answer:".
    A system prompt becomes a line before the pairs; an assistant turn is an answer."""
    parts = [FEW_SHOT_PREAMBLE]
    for m in messages:
        text = m.get("content")
        if isinstance(text, list):  # OpenAI content parts: keep the text ones
            text = " ".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
        text = " ".join(str(text or "").split())
        role = m.get("role")
        if role == "system" and text:
            parts.insert(0, f"{text}\n\n")
        elif role == "assistant":
            parts.append(f"Answer: {text}\n\n")
        elif text:
            parts.append(f"Question: {text}\n")
    return "".join(parts) + "Answer:"


def register_few_shot_format() -> None:
    """Registers FEW_SHOT_FORMAT with llama-cpp-python's chat formats (in the engine only)."""
    from llama_cpp.llama_chat_format import ChatFormatterResponse, register_chat_format

    @register_chat_format(FEW_SHOT_FORMAT)
    def _format(messages: list[dict[str, Any]], **_: Any) -> ChatFormatterResponse:
        return ChatFormatterResponse(prompt=few_shot_prompt(messages), stop=FEW_SHOT_STOPS)


class DefaultMaxTokens:
    """ASGI middleware: adds `max_tokens` to generation requests that do not set one."""

    def __init__(self, app: ASGIApp, max_tokens: int) -> None:
        self.app = app
        self.max_tokens = max_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or scope.get("path") not in GENERATION_PATHS
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = self.with_default(b"".join(chunks))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            # After the body, pass the real channel through: llama.cpp's server notices a
            # client that hangs up (http.disconnect) and stops generating.
            return await receive()

        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay, send)

    def with_default(self, body: bytes) -> bytes:
        try:
            request = json.loads(body)
        except ValueError:
            return body  # let the server answer the bad request itself
        if not isinstance(request, dict) or request.get("max_tokens") not in (None, 0):
            return body
        request["max_tokens"] = self.max_tokens
        return json.dumps(request).encode()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m atom_core.launch.demo_server", description=__doc__)
    p.add_argument("--model", required=True, help="the GGUF file")
    p.add_argument("--alias", required=True, help="the model id the server lists and answers to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chat-format", default=FEW_SHOT_FORMAT,
                   help="a llama-cpp-python chat format; 'gguf' uses the file's own template")
    p.add_argument("--n-ctx", type=int, default=8192)
    p.add_argument("--n-threads", type=int, default=None, help="default: half the cores")
    p.add_argument("--default-max-tokens", type=int, default=128)
    p.add_argument("--verbose", action="store_true",
                   help="llama.cpp's own log, with its perf lines per request (eval time ...)")
    args = p.parse_args(argv)

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    register_few_shot_format()
    model: dict[str, Any] = {
        "model": args.model,
        "model_alias": args.alias,
        "chat_format": None if args.chat_format == "gguf" else args.chat_format,
        "n_ctx": args.n_ctx,
        "use_mlock": False,  # 250 MB pinned in RAM per process buys a demo nothing
        "verbose": bool(args.verbose),
    }
    if args.n_threads:
        model["n_threads"] = args.n_threads
    app = create_app(
        server_settings=ServerSettings(host=args.host, port=args.port),
        model_settings=[ModelSettings(**model)],
    )
    uvicorn.run(
        DefaultMaxTokens(app, args.default_max_tokens),
        host=args.host,
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
