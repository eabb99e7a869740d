"""How much does ATOM's streaming path cost on top of reading the bytes?

Streams the same long reply from the LM Studio double (no delay between tokens, so the client is
the bottleneck) three ways in one process and prints tokens per second and the ratio to the
baseline:

  baseline   httpx iter_lines(), nothing parsed (the floor)
  atom       LMStudioClient.stream_chat(): SSE decoding, JSON, typed events, timestamps
  fanout     the same through FanOut (worker thread + queue + script-thread drain), as Chat does

Run: python bench/bench_streaming.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from atom_core.measure.runner import FanOut  # noqa: E402
from atom_core.server.client import LMStudioClient  # noqa: E402
from atom_core.types import ChatMessage  # noqa: E402
from tests.fixtures.lmstudio_double import serve  # noqa: E402

TOKENS = 4000
REPEATS = 5
CONFIG = {"models": [{"key": "fast", "loaded": True, "ttft_ms": 0, "token_gap_ms": 0,
                      "reply_tokens": TOKENS}]}
BODY = {"model": "fast", "messages": [{"role": "user", "content": "go"}], "stream": True,
        "stream_options": {"include_usage": True}}


def baseline(url: str) -> int:
    n = 0
    with httpx.Client(base_url=url) as http, http.stream("POST", "/v1/chat/completions",
                                                           json=BODY) as r:
        for line in r.iter_lines():
            n += line.startswith("data: {")
    return n


def atom(client: LMStudioClient) -> int:
    with client.stream_chat("fast", [ChatMessage("user", "go")]) as stream:
        return sum(1 for e in stream if e.kind == "content")


def fanout(client: LMStudioClient) -> int:
    with FanOut([lambda: client.stream_chat("fast", [ChatMessage("user", "go")])]) as run:
        while not run.all_done:
            run.poll(0.05)
    return run.slots[0].reply.tokens


def timed(fn: object, arg: object) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(arg)  # type: ignore[operator]
    return time.perf_counter() - t0, n


def main() -> None:
    with serve(CONFIG) as double, LMStudioClient(double.url) as client:
        ways = {"baseline": (baseline, double.url), "atom": (atom, client),
                "fanout": (fanout, client)}
        results: dict[str, list[float]] = {k: [] for k in ways}
        counts: dict[str, int] = {}
        for _ in range(REPEATS):  # interleaved, so drift hits every way alike
            for name, (fn, arg) in ways.items():
                seconds, n = timed(fn, arg)
                results[name].append(seconds)
                counts[name] = n
    base = statistics.median(results["baseline"])
    print(f"{TOKENS} tokens from the LM Studio double with no delay, median of {REPEATS}:")
    print(f"{'way':<10}{'seconds':>10}{'tokens/s':>12}{'vs baseline':>14}")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<10}{med:>10.3f}{counts[name] / med:>12.0f}{med / base:>13.2f}x")
    for name in ("atom", "fanout"):
        extra_us = (statistics.median(results[name]) - base) / TOKENS * 1e6
        print(f"{name}: {extra_us:.1f} µs per token on top of reading the bytes "
              f"({extra_us / 10_000:.3%} of a 10 ms gap, i.e. a 100 tok/s model)")


if __name__ == "__main__":
    main()
