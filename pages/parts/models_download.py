"""Models, the "Download a model" tab: ask the server to download, and follow every recent
download of this server until it ends."""

from __future__ import annotations

import streamlit as st

from atom_core.errors import AtomError
from atom_core.render import plain_label, safe_markdown
from atom_core.server import admin as ma
from pages.parts import ui


def download_panel(url: str) -> None:
    store = ui.store()
    with st.form("download-form", border=False):
        a, b = st.columns([3, 1])
        model = a.text_input("Catalog id or Hugging Face URL", key="dl-model",
                             placeholder="ibm/granite-4-micro")
        quant = b.text_input("Quantization", key="dl-quant", placeholder="Q4_K_M",
                             help="Hugging Face URLs only; LM Studio picks one for catalog ids.")
        submitted = st.form_submit_button("Download", icon=":material/download:")
    if submitted:
        try:
            name, quantization = ma.download_request(model, quant)
            job = ui.client_for(url).download_model(name, quantization=quantization)
        except (ValueError, AtomError) as e:
            st.error(safe_markdown(getattr(e, "sentence", str(e))), icon=":material/error:")
        else:
            ma.record_download(store, url, name, quantization, job)
    active = bool(ma.active_downloads(store, url))
    st.fragment(run_every=1.0 if active else None)(download_progress)(url, active)


def download_progress(url: str, was_active: bool) -> None:
    store = ui.store()
    polled = {v.record_id: v for v in ma.poll_downloads(store, ui.client_for, url)}
    for view in ma.recent_downloads(store, url):
        view = polled.get(view.record_id, view)
        line = f"**{plain_label(view.model)}** · {safe_markdown(ma.progress_line(view.job))}"
        if view.job.status == "failed":
            st.error(line, icon=":material/error:")
        elif view.done:
            st.success(line, icon=":material/check_circle:")
        else:
            st.progress(view.job.fraction or 0.0, text=line)
        if view.error:
            st.caption(f"Last check failed: {plain_label(view.error)}")
    if was_active and not ma.active_downloads(store, url):
        ui.status_for(url, refresh=True)  # a finished download adds a model to the table
        st.rerun(scope="app")
