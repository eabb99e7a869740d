"""The measures every page shows: pinned on known data."""

from __future__ import annotations

import pytest

from atom_core.metrics import GenerationMetrics, compute_metrics, format_seconds, percentile
from atom_core.server.sse import ThinkSplitter

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


# -- reasoning models, usage coverage (pinned timestamps) -------------------------------------


def test_reasoning_then_answer() -> None:
    # Sent at 0; reasoning chunks at 35, 100, 200 ms; answer chunks at 400, 500, 600 ms.
    times = [35 * MS, 100 * MS, 200 * MS, 400 * MS, 500 * MS, 600 * MS]
    m = compute_metrics(t_request_ns=0, token_times_ns=times, t_end_ns=650 * MS,
                        first_answer_ns=400 * MS, reasoning_chunks=3, finish_reason="stop")
    assert m.ttft_s == pytest.approx(0.035)  # first token of any kind, as LM Studio counts
    assert m.first_answer_s == pytest.approx(0.4)
    assert m.thinking_s == pytest.approx(0.365)
    assert m.first_visible_s == pytest.approx(0.4)  # what "quickest" badges use
    assert m.output_tokens == 6 and m.tokens_source == "chunks"
    assert m.reasoning_tokens == 3  # counted, as no usage said otherwise
    assert m.decode_tps == pytest.approx(5 / 0.565)  # the window spans all six tokens


def test_answer_only_first_answer_is_ttft() -> None:
    times = [200 * MS, 300 * MS]
    m = compute_metrics(t_request_ns=0, token_times_ns=times, t_end_ns=300 * MS)
    assert m.first_answer_s == m.ttft_s == pytest.approx(0.2)
    assert m.thinking_s is None and m.reasoning_tokens is None


def test_reasoning_only_reply_has_no_first_answer() -> None:
    m = compute_metrics(t_request_ns=0, token_times_ns=[MS, 2 * MS], t_end_ns=3 * MS,
                        reasoning_chunks=2)
    assert m.ttft_s == pytest.approx(0.001)
    assert m.first_answer_s is None and m.thinking_s is None
    assert m.first_visible_s == pytest.approx(0.001)


def test_usage_counting_the_answer_alone_is_not_believed() -> None:
    # The case: 63 chunks (reasoning and answer) over 2.14 s, usage = answer only (40).
    times = [35 * MS + i * (2140 * MS // 62) for i in range(63)]
    m = compute_metrics(t_request_ns=0, token_times_ns=times, t_end_ns=times[-1],
                        usage={"completion_tokens": 40}, first_answer_ns=times[23],
                        reasoning_chunks=23)
    assert m.output_tokens == 63 and m.tokens_source == "chunks"
    assert m.decode_tps == pytest.approx(62 / ((times[-1] - times[0]) / 1e9))
    assert m.decode_tps == pytest.approx(29.0, abs=0.05)


def test_usage_with_reasoning_tokens_is_believed() -> None:
    times = [100 * MS, 200 * MS, 300 * MS, 400 * MS]
    usage = {"completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": 1}}
    m = compute_metrics(t_request_ns=0, token_times_ns=times, t_end_ns=400 * MS, usage=usage,
                        first_answer_ns=200 * MS, reasoning_chunks=1)
    # Usage says it covers reasoning (even though it is below the chunks counted): usage wins.
    assert m.output_tokens == 3 and m.tokens_source == "usage"
    assert m.reasoning_tokens == 1
    assert m.decode_tps == pytest.approx(2 / 0.3)


def test_usage_at_least_counted_is_believed_with_reasoning() -> None:
    times = [100 * MS, 200 * MS, 300 * MS]
    m = compute_metrics(t_request_ns=0, token_times_ns=times, t_end_ns=300 * MS,
                        usage={"completion_tokens": 7}, first_answer_ns=300 * MS,
                        reasoning_chunks=2)
    assert m.output_tokens == 7 and m.tokens_source == "usage"
    assert m.decode_tps == pytest.approx(6 / 0.2)


def test_usage_without_reasoning_below_count_on_plain_reply_is_believed() -> None:
    # No reasoning at all: usage covers everything there is.
    m = compute_metrics(t_request_ns=0, token_times_ns=[MS, 2 * MS, 3 * MS], t_end_ns=3 * MS,
                        usage={"completion_tokens": 2})
    assert m.output_tokens == 2 and m.tokens_source == "usage"


def test_pool_wait_and_server_timings_are_their_own_fields() -> None:
    m = compute_metrics(t_request_ns=500 * MS, token_times_ns=[700 * MS, 800 * MS],
                        t_end_ns=800 * MS, pool_wait_ns=500 * MS,
                        server_timings={"prompt_ms": 12.5, "predicted_n": 2,
                                        "predicted_per_second": 11.0})
    assert m.ttft_s == pytest.approx(0.2)  # from the request sent, not from when it queued
    assert m.pool_wait_s == pytest.approx(0.5)
    assert m.server_prompt_s == pytest.approx(0.0125)
    assert m.server_output_tokens == 2 and m.server_tps == pytest.approx(11.0)
    assert "waited 500 ms for a connection" in m.summary()
    # a few ms of event-loop scheduling is not a queue: the line says nothing of it
    quick = compute_metrics(t_request_ns=3 * MS, token_times_ns=[200 * MS, 300 * MS],
                            t_end_ns=300 * MS, pool_wait_ns=3 * MS)
    assert quick.pool_wait_s == pytest.approx(0.003)
    assert "for a connection" not in quick.summary()


def test_old_stored_metrics_still_load() -> None:
    old = {"ttft_s": 0.3, "e2e_s": 1.0, "decode_tps": 20.0, "itl_p50_s": 0.05,
           "itl_p95_s": 0.06, "output_tokens": 20, "tokens_source": "usage"}
    m = GenerationMetrics.from_dict(old)
    assert m.first_answer_s == pytest.approx(0.3) and m.thinking_s is None
    assert m.pool_wait_s is None and m.server_tps is None
    reasoning_old = GenerationMetrics.from_dict(old | {"reasoning_tokens": 12})
    assert reasoning_old.first_answer_s is None  # unknown: it may have thought first


def test_summary_shows_first_answer_for_reasoning_reply() -> None:
    m = compute_metrics(t_request_ns=0, token_times_ns=[35 * MS, 435 * MS], t_end_ns=500 * MS,
                        first_answer_ns=435 * MS, reasoning_chunks=1)
    assert m.summary().startswith("TTFT 35 ms · first answer 435 ms (thought 400 ms) · ")


# -- the catalogue of measures (issue 19) --------------------------------------------------------


def test_each_figure_is_named_computed_and_formatted_once() -> None:
    import math

    import pandas as pd

    from atom_core.metrics import (
        DECODE_P50,
        NO_VALUE,
        TOKENS_MEAN,
        TTFT_P50,
        TTFT_P90,
        format_value,
        stat,
    )

    assert (TTFT_P50.key, TTFT_P50.label, TTFT_P50.header) == ("ttft_p50_s", "TTFT p50",
                                                                "TTFT p50 (s)")
    assert (DECODE_P50.key, DECODE_P50.header, DECODE_P50.short) == ("decode_tps_p50",
                                                                     "tok/s p50", "Decode p50")
    assert (TOKENS_MEAN.key, TOKENS_MEAN.label) == ("output_tokens_mean", "Tokens")
    assert stat("ttft_s", "p90") == TTFT_P90
    values = [0.3, None, 0.1, math.nan, 0.9, 0.5]
    kept = [0.3, 0.1, 0.9, 0.5]
    assert TTFT_P90.of(values) == percentile(kept, 90) == pytest.approx(
        pd.Series(kept).quantile(0.9))
    assert TOKENS_MEAN.of([10, None, 20]) == 15 and TTFT_P50.of([None]) is None
    # one formatter, one dash for a figure with none (the CLI said "-", reports "–" or "nan ms")
    assert format_seconds(None) == format_seconds(math.nan) == format_value(None, "tok/s") \
        == NO_VALUE
    assert (TTFT_P50.format(0.42), DECODE_P50.format(31.25)) == ("420 ms", "31.2 tok/s")


def test_every_table_of_figures_takes_its_keys_and_labels_from_the_catalogue() -> None:
    from atom_core.arena import charts as arena_charts
    from atom_core.measure import card, sweep
    from atom_core.measure.loadrun import LoadSummary
    from atom_core.metrics import DECODE_P50, E2E_P50, FIRST_ANSWER_P50, TTFT_P50, TTFT_P90
    from atom_core.stats import SUMMARY_COLUMNS
    from atom_core.stats.summary import SUMMARY_STATS

    for s in SUMMARY_STATS:
        assert SUMMARY_COLUMNS[s.key][0] == s.short
    for s in (TTFT_P50, TTFT_P90, FIRST_ANSWER_P50, E2E_P50):
        assert sweep.LEVEL_COLUMNS[s.key][0] == s.header
        assert s.key in LoadSummary.__dataclass_fields__
    assert {TTFT_P50.header, DECODE_P50.header} <= set(arena_charts.COLUMNS)
    # a saved card keeps its key (ttft_s_p50); its label is the catalogue's
    assert dict(card.RESULT_FIELDS)["ttft_s_p50"] == TTFT_P50.header


def test_a_stored_metrics_dict_reads_leniently_and_writes_back_the_same() -> None:
    """GenerationMetrics.read is the one door from a stored or imported dict: what is there
    reads, a field missing or of the wrong type is None, junk in a timeline is dropped; a
    full dict comes back from to_dict() unchanged (rows and exports keep their shape)."""
    full = compute_metrics(t_request_ns=0, token_times_ns=[100_000_000, 150_000_000],
                           t_end_ns=200_000_000, finish_reason="stop").to_dict()
    back = GenerationMetrics.read(full)
    assert back is not None and back.to_dict() == full
    odd = GenerationMetrics.read({"ttft_s": "0.5", "e2e_s": "slow", "chunks": "x",
                                  "tokens_source": "guess", "finish_reason": 3,
                                  "token_offsets_ms": [1, "two", True, 3.5], "extra": 1})
    assert odd is not None
    assert (odd.ttft_s, odd.e2e_s, odd.chunks, odd.tokens_source, odd.finish_reason) == (
        0.5, None, 0, None, None)
    assert odd.token_offsets_ms == (1.0, 3.5) and odd.output_tokens is None
    assert GenerationMetrics.read(None) is None and GenerationMetrics.read([1]) is None
