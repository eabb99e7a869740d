"""ATOM's decode speed beside the real engine's own figure for the same request.

The bundled engine (llama-cpp-python's server) sends no `timings` and no `stats`, but with
verbose logging llama.cpp prints its perf lines for every request:

    llama_perf_context_print:        eval time =  1234.56 ms /    63 runs  (19.60 ms per token,
    51.03 tokens per second)

This test starts one verbose engine process, sends one request, and compares ATOM's decode tok/s
with that line. The bound is generous (the eval line leaves out sampling, detokenizing and the
HTTP server, so it reads higher than any client can see); the figures and their difference are
printed for the benchmark notes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atom_core.launch import demo
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage, SamplingOptions
from tests.fixtures.engine import installed_engine

pytestmark = pytest.mark.engine

MODEL = demo.MODEL_ALIASES[0]
PROMPT = [ChatMessage("user", "Write three sentences about the sea.")]
EVAL_LINE = re.compile(
    r"^(?:llama_perf_context_print:)?\s*eval time =\s*([\d.]+) ms /\s*(\d+) runs.*?"
    r"([\d.]+) tokens per second", re.M)
TOTAL_LINE = re.compile(r"total time =\s*([\d.]+) ms /\s*(\d+) tokens", re.M)


@pytest.fixture(scope="module")
def verbose_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.EngineProcess]:
    paths = installed_engine()
    engine = demo.start_engine(MODEL, paths=paths, log_dir=tmp_path_factory.mktemp("verbose"),
                               verbose=True)
    try:
        demo.wait_ready([engine], timeout=180)
        yield engine
    finally:
        engine.stop()


def _new_perf_lines(log: Path, since: int, timeout: float = 30.0) -> str:
    """The log written after `since` bytes, once llama.cpp's perf block for it is there."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log.read_bytes()[since:].decode("utf-8", "replace")
        if EVAL_LINE.search(text) and TOTAL_LINE.search(text):
            return text
        time.sleep(0.2)
    return text


def test_decode_speed_beside_llama_cpps_own_eval_line(
        verbose_engine: demo.EngineProcess) -> None:
    options = SamplingOptions(max_tokens=64, temperature=0.0)
    with LMStudioClient(verbose_engine.url) as client:
        client.chat(MODEL, PROMPT, options=SamplingOptions(max_tokens=4))  # warm up
        since = verbose_engine.log.stat().st_size
        reply = client.chat(MODEL, PROMPT, options=options)
    text = _new_perf_lines(verbose_engine.log, since)
    evals = EVAL_LINE.findall(text)
    assert evals, f"no llama.cpp eval line after the request:\n{text[-2000:]}"
    eval_ms, runs, eval_tps = float(evals[-1][0]), int(evals[-1][1]), float(evals[-1][2])
    total_ms, total_tokens = (float(x) for x in TOTAL_LINE.findall(text)[-1])
    m = reply.metrics()
    assert m.decode_tps is not None and m.output_tokens >= 8
    total_tps = total_tokens / (total_ms / 1000)
    print(f"\nATOM decode {m.decode_tps:.2f} tok/s over {m.output_tokens} tokens; llama.cpp eval "
          f"line {eval_tps:.2f} tok/s ({runs} runs in {eval_ms:.1f} ms), ATOM / eval = "
          f"{m.decode_tps / eval_tps:.3f}; total-time line {total_tps:.2f} tok/s "
          f"(prompt + reply), ATOM / total = {m.decode_tps / total_tps:.3f}")
    # The same request: llama.cpp counts one eval run per generated token (measured here:
    # 64 runs for 64 tokens), give or take the first and the end-of-stream token.
    assert abs(runs - m.output_tokens) <= 2
    # Generous: the eval line leaves out sampling and the server, so ATOM sees less, but
    # never many times less nor more.
    assert 0.3 < m.decode_tps / eval_tps < 1.3
