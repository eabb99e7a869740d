"""AppTest fixtures: the app against respx-mocked LM Studio routes, with a fresh data folder.
Fixtures only: what test files import (BASE, new_app, press_stop) is in
tests/fixtures/apptest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from atom_core.history import reset_for_tests
from tests.fixtures.apptest import BASE


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
