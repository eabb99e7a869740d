"""The measures every page shows: pinned on known data."""

from __future__ import annotations

import pytest

from atom_core.metrics import GenerationMetrics, compute_metrics, format_seconds, percentile
from atom_core.server.streaming import ThinkSplitter

MS = 1_000_000


def test_percentile_matches_linear_interpolation_on_known_data() -> None:
    data = [15, 20, 35, 40, 50]
    assert percentile(data, 0) == 15
    assert percentile(data, 100) == 50
    assert percentile(data, 50) == 35
    assert percentile(data, 40) == pytest.approx(29.0)  # rank 1.6: 20 + 0.6 * 15
    assert percentile(data, 95) == pytest.approx(48.0)  # rank 3.8: 40 + 0.8 * 10
    assert percentile(list(reversed(data)), 50) == 35  # order does not matter
    assert percentile([7], 95) == 7
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(data, 101)


def test_percentile_agrees_with_pandas() -> None:
    pd = pytest.importorskip("pandas")
    data = [0.1, 0.5, 0.25, 3.0, 0.75, 0.3, 0.2]
    for q in (10, 50, 90, 95, 99):
        assert percentile(data, q) == pytest.approx(pd.Series(data).quantile(q / 100))


def test_compute_metrics_definitions() -> None:
    # Request at 0; tokens at 200, 250, 300, 400 ms; stream closed at 450 ms.
    times = [200 * MS, 250 * MS, 300 * MS, 400 * MS]
    m = compute_metrics(t_request_ns=0, token_times_ns=times, t_end_ns=450 * MS,
                        usage=None, finish_reason="stop")
    assert m.ttft_s == pytest.approx(0.2)
    assert m.e2e_s == pytest.approx(0.45)
    assert m.output_tokens == 4 and m.tokens_source == "chunks"
    assert m.decode_tps == pytest.approx(3 / 0.2)  # (4 - 1) tokens over 200 ms
    assert m.itl_p50_s == pytest.approx(0.05)  # gaps 50, 50, 100 ms
    assert m.itl_p95_s == pytest.approx(0.095)  # rank 1.9: 50 + 0.9 * 50 ms
    assert m.token_offsets_ms == (200.0, 250.0, 300.0, 400.0)
    assert m.finish_reason == "stop" and m.chunks == 4


def test_usage_beats_chunk_count_when_reported() -> None:
    times = [100 * MS, 200 * MS, 300 * MS]
    m = compute_metrics(t_request_ns=0, token_times_ns=times, t_end_ns=300 * MS,
                        usage={"prompt_tokens": 11, "completion_tokens": 9,
                               "completion_tokens_details": {"reasoning_tokens": 4}})
    assert m.output_tokens == 9 and m.tokens_source == "usage"
    assert m.decode_tps == pytest.approx(8 / 0.2)
    assert m.prompt_tokens == 11 and m.reasoning_tokens == 4


def test_zero_usage_falls_back_to_counting() -> None:
    m = compute_metrics(t_request_ns=0, token_times_ns=[MS, 2 * MS], t_end_ns=3 * MS,
                        usage={"completion_tokens": 0})
    assert m.output_tokens == 2 and m.tokens_source == "chunks"


def test_no_tokens_and_one_token() -> None:
    none = compute_metrics(t_request_ns=0, token_times_ns=[], t_end_ns=5 * MS)
    assert none.ttft_s is None and none.decode_tps is None and none.itl_p50_s is None
    assert none.output_tokens == 0
    one = compute_metrics(t_request_ns=0, token_times_ns=[MS], t_end_ns=2 * MS)
    assert one.ttft_s == pytest.approx(0.001) and one.decode_tps is None


def test_round_trip_and_summary() -> None:
    m = compute_metrics(t_request_ns=0, token_times_ns=[420 * MS, 520 * MS], t_end_ns=2_000 * MS,
                        finish_reason="length")
    again = GenerationMetrics.from_dict(m.to_dict() | {"unknown_future_field": 1})
    assert again == m
    assert m.summary() == "TTFT 420 ms · 10.0 tok/s · 2 tokens (counted) · 2.00 s total · length"
    assert format_seconds(0.0421) == "42 ms" and format_seconds(3.456) == "3.46 s"


@pytest.mark.parametrize(
    ("pieces", "reasoning", "content"),
    [
        (["<think>a</think>b"], "a", "b"),
        (["<", "think", ">", "a", "</", "think", ">", "b"], "a", "b"),
        (["\n<think>x", "</think>\n\nAnswer"], "x", "\n\n\nAnswer"),
        (["no tags at all"], "", "no tags at all"),
        (["a < b and c > d"], "", "a < b and c > d"),
        (["<thinking is fun"], "", "<thinking is fun"),
        (["<think>never closed"], "never closed", ""),
        (["text <think>not reasoning</think>"], "", "text <think>not reasoning</think>"),
    ],
)
def test_think_splitter(pieces: list[str], reasoning: str, content: str) -> None:
    splitter = ThinkSplitter()
    out = [p for piece in pieces for p in splitter.feed(piece)] + splitter.flush()
    assert "".join(t for k, t in out if k == "reasoning") == reasoning
    assert "".join(t for k, t in out if k == "content") == content
