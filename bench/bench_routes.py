"""Do ATOM's measurements agree with the server's set timing on every chat route?

The LM Studio double streams each reply on a fixed schedule (first token after TTFT_MS, then one
every GAP_MS), the same on all four routes. For each route this streams REPEATS replies and
prints ATOM's median TTFT and decode speed against what the double was told, with the ratio;
on LM Studio's native route also the server's own reported figures. A route whose reader added
latency or miscounted tokens shows up as a ratio away from 1.00.

Run: python bench/bench_routes.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atom_core.server.client import LMStudioClient  # noqa: E402
from atom_core.server.routes import ROUTES  # noqa: E402
from atom_core.server.streaming import ReplyBuffer  # noqa: E402
from atom_core.types import ChatMessage  # noqa: E402
from tests.fixtures.lmstudio_double import serve  # noqa: E402

TTFT_MS = 200
GAP_MS = 25
TOKENS = 40
REPEATS = 5
CONFIG = {"models": [{"key": "timed", "loaded": True, "ttft_ms": TTFT_MS, "token_gap_ms": GAP_MS,
                      "reply_tokens": TOKENS}]}


def one(client: LMStudioClient, route: str) -> ReplyBuffer:
    reply = ReplyBuffer()
    stream = client.stream_route(route, "timed", [ChatMessage("user", "go")])
    with stream:
        for event in stream:
            reply.add(event)
    reply.t_request_ns, reply.t_end_ns = stream.t_request_ns, stream.t_end_ns
    return reply


def main() -> None:
    set_tps = 1000 / GAP_MS
    with serve(CONFIG) as double, LMStudioClient(double.url) as client:
        for route in ROUTES:
            one(client, route)  # warm the connection
        replies: dict[str, list[ReplyBuffer]] = {r: [] for r in ROUTES}
        for _ in range(REPEATS):  # interleaved, so drift hits every route alike
            for route in ROUTES:
                replies[route].append(one(client, route))
    print(f"The double's schedule: TTFT {TTFT_MS} ms, then {set_tps:.1f} tok/s, {TOKENS} tokens;"
          f" median of {REPEATS} per route")
    print(f"{'route':<13}{'TTFT ms':>9}{'ratio':>7}{'tok/s':>8}{'ratio':>7}{'tokens':>8}"
          f"{'server TTFT ms':>16}{'server tok/s':>14}")
    for route, rs in replies.items():
        ms = [r.metrics() for r in rs]
        ttft = statistics.median(m.ttft_s or 0 for m in ms) * 1000
        tps = statistics.median(m.decode_tps or 0 for m in ms)
        tokens = statistics.median(m.output_tokens or 0 for m in ms)
        stats = [r.server_stats for r in rs if r.server_stats]
        s_ttft = (f"{statistics.median(s['time_to_first_token_seconds'] for s in stats) * 1000:.1f}"
                  if stats else "–")
        s_tps = f"{statistics.median(s['tokens_per_second'] for s in stats):.1f}" if stats else "–"
        print(f"{route:<13}{ttft:>9.1f}{ttft / TTFT_MS:>7.2f}{tps:>8.1f}{tps / set_tps:>7.2f}"
              f"{tokens:>8.0f}{s_ttft:>16}{s_tps:>14}")


if __name__ == "__main__":
    main()
