"""Real-engine tests: ATOM against the bundled demo engine (llama.cpp's server with Gemma 3 270M on
the CPU), started once for the session as two processes, exactly as `make run` starts it.

Skipped, with the reason in pytest's summary, when the engine is not installed (`make demo`
installs it; `.ci/run` does so and sets ATOM_REQUIRE_ENGINE=1, which turns the skip into a
failure). Generous timeouts, short replies (max_tokens 24) and temperature 0 keep them steady on
a busy 2-core machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from atom_core.launch import demo
from atom_core.server.client import LMStudioClient
from tests.fixtures.engine import START_TIMEOUT_S, installed_engine


@pytest.fixture(scope="session")
def demo_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.DemoEngine]:
    """Both engine processes, started once, stopped at the end of the session."""
    paths = installed_engine()
    logs = tmp_path_factory.mktemp("engine-logs")
    with demo.DemoEngine.start(paths=paths, log_dir=logs, timeout=START_TIMEOUT_S) as engine:
        yield engine


@pytest.fixture
def client_a(demo_engine: demo.DemoEngine) -> Iterator[LMStudioClient]:
    with LMStudioClient(demo_engine.urls[0]) as c:
        yield c


@pytest.fixture
def client_b(demo_engine: demo.DemoEngine) -> Iterator[LMStudioClient]:
    with LMStudioClient(demo_engine.urls[1]) as c:
        yield c
