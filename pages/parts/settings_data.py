"""Settings, the Data tab: where the history lives, export everything, import an export (checked
whole first: a refused file shows one sentence per problem and writes nothing), delete
everything."""

from __future__ import annotations

import streamlit as st

# imported for their record types, which an import checks (atom_core.records)
from atom_core import arena, chat  # noqa: F401
from atom_core.history import HistoryStore, backup
from atom_core.render import safe_markdown
from atom_core.server.admin import human_bytes
from atom_core.settings.store import SettingsStore


def data_tab(store: HistoryStore, settings: SettingsStore) -> None:
    st.markdown(f"Your history lives in `{store.data_dir}` "
                f"({human_bytes(store.size_bytes())}, {len(store.list_conversations())} "
                "conversations). Set ATOM_DATA_DIR to keep it elsewhere.")
    st.download_button("Export everything (JSON)", lambda: backup.export_json(store, settings),
                       file_name="atom-export.json", mime="application/json",
                       icon=":material/download:", on_click="ignore",
                       help="Conversations, runs and every other record, and your settings. "
                       "Never your API tokens.")
    upload = st.file_uploader("Import an ATOM export", type="json", key="import-file")
    if upload is not None and st.button("Import", icon=":material/upload:"):
        try:
            report = backup.import_everything(store, settings, upload.getvalue())
        except backup.ImportRefused as e:
            st.error(safe_markdown(e.sentence), icon=":material/error:")
            if len(e.problems) > 1:
                st.markdown("\n".join(f"- {safe_markdown(problem)}" for problem in e.problems))
        else:
            st.success(safe_markdown(report.sentence), icon=":material/check_circle:")
    if not st.session_state.get("confirm-wipe"):
        st.button("Delete everything…", icon=":material/delete_forever:",
                  on_click=st.session_state.__setitem__, args=("confirm-wipe", True))
        return
    st.warning("Delete every conversation, run and record in this folder? This can't be undone.")
    also = st.checkbox("Also forget server profiles, tokens, presets and templates")
    a, b = st.columns(2)
    if a.button("Yes, delete", type="primary"):
        backup.delete_history(store)
        if also:
            settings.forget_everything()
        st.session_state.pop("confirm-wipe", None)
        st.session_state.pop("_atom_machine_id", None)  # app.py records this machine again
        st.session_state["settings-notice"] = "Deleted everything."
        st.rerun()
    b.button("Cancel", on_click=st.session_state.pop, args=("confirm-wipe", None))
