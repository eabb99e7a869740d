"""Shared fixtures. No test touches the user's real data or real server settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The fast suites first, the browser suites last: Playwright's sync API keeps an event loop
# running in the main thread (on greenlets) until its session-scoped browser closes, and a unit
# test run after it met "asyncio.run() cannot be called from a running event loop" and a
# CPython AST recursion-depth error (CI, a fresh clone). Failures also show sooner this way.
SUITE_ORDER = ("unit", "ui", "integration", "e2e", "engine")


def suite_rank(item: pytest.Item) -> int:
    parts = Path(str(item.path)).parts
    suite = parts[parts.index("tests") + 1] if "tests" in parts else ""
    return SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=suite_rank)  # stable: each suite keeps its own order


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Points ATOM_DATA_DIR, HOME and the cache folders at a fresh temp folder and clears
    server/token settings: no test reads or writes the user's home (a `make test` during a
    `make run` once deleted the running launcher's ~/.cache/atom/demo-status.json)."""
    data = tmp_path / "atom-data"
    monkeypatch.setenv("ATOM_DATA_DIR", str(data))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    for var in ("ATOM_SERVER_URL", "ATOM_API_TOKEN", "LM_API_TOKEN", "ATOM_EXTRA_SERVERS",
                "ATOM_DEMO_ENGINE", "ATOM_DEMO_STATUS", "ATOM_CACHE_DIR", "ATOM_WHEEL_CACHE",
                "ATOM_DEMO_VENV"):
        monkeypatch.delenv(var, raising=False)
    yield data


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common umask, under which a plain mkdir makes a folder 0755 (ATOM's are 0700)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session, shared by tests/e2e and tests/engine: Playwright's
    sync API allows one running instance per thread."""
    from playwright.sync_api import sync_playwright

    from tests.fixtures.browser import CHROMIUM, CHROMIUM_FLAGS

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


# tests/e2e and tests/engine share `browser` and `page`: Playwright's sync API runs one
# instance per thread.
@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    from tests.fixtures.browser import OUTPUT

    OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUTPUT / f"{request.node.name}-final.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
