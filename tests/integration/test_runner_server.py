"""FanOut against the real test server."""

from __future__ import annotations

import threading
import time

from atom_core.measure.runner import FanOut
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage


def test_cancel_while_waiting_for_the_first_token_ends_at_once() -> None:
    """A long prompt: no token for seconds. Stop must not wait for the first token to arrive;
    the worker leaves at once and the server sees the connection go."""
    from tests.fixtures.lmstudio_double import serve

    slow_start = {"models": [{"key": "m", "loaded": True, "ttft_ms": 6000, "token_gap_ms": 20,
                              "reply_tokens": 10}]}
    with serve(slow_start) as double, LMStudioClient(double.url) as client:
        run = FanOut([lambda: client.stream_chat("m", [ChatMessage("user", "go")])]).start()
        time.sleep(0.5)  # the request is out and its headers are in; no token yet
        started = time.monotonic()
        run.cancel()
        run.join(timeout=2)
        left_after = time.monotonic() - started
        assert not any(t.name.startswith("atom-stream") for t in threading.enumerate()), (
            f"the worker was still waiting {left_after:.1f} s after cancel()")
        run.poll(0)
        slot = run.slots[0]
        assert slot.cancelled and slot.error is None and slot.reply.tokens == 0
        (record,) = [r for r in double.log(wait=8) if r["path"] == "/v1/chat/completions"]
    # The double only notices a closed connection when a write fails; the first write after
    # the client left can still succeed, so at most that one token went out.
    assert record["closed_early"] and record["tokens_sent"] <= 1
