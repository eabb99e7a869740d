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
    # Server's figures and ATOM's, each within 5 % of what the double was told.
    assert s.time_to_first_token_s == pytest.approx(0.2, rel=0.05)
    assert s.tokens_per_second == pytest.approx(40, rel=0.05)
    assert r.metrics.ttft_s == pytest.approx(0.2, rel=0.05)
    assert r.metrics.decode_tps == pytest.approx(40, rel=0.05)
    assert r.metrics.output_tokens == 30 and r.metrics.tokens_source == "usage"
    assert len(r.metrics.token_offsets_ms) == 30
    rows = {row["measure"]: row for row in comparison_rows(r)}
    ttft = rows["Time to first token (s)"]
    assert ttft["difference"] == pytest.approx(ttft["atom"] - ttft["server"])
    assert abs(ttft["difference"]) < 0.05
    assert rows["Output tokens"]["atom"] == 30 and rows["Output tokens"]["server"] == 30
    body = [x for x in double.log() if x["path"] == "/api/v1/chat"][-1]["body"]
    assert body["stream"] is True and body["store"] is False
    assert body["max_output_tokens"] == 30


def test_a_model_load_shows_in_atoms_ttft_but_not_the_servers(double: DoubleServer) -> None:
    with LMStudioClient(double.url) as client:
        r = native_chat(client, "cold", "hi")
    s = r.server_stats
    assert s is not None and s.model_load_time_s == pytest.approx(0.4, rel=0.1)
    assert s.time_to_first_token_s == pytest.approx(0.05, rel=0.2)
    assert r.metrics.ttft_s is not None and r.metrics.ttft_s > 0.4  # load included
    rows = {row["measure"]: row for row in comparison_rows(r)}
    assert rows["Time to first token (s)"]["difference"] > 0.35
    assert "model load" in rows["Time to first token (s)"]["why"]
    assert rows["Model load (s)"]["server"] == pytest.approx(0.4, rel=0.1)


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
    assert summary.iloc[0]["server_tps_p50"] == pytest.approx(40, rel=0.05)
    assert stats.source_label(SERVER_CHECK_SOURCE) == "Server-stats check"


def test_server_stats_parsing() -> None:
    assert ServerStats.from_dict({}) is None and ServerStats.from_dict(None) is None
    s = ServerStats.from_dict({"tokens_per_second": "12.5", "input_tokens": 3,
                               "time_to_first_token_seconds": True})
    assert s == ServerStats(tokens_per_second=12.5, input_tokens=3)
