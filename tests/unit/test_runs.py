"""RunRecord: the typed run row, its stored shape, and old or damaged rows read back."""

from __future__ import annotations

from atom_core.errors import ServerError
from atom_core.metrics import GenerationMetrics
from atom_core.runs import RunRecord, run_record

M = GenerationMetrics(ttft_s=0.25, e2e_s=2.0, decode_tps=40.0, itl_p50_s=0.025, itl_p95_s=0.03,
                      output_tokens=71, tokens_source="usage", prompt_tokens=12,
                      finish_reason="stop")


def test_measured_record_round_trips_through_its_stored_row() -> None:
    rec = RunRecord.measured(source="arena", server="http://h:1", model="m", metrics=M, ts=5.0,
                             round_id="r1", slot="A")
    row = rec.to_record()
    assert row["ttft_s"] == 0.25 and row["round_id"] == "r1" and row["slot"] == "A"
    assert "id" not in row and "tags" not in row
    back = RunRecord.from_record(row)
    assert back == rec
    assert back.tags == {"round_id": "r1", "slot": "A"}


def test_run_record_keeps_the_shape_rows_always_had() -> None:
    row = run_record(source="chat", server="s", model="m", metrics=M,
                     error=ServerError("The server failed (HTTP 500)."), conversation_id="c")
    assert row["ok"] is False and row["state"] == "error"
    assert row["error"].startswith("The server failed")
    for key in ("ts", "source", "server", "model", "ttft_s", "decode_tps", "e2e_s", "itl_p50_s",
                "itl_p95_s", "output_tokens", "prompt_tokens", "tokens_source", "finish_reason",
                "conversation_id"):
        assert key in row, key


def test_old_and_damaged_rows_read_back_without_raising() -> None:
    old = RunRecord.from_record({"ts": 1.0, "model": "m", "ok": True, "ttft_s": 0.3})
    assert old.decode_tps is None and old.state == "complete" and old.server == ""
    junk = RunRecord.from_record({"ttft_s": "fast", "ok": "yes", "output_tokens": [1],
                                  "model": {"a": 1}, "nested": {"x": 1}})
    assert junk.ttft_s is None and junk.output_tokens is None
    assert junk.ok is True  # a non-bool 'ok' is unknown, not False
    assert "nested" not in junk.tags  # only plain values travel as tags
    assert RunRecord.from_record({"ok": False}).state == "error"


def test_reasoning_pool_and_server_fields_travel_and_old_rows_read_none() -> None:
    m = GenerationMetrics(ttft_s=0.035, e2e_s=2.2, decode_tps=29.0, itl_p50_s=0.03,
                          itl_p95_s=0.04, output_tokens=63, tokens_source="chunks",
                          first_answer_s=0.435, thinking_s=0.4, pool_wait_s=0.0,
                          server_tps=31.5, server_prompt_s=0.012, server_output_tokens=63)
    row = RunRecord.measured(source="cli", server="s", model="m", metrics=m, ts=1.0).to_record()
    assert row["first_answer_s"] == 0.435 and row["thinking_s"] == 0.4
    assert row["pool_wait_s"] == 0.0 and row["server_tps"] == 31.5
    assert row["server_prompt_s"] == 0.012 and row["server_output_tokens"] == 63
    # a caller's own server figure (LM Studio native stats) wins over the stream's
    native = RunRecord.measured(source="cli", server="s", model="m", metrics=m, ts=1.0,
                                server_tps=30.0)
    assert native.server_tps == 30.0
    old = RunRecord.from_record({"ts": 1.0, "source": "chat", "server": "s", "model": "m",
                                 "ttft_s": 0.2, "decode_tps": 20.0})
    assert old.first_answer_s is None and old.thinking_s is None and old.pool_wait_s is None
    assert old.server_prompt_s is None and old.server_output_tokens is None
