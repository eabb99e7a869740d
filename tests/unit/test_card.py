"""Speed per machine and model, and the benchmark card: export, import (untrusted), compare."""

from __future__ import annotations

import json
from typing import Any

import pytest

from atom_core.measure.card import (
    CardError,
    benchmark_card,
    compare_cards,
    machine_table,
    read_card,
)
from atom_core.measure.hardware import GpuInfo, MachineInfo

HERE = MachineInfo(cpu_model="Test CPU", cpu_cores=8, cpu_threads=16, ram_total_mb=65536.0,
                   os="Linux 6", gpus=(GpuInfo(name="RTX", vram_total_mb=24576.0),),
                   hostname="box")


def run(model: str, tps: float, **kw: Any) -> dict[str, Any]:
    row = {"model": model, "ok": True, "source": "chat", "decode_tps": tps, "ttft_s": 0.2,
           "cpu_percent_mean": 40.0, "ram_used_mb_peak": 9000.0, "gpu_util_mean": 80.0,
           "vram_used_mb_peak": 6000.0, "machine_id": HERE.id}
    row.update(kw)
    return row


RUNS = [run("a", 30.0), run("a", 50.0, cpu_percent_mean=60.0, vram_used_mb_peak=7000.0),
        run("a", 10.0, ok=False), run("b", 20.0), run("b", 99.0, source="judge"),
        run("c", 5.0, machine_id=None)]


def test_machine_table_groups_by_machine_and_model_without_failures_or_judges() -> None:
    rows = {r["model"]: r for r in machine_table(RUNS)}
    assert set(rows) == {"a", "b"}  # c was never sampled
    a = rows["a"]
    assert a["runs"] == 2 and a["decode_tps_p50"] == 40.0
    assert a["cpu_percent_mean"] == 50.0 and a["vram_used_mb_peak"] == 7000.0
    assert rows["b"]["runs"] == 1 and rows["b"]["decode_tps_p50"] == 20.0  # judge left out


def test_card_round_trips_and_leaves_the_host_name_out() -> None:
    doc = benchmark_card(HERE, RUNS, {"a": "Q4_K_M"}, now=100.0)
    assert "hostname" not in doc["machine"] and doc["machine"]["id"] == HERE.id
    back = read_card(json.dumps(doc))
    assert back.machine.cpu_model == "Test CPU" and back.created == 100.0
    a = next(m for m in back.models if m["model"] == "a")
    assert a["quantization"] == "Q4_K_M" and a["decode_tps_p50"] == 40.0


def test_compare_lines_up_the_same_model_on_two_machines() -> None:
    mine = benchmark_card(HERE, RUNS, {"a": "Q4_K_M"})
    theirs_doc = benchmark_card(HERE, RUNS, {"a": "Q4_K_M"})
    theirs_doc["models"][0]["decode_tps_p50"] = 20.0  # a slower machine
    rows = compare_cards(mine, read_card(json.dumps(theirs_doc)))
    a = next(r for r in rows if r["model"] == "a")
    assert a["tps_here"] == 40.0 and a["tps_there"] == 20.0 and a["ratio"] == 2.0


@pytest.mark.parametrize("raw, words", [
    (b"\xff\xfe", "not JSON"), ("[]", "not an ATOM benchmark card"),
    ('{"format": "atom-benchmark-card"}', "no machine"), ("x" * 3_000_000, "too big"),
])
def test_bad_cards_are_one_sentence(raw: Any, words: str) -> None:
    with pytest.raises(CardError) as e:
        read_card(raw)
    assert words in e.value.sentence


def test_a_hostile_card_keeps_only_plain_values() -> None:
    doc = {"format": "atom-benchmark-card", "machine": {"cpu_model": "x" * 5000},
           "models": [{"model": "m", "decode_tps_p50": "fast", "quantization": ["q"]}, 7]}
    card = read_card(json.dumps(doc))
    assert len(card.machine.cpu_model) == 200
    assert card.models == ({"model": "m", "quantization": None, "runs": None,
                            "decode_tps_p50": None, "ttft_s_p50": None,
                            "cpu_percent_mean": None, "ram_used_mb_peak": None,
                            "gpu_util_mean": None, "vram_used_mb_peak": None},)
