"""Stats: the Machine view. What the machine did during the runs (CPU, RAM, GPU, VRAM), speed
against it per model, and the benchmark card to share or compare. Drawing only; the logic is in
atom_core.measure.hardware and atom_core.measure.card."""

import json
from typing import Any

import plotly.express as px
import streamlit as st

from atom_core import stats
from atom_core.measure import card, hardware
from atom_core.render import safe_markdown
from atom_core.stats.charts import wrap_label  # long names over lines in the legend
from atom_core.words import EMPTY_CELL
from pages.parts import ui

COLUMNS = {"machine": "Machine", "model": "Model",
           **{k: label for k, label in card.RESULT_FIELDS}}


def quantizations() -> dict[str, str | None]:
    """Model key -> quantization, from the servers the sidebar knows (what the card names)."""
    out: dict[str, str | None] = {}
    for choice in ui.servers():
        listing = ui.status_for(choice.url).models
        for m in listing.models if listing is not None else ():
            out.setdefault(m.key, m.quantization)
    return out


def machine_tab(store: ui.HistoryStore) -> None:
    here = hardware.this_machine()  # recorded in the store as the session started (app.py)
    st.markdown(f"**This machine:** {here.label}", help="Recorded once; every run names the "
                "machine it ran on, so numbers from different machines are never mixed.")
    known = hardware.machines(store)
    runs = stats.machine_runs(store)  # from the runs archive: only what the table counts
    rows = card.machine_table(runs)
    if not rows:
        st.info("No run has hardware figures yet. Every reply from now on records what the "
                "machine did while it was generating.", icon=":material/memory:")
    else:
        for r in rows:
            m = known.get(r["machine_id"])
            r["machine"] = (m.cpu_model or r["machine_id"]) + (" (this one)"
                                                                 if r["machine_id"] == here.id
                                                                 else "")
        st.dataframe(rows, hide_index=True, column_order=list(COLUMNS), placeholder=EMPTY_CELL,
                     column_config={k: st.column_config.Column(v) for k, v in COLUMNS.items()})
        x = st.segmented_control("Tok/s against", ["VRAM used MB (peak)", "CPU % (mean)"],
                                 default="CPU % (mean)", key="machine_x")
        xcol = "vram_used_mb_peak" if x == "VRAM used MB (peak)" else "cpu_percent_mean"
        points = [{**r, "model": wrap_label(r["model"]), "machine": wrap_label(r["machine"])}
                  for r in rows if r.get(xcol) is not None and r.get("decode_tps_p50")]
        if points:
            fig = px.scatter(points, x=xcol, y="decode_tps_p50", color="model",
                             symbol="machine", labels={xcol: x, "decode_tps_p50": "Decode tok/s"})
            st.plotly_chart(fig, key="machine_scatter")
        else:
            st.caption(f"No run has {x} recorded (no GPU figures without an NVIDIA GPU).")
    _card(here, runs)


def _card(here: hardware.MachineInfo, runs: list[dict[str, Any]]) -> None:
    st.markdown("**Benchmark card**", help="This machine, each model with its quantization, "
                "and its results, as one JSON file another ATOM can import and compare.")
    mine = card.benchmark_card(here, runs, quantizations())
    cols = st.columns(2)
    cols[0].download_button("Export this machine's card", json.dumps(mine, indent=2),
                            file_name=f"atom-benchmark-card-{here.id}.json",
                            mime="application/json", on_click="ignore",
                            icon=":material/download:", disabled=not mine["models"])
    upload = cols[1].file_uploader("Compare with a card", type=["json"], key="card_upload")
    if upload is None:
        return
    try:
        theirs = card.read_card(upload.getvalue())
    except card.CardError as e:
        st.error(safe_markdown(e.sentence), icon=":material/error:")
        return
    st.text(f"Their machine: {theirs.machine.label}")  # imported text: shown as plain text
    rows = card.compare_cards(mine, theirs)
    if not rows:
        st.info("No model on that card has runs on this machine.", icon=":material/compare:")
        return
    st.dataframe(rows, hide_index=True, placeholder=EMPTY_CELL, column_config={
        "model": "Model", "quantization": "Quantization", "tps_here": "Tok/s here",
        "tps_there": "Tok/s there", "ratio": "× faster here", "ttft_here": "TTFT here (s)",
        "ttft_there": "TTFT there (s)"})
