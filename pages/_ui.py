"""Streamlit glue shared by app.py and the pages: the one client, the one store, the server
status and the model picker. Drawing and session state only; logic lives in atom_core."""

from __future__ import annotations

import time

import streamlit as st

from atom_core.client import LMStudioClient, ServerStatus
from atom_core.config import normalize_base_url, settings_from_env
from atom_core.errors import AtomError
from atom_core.store import HistoryStore, open_store
from atom_core.types import ModelInfo

STATUS_MAX_AGE_S = 15.0
LOADED = "●"
NOT_LOADED = "○"


@st.cache_resource(show_spinner=False)
def _client(base_url: str, token: str | None) -> LMStudioClient:
    # One client per server for the whole process: httpx.Client is thread-safe and pools
    # connections, which the arena's parallel streams share.
    return LMStudioClient(base_url, token=token)


@st.cache_resource(show_spinner=False)
def _store(data_dir: str) -> HistoryStore:
    return open_store(data_dir)


def server_url() -> str:
    if "server_url" not in st.session_state:
        st.session_state.server_url = settings_from_env().server_url
    return str(st.session_state.server_url)


def client() -> LMStudioClient:
    return _client(server_url(), settings_from_env().api_token)


def store() -> HistoryStore:
    return _store(str(settings_from_env().data_dir))


def server_status(*, refresh: bool = False) -> ServerStatus:
    """The current server's status, re-checked at most every STATUS_MAX_AGE_S seconds."""
    key = ("status", server_url())
    cached = st.session_state.get("_status")
    if (
        not refresh
        and cached is not None
        and cached[0] == key
        and time.monotonic() - cached[1] < STATUS_MAX_AGE_S
    ):
        return cached[2]  # type: ignore[no-any-return]
    status = client().status()
    st.session_state._status = (key, time.monotonic(), status)
    return status


def set_server_url(url: str) -> None:
    st.session_state.server_url = normalize_base_url(url)
    st.session_state.pop("_status", None)


def model_label(m: ModelInfo) -> str:
    if not m.load_state_known:
        return m.name
    mark = LOADED if m.is_loaded else NOT_LOADED
    extra = " · ".join(x for x in (m.params, m.quantization) if x)
    return f"{mark} {m.name}" + (f"  ({extra})" if extra else "")


def selected_model() -> str | None:
    """The model key picked in the sidebar, or None."""
    value = st.session_state.get("model")
    return str(value) if value else None


def show_error(error: AtomError) -> None:
    st.error(error.sentence, icon=":material/error:")
