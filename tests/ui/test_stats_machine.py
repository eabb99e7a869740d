"""The Stats page's Machine view in AppTest: speed against the machine, and the card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import respx

from atom_core.history import open_store
from atom_core.measure import card, hardware
from atom_core.runs import RunRecord
from atom_core.words import EMPTY_CELL
from tests.fixtures.apptest import new_app
from tests.fixtures.payloads import NATIVE_MODELS


def open_machine_tab() -> Any:
    at = new_app().run()
    at.switch_page("pages/stats.py").run()
    at.session_state["stats_tab"] = "Machine"
    at.run()
    assert not at.exception, at.exception
    return at


def test_machine_view_shows_speed_per_model_and_exports_a_card(mock: respx.MockRouter,
                                                               isolated_env: Path) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    here = hardware.this_machine()
    store = open_store(isolated_env)
    for tps, cpu in ((30.0, 40.0), (50.0, 60.0)):
        store.add_run(RunRecord(ts=1.0, source="chat", server="s", model="qwen3-4b",
                                decode_tps=tps, ttft_s=0.3, cpu_percent_mean=cpu,
                                ram_used_mb_peak=5000.0, machine_id=here.id))
    at = open_machine_tab()
    (table,) = [d.value for d in at.dataframe if "decode_tps_p50" in d.value.columns]
    assert list(table["model"]) == ["qwen3-4b"] and table["decode_tps_p50"][0] == 40.0
    assert table["cpu_percent_mean"][0] == 50.0
    assert "(this one)" in table["machine"][0]
    assert [e.key for e in at.get("plotly_chart")] == ["machine_scatter"]
    assert [r["id"] for r in store.records(hardware.MACHINES_TABLE)] == [here.id]
    buttons = [b for b in at.get("download_button") if "card" in b.proto.label]
    assert buttons and not buttons[0].proto.disabled
    assert here.label.split(" · ")[0] in " ".join(m.value for m in at.markdown)


def test_machine_view_with_no_sampled_runs_says_so(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    at = open_machine_tab()
    assert any("No run has hardware figures yet" in i.value for i in at.info)


def test_missing_figures_are_blank_cells_not_none(mock: respx.MockRouter,
                                                  isolated_env: Path) -> None:
    """No GPU here (GPU % unknown) and a shared card that names no quantization: both tables
    show a blank cell, never the word "None"."""
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    here = hardware.this_machine()
    store = open_store(isolated_env)
    store.add_run(RunRecord(ts=1.0, source="chat", server="s", model="some-model",
                            decode_tps=30.0, ttft_s=0.3, cpu_percent_mean=40.0,
                            machine_id=here.id))
    at = open_machine_tab()
    (machine,) = [d for d in at.dataframe if "gpu_util_mean" in d.value.columns]
    assert machine.value["gpu_util_mean"].isna().all()
    theirs = card.benchmark_card(here, store.run_rows())  # no quantization known for the model
    at.file_uploader(key="card_upload").set_value(
        ("card.json", json.dumps(theirs).encode(), "application/json")).run()
    assert not at.exception, at.exception
    (compared,) = [d for d in at.dataframe if "quantization" in d.value.columns]
    assert compared.value["quantization"].isna().all()
    for table in (machine, compared):
        assert table.proto.HasField("placeholder") and table.proto.placeholder == EMPTY_CELL
