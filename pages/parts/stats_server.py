"""Stats, the "Server vs ATOM" tab: one request over LM Studio's native route, ATOM's figures
beside the server's own; and the table helper every Stats tab uses."""

from __future__ import annotations

from typing import Any

import streamlit as st

from atom_core.errors import AtomError
from atom_core.render import plain_label
from atom_core.server.native import COMPARISON_COLUMNS, comparison_rows, native_chat
from atom_core.stats.server_figures import SERVER_FIGURE_COLUMNS, server_figures
from atom_core.types import Dialect
from atom_core.words import EMPTY_CELL
from pages.parts import ui

FORMATS = {"int": "%d", "seconds": "%.2f", "tps": "%.1f", "tokens": "%.0f", "percent": "percent",
           "ratio": "%.3f", "duration": "%.2f s", "speed": "%.1f tok/s"}


def table(rows: Any, columns: dict[str, tuple[str, str]], *,
          widths: dict[str, int] | None = None, helps: dict[str, str] | None = None,
          **kw: Any) -> None:
    """`rows` with `columns` (column -> (label, kind)) in that order; `widths`: px per column
    (the rest fit their contents); `helps`: a header's tooltip."""
    widths, helps = widths or {}, helps or {}
    config = {c: st.column_config.NumberColumn(label, format=FORMATS[kind], width=widths.get(c),
                                               help=helps.get(c)) if kind in FORMATS
              else st.column_config.TextColumn(label, width=widths.get(c), help=helps.get(c))
              for c, (label, kind) in columns.items()}
    st.dataframe(rows, hide_index=True, column_config=config, column_order=list(columns),
                 placeholder=EMPTY_CELL, **kw)


def server_tab(df: Any, store: ui.HistoryStore) -> None:
    """The "Server vs ATOM" tab: figures servers reported beside ATOM's (over the filtered
    runs `df`), and a one-request check over LM Studio's native route."""
    reported = server_figures(df)
    if len(reported):
        st.caption("Runs where the server reported its own figures (llama.cpp's `timings`, "
                   "LM Studio's native `stats`), medians beside ATOM's measurement of the "
                   "same runs.")
        table(reported, SERVER_FIGURE_COLUMNS, key="server_figures")
    status, picked = ui.server_status(), ui.selected_model()
    if status.error is not None:
        ui.show_error(status.error)
        return
    if status.dialect is not Dialect.LMSTUDIO_04:
        st.info("A one-request check needs LM Studio 0.4's native API, which this server "
                "does not offer. llama.cpp's own server (`llama-server`) reports its timings "
                "on every reply instead: runs that carried them show in the table above.")
        return
    st.caption("One request over LM Studio's native `POST /api/v1/chat`: ATOM times the "
               "stream itself and shows its figures beside the ones the server reports.")
    models = [m.key for m in status.models.llms] if status.models else []
    with st.form("server_form"):
        model = st.selectbox("Model", models, models.index(picked) if picked in models else 0)
        prompt = st.text_input("Prompt", "Write a haiku about fast computers.")
        start = st.form_submit_button("Measure with server stats", icon=":material/compare:")
    if start and model:
        try:
            with st.spinner(f"Asking {plain_label(model)}…"):
                result = native_chat(ui.client(), model, prompt, max_output_tokens=256)
            store.add_run(result.as_run())
            st.session_state.server_check = (model, comparison_rows(result))
        except AtomError as e:
            ui.show_error(e)
    if "server_check" in st.session_state:
        model, rows = st.session_state.server_check
        st.markdown(f"**{plain_label(model)}**")
        table(rows, COMPARISON_COLUMNS, key="server_comparison")
