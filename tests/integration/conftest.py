"""Integration tests: ATOM's core against real HTTP servers on 127.0.0.1 (the LM Studio-compatible
test server in tests/fixtures/lmstudio_double.py, started by the tests). Every test here is
marked `integration` (`pytest -m "not integration"` runs the rest)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
