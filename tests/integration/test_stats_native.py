"""The server's own figures (LM Studio's native POST /api/v1/chat) beside ATOM's measurement,
against the real HTTP double."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from atom_core import stats
from atom_core.errors import ModelNotFound, NotSupported, ServerError
from atom_core.server.client import LMStudioClient
from atom_core.server.native import SERVER_CHECK_SOURCE, ServerStats, comparison_rows, native_chat
from tests.fixtures.lmstudio_double import DoubleServer, serve

CONFIG = {"models": [
    {"key": "timed", "loaded": True, "ttft_ms": 200, "token_gap_ms": 25, "reply_tokens": 30},
    {"key": "cold", "loaded": False, "load_time_ms": 400, "ttft_ms": 50, "token_gap_ms": 10,
     "reply_tokens": 10},
    {"key": "thinker", "loaded": True, "ttft_ms": 50, "token_gap_ms": 10, "reply_tokens": 6,
     "reasoning": "hmm let me see"},
    {"key": "broken", "loaded": True, "fail_mode": "error_in_stream:3"},
]}


@pytest.fixture(scope="module")
def double() -> Iterator[DoubleServer]:
    with serve(CONFIG) as server:
        yield server


def test_both_measurements_agree_with_the_schedule(double: DoubleServer) -> None:
    with LMStudioClient(double.url) as client:
        native_chat(client, "timed", "warm up")  # connection set up once
        r = native_chat(client, "timed", "Hello there", max_output_tokens=30)
    s = r.server_stats
    assert s is not None and s.output_tokens == 30 and s.input_tokens == 2
    assert r.content.startswith("Reply from timed:")
    # No timed assertions (issue 10; this one failed on a busy machine at 0.218 vs 0.2 +- 5 %):
    # the schedule is a floor (nothing is sent early), ATOM's clock starts before the server's
    # and stops after it, and ceilings are ten times the schedule. Accuracy against the clock
    # is bench/bench_fidelity.py's job.
    assert s.time_to_first_token_s is not None and 0.2 <= s.time_to_first_token_s < 2.0
    assert r.metrics.ttft_s is not None
    assert r.metrics.ttft_s >= s.time_to_first_token_s - 0.001  # the server rounds to 1 ms
    assert s.tokens_per_second is not None and 4 < s.tokens_per_second < 400
    assert r.metrics.decode_tps is not None and 4 < r.metrics.decode_tps < 400
    assert r.metrics.output_tokens == 30 and r.metrics.tokens_source == "usage"
    assert len(r.metrics.token_offsets_ms) == 30
    rows = {row["measure"]: row for row in comparison_rows(r)}
    ttft = rows["Time to first token (s)"]
    assert ttft["difference"] == pytest.approx(ttft["atom"] - ttft["server"])
    assert ttft["difference"] >= -0.001
    assert rows["Output tokens"]["atom"] == 30 and rows["Output tokens"]["server"] == 30
    body = [x for x in double.log() if x["path"] == "/api/v1/chat"][-1]["body"]
    assert body["stream"] is True and body["store"] is False
    assert body["max_output_tokens"] == 30


def test_a_model_load_shows_in_atoms_ttft_but_not_the_servers(double: DoubleServer) -> None:
    with LMStudioClient(double.url) as client:
        r = native_chat(client, "cold", "hi")
    s = r.server_stats
    assert s is not None and s.model_load_time_s is not None
    assert 0.4 <= s.model_load_time_s < 4  # the double sleeps 0.4 s
    assert s.time_to_first_token_s is not None and 0.05 <= s.time_to_first_token_s < 0.5
    assert r.metrics.ttft_s is not None and r.metrics.ttft_s > 0.4  # load included
    rows = {row["measure"]: row for row in comparison_rows(r)}
    assert rows["Time to first token (s)"]["difference"] > 0.35
    assert "model load" in rows["Time to first token (s)"]["why"]
    assert rows["Model load (s)"]["server"] == s.model_load_time_s


def test_reasoning_counts_as_tokens(double: DoubleServer) -> None:
    with LMStudioClient(double.url) as client:
        r = native_chat(client, "thinker", "why?")
    assert r.reasoning.strip().startswith("hmm") and r.content
    assert r.server_stats is not None and r.server_stats.reasoning_output_tokens
    assert r.metrics.chunks == r.server_stats.output_tokens


def test_errors_are_atom_errors(double: DoubleServer) -> None:
    with LMStudioClient(double.url) as client:
        with pytest.raises(ModelNotFound):
            native_chat(client, "nope/nope", "hi")
        with pytest.raises(ServerError):
            native_chat(client, "broken", "hi")
    with serve({"dialect": "lmstudio-0.3"}) as old, LMStudioClient(old.url) as client:
        with pytest.raises(NotSupported):
            native_chat(client, "test/alpha", "hi")


def test_the_run_row_carries_the_servers_figures(double: DoubleServer) -> None:
    with LMStudioClient(double.url) as client:
        r = native_chat(client, "timed", "hi")
    row = r.run_row()
    assert row["source"] == SERVER_CHECK_SOURCE and row["model"] == "timed"
    assert row["server_tps"] == r.server_stats.tokens_per_second  # type: ignore[union-attr]
    summary = stats.model_summary(stats.runs_frame([row]))
    assert summary.iloc[0]["server_tps_p50"] == pytest.approx(row["server_tps"])
    assert stats.source_label(SERVER_CHECK_SOURCE) == "Server-stats check"


def test_server_stats_parsing() -> None:
    assert ServerStats.from_dict({}) is None and ServerStats.from_dict(None) is None
    s = ServerStats.from_dict({"tokens_per_second": "12.5", "input_tokens": 3,
                               "time_to_first_token_seconds": True})
    assert s == ServerStats(tokens_per_second=12.5, input_tokens=3)


def test_server_figures_table_puts_llama_cpp_timings_beside_atoms() -> None:
    from atom_core.stats.server_figures import server_figures

    base = {"source": "cli", "server": "http://llama", "ok": True, "state": "complete",
            "ttft_s": 0.25, "output_tokens": 100}
    rows = [dict(base, ts=float(i), model="g", decode_tps=tps, server_tps=50.0,
                 server_prompt_s=0.1, server_output_tokens=100)
            for i, tps in enumerate((48.0, 49.0, 47.0))]
    rows.append(dict(base, ts=9.0, model="plain", decode_tps=30.0))  # no server figures
    table = server_figures(stats.runs_frame(rows))
    assert list(table["model"]) == ["g"]
    row = table.iloc[0]
    assert row["runs"] == 3 and row["atom_tps_p50"] == 48.0 and row["server_tps_p50"] == 50.0
    assert row["tps_ratio"] == pytest.approx(0.96)
    assert row["server_prompt_p50_s"] == pytest.approx(0.1)
    assert server_figures(stats.runs_frame([rows[-1]])).empty


def test_native_reasoning_reply_has_first_answer_and_thinking(double: DoubleServer) -> None:
    with LMStudioClient(double.url) as client:
        r = native_chat(client, "thinker", "why?")
    m = r.metrics
    assert m.ttft_s is not None and m.first_answer_s is not None and m.thinking_s is not None
    assert m.first_answer_s > m.ttft_s
    assert m.thinking_s == pytest.approx(m.first_answer_s - m.ttft_s, abs=1e-6)
