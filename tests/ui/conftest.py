"""AppTest fixtures: the app against respx-mocked LM Studio routes, with a fresh data folder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
import streamlit as st
from streamlit.runtime.scriptrunner_utils.script_run_context import (
    SCRIPT_RUN_CONTEXT_ATTR_NAME,
)
from streamlit.testing.v1 import AppTest

from atom_core import store as store_module

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://lms.test:1234"


@pytest.fixture(autouse=True)
def fresh_app_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """st.cache_resource and open_store() live for the whole process: clear them per test."""
    monkeypatch.setenv("ATOM_SERVER_URL", BASE)
    st.cache_resource.clear()
    store_module._STORES.clear()
    yield
    st.cache_resource.clear()
    store_module._STORES.clear()


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def new_app() -> AppTest:
    """A new browser session on the app (what a reload gives)."""
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)


def press_stop() -> None:
    """Does what the chat input's Stop button does: asks the running script to stop.

    Call it from any thread while the script runs (here: from inside a mocked HTTP stream)."""
    for t in threading.enumerate():
        ctx = getattr(t, SCRIPT_RUN_CONTEXT_ATTR_NAME, None)
        if ctx is not None and ctx.script_requests is not None:
            ctx.script_requests.request_stop()
            return
    raise AssertionError("no running script to stop")
