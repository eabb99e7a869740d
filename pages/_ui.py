"""Streamlit glue shared by app.py and the pages: the one client, the one store, the server
status and the model picker. Drawing and session state only; logic lives in atom_core."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

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
    return client_for(server_url())


def store() -> HistoryStore:
    return _store(str(settings_from_env().data_dir))


def server_status(*, refresh: bool = False) -> ServerStatus:
    """The current server's status, re-checked at most every STATUS_MAX_AGE_S seconds."""
    return status_for(server_url(), refresh=refresh)


def status_for(url: str, *, refresh: bool = False) -> ServerStatus:
    """Any known server's status (models included), cached per session for a few seconds."""
    cache: dict[str, tuple[float, ServerStatus]] = st.session_state.setdefault("_statuses", {})
    hit = cache.get(url)
    if not refresh and hit is not None and time.monotonic() - hit[0] < STATUS_MAX_AGE_S:
        return hit[1]
    status = client_for(url).status()
    cache[url] = (time.monotonic(), status)
    return status


@dataclass(frozen=True, slots=True)
class ServerChoice:
    """A server the user can pick models from."""

    name: str
    url: str
    token: str | None = None


def servers() -> list[ServerChoice]:
    """Every server ATOM knows this session: the current one first, then any extra servers
    (ATOM_EXTRA_SERVERS, comma-separated URLs, e.g. the second demo engine)."""
    settings = settings_from_env()
    out = [ServerChoice(name="Current server", url=server_url(), token=settings.api_token)]
    extra = os.environ.get("ATOM_EXTRA_SERVERS", "")
    for i, raw in enumerate(u for u in extra.split(",") if u.strip()):
        url = normalize_base_url(raw)
        if all(c.url != url for c in out):
            out.append(ServerChoice(name=f"Server {i + 2}", url=url, token=settings.api_token))
    return out


def client_for(url: str) -> LMStudioClient:
    """The shared client for a known server (its token from the server list)."""
    token = next((s.token for s in servers() if s.url == url), settings_from_env().api_token)
    return _client(normalize_base_url(url), token)


def set_server_url(url: str) -> None:
    st.session_state.server_url = normalize_base_url(url)


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
