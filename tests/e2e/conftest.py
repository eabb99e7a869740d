"""End-to-end harness: the LM Studio double and `streamlit run app.py` as real processes, driven
by Debian's chromium through Playwright. Screenshots land in test-output/e2e/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.browser import (
    CHROMIUM,
    App,
    Double,
    start_app,
    start_double,
    stop,
)

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"no chromium at {CHROMIUM}: browser tests NOT run "
                                       "(`make test` installs it when run as root)")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)










@pytest.fixture
def double(tmp_path: Path) -> Iterator[Double]:
    d = start_double()
    yield d
    stop(d.process)






@pytest.fixture
def app(double: Double, tmp_path: Path) -> Iterator[App]:
    a = start_app(double.url, tmp_path / "data", tmp_path)
    yield a
    stop(a.process)
