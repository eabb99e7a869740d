"""AppTest fixtures: the app against respx-mocked LM Studio routes, with a fresh data folder."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.script_run_context import (
    SCRIPT_RUN_CONTEXT_ATTR_NAME,
)
from streamlit.testing.v1 import AppTest

from atom_core.history import reset_for_tests

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://lms.test:1234"


@pytest.fixture(autouse=True)
def fresh_app_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """st.cache_resource and open_store() live for the whole process: clear them per test."""
    monkeypatch.setenv("ATOM_SERVER_URL", BASE)
    st.cache_resource.clear()
    reset_for_tests()
    yield
    st.cache_resource.clear()
    reset_for_tests()


@pytest.fixture(autouse=True)
def navigation_v2_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps AppTest on st.navigation (v2) semantics on every run.

    Because a folder named `pages/` sits next to app.py, Streamlit starts in its legacy (v1)
    mode and only leaves it when app.py calls st.navigation. A real server does that once per
    process. AppTest resets the flag before every run, so from the second run on it would run
    pages/chat.py alone, without app.py and its sidebar. This keeps the flag where the real
    server has it."""
    original = PagesManager.__init__

    def init(self: PagesManager, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


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
