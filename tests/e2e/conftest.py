"""End-to-end harness: the LM Studio double and `streamlit run app.py` as real processes, driven
by Debian's chromium through Playwright. Screenshots land in test-output/e2e/.

A busy machine is the normal case for ATOM's users (models run on the same laptop), so the suite
can run under load: `ATOM_E2E_BUSY=N` (or `make test-busy`, one per core) starts N busy-loop
processes for the whole session, and the summary reports the load average seen during the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
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

# One core's worth of work that ends by itself if pytest dies (its parent changes).
BUSY_LOOP = ("import os\np = os.getppid()\nwhile os.getppid() == p:\n"
             "    for _ in range(200_000): pass\n")
LOAD_SAMPLE_S = 5.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"no chromium at {CHROMIUM}: browser tests NOT run "
                                       "(`make test` installs it when run as root)")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)


def busy_count() -> int:
    """ATOM_E2E_BUSY as a number of busy processes (0 when unset)."""
    raw = os.environ.get("ATOM_E2E_BUSY", "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise pytest.UsageError(f"ATOM_E2E_BUSY must be a number of busy processes, not {raw!r}")
    return int(raw)


class LoadWatch:
    """Samples the 1-minute load average while the e2e tests run."""

    def __init__(self) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-load-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(LOAD_SAMPLE_S):
            self.samples.append(os.getloadavg()[0])

    def close(self) -> str:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])
        s = self.samples
        return (f"load average (1 min) during the e2e tests: min {min(s):.1f}, "
                f"mean {sum(s) / len(s):.1f}, max {max(s):.1f} ({len(s)} samples)")


_load_report: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def busy_machine() -> Iterator[int]:
    """ATOM_E2E_BUSY=N: N processes keep the CPU busy for the whole e2e session."""
    n = busy_count()
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]
    watch = LoadWatch()
    try:
        yield n
    finally:
        for p in loops:
            p.terminate()
        for p in loops:
            p.wait()
        _load_report.append(watch.close() + (f", with {n} busy processes" if n else ""))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _load_report:
        terminalreporter.write_line(line)


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
