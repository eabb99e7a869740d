"""End-to-end harness: the LM Studio double and `streamlit run app.py` as real processes, driven
by Debian's chromium through Playwright. Screenshots land in test-output/e2e/."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUTPUT = ROOT / "test-output" / "e2e"
DOCS_SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"no chromium at {CHROMIUM}: browser tests NOT run "
                                       "(`make test` installs it when run as root)")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Double:
    """The LM Studio double running as its own process."""

    url: str
    process: subprocess.Popen[str]

    def log(self, wait_idle: float = 2.0) -> list[dict[str, Any]]:
        """The request log, after in-flight requests settle (up to `wait_idle` seconds)."""
        r = httpx.get(f"{self.url}/__double/log", params={"wait_idle": wait_idle}, timeout=10)
        return list(r.json())

    def reset(self) -> None:
        httpx.post(f"{self.url}/__double/reset", timeout=5)

    def set_config(self, config: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/__double/config", json=config, timeout=5).raise_for_status()

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.log() if r["path"] == "/v1/chat/completions"]


def start_double(config: dict[str, Any] | None = None, tmp: Path | None = None) -> Double:
    args = [sys.executable, str(ROOT / "tests" / "lmstudio_double.py"), "--port", "0"]
    if config is not None:
        assert tmp is not None
        path = tmp / "double-config.json"
        path.write_text(json.dumps(config))
        args += ["--config", str(path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return Double(url=line.split()[1].strip(), process=proc)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the LM Studio double did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture
def double(tmp_path: Path) -> Iterator[Double]:
    d = start_double()
    yield d
    stop(d.process)


@dataclass
class App:
    url: str
    process: subprocess.Popen[str]
    data_dir: Path
    log_path: Path


def start_app(server_url: str, data_dir: Path, log_dir: Path,
              extra_env: dict[str, str] | None = None) -> App:
    port = free_port()
    env = dict(os.environ)
    env.update({"ATOM_SERVER_URL": server_url, "ATOM_DATA_DIR": str(data_dir),
                "ATOM_DEMO": "0", **(extra_env or {})})
    log_path = log_dir / "streamlit.log"
    with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless=true",
             f"--server.port={port}", "--server.address=127.0.0.1",
             "--browser.gatherUsageStats=false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                return App(url=url, process=proc, data_dir=data_dir, log_path=log_path)
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    stop(proc)
    raise RuntimeError(f"streamlit did not start; see {log_path}:\n{log_path.read_text()}")


@pytest.fixture
def app(double: Double, tmp_path: Path) -> Iterator[App]:
    a = start_app(double.url, tmp_path / "data", tmp_path)
    yield a
    stop(a.process)


# The session's `browser` fixture is in tests/conftest.py: tests/e2e and tests/engine share it,
# because Playwright's sync API runs one instance per thread.


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    OUTPUT.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(OUTPUT / f"{request.node.name}-final.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def wait_idle(pg: Any, timeout_ms: int = 30_000) -> None:
    """Waits until the Streamlit script has finished its current run."""
    pg.wait_for_selector("[data-testid=stApp][data-test-script-state=notRunning]",
                         timeout=timeout_ms)


def open_app(pg: Any, url: str, ready_selector: str = "[data-testid=stSidebar]") -> None:
    """Opens the app and waits for its first run to finish."""
    pg.goto(url)
    pg.wait_for_selector(ready_selector, timeout=30_000)
    wait_idle(pg)


def save_shot(pg: Any, name: str, *, docs: bool = False, full_page: bool = False) -> Path:
    """Saves a screenshot to test-output/e2e/<name>. With `docs=True` and
    ATOM_UPDATE_SCREENSHOTS=1 (`make screenshots`), also refreshes docs/screenshots/<name>,
    the pictures the README shows; a plain `make test` leaves the tracked files alone."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    pg.screenshot(path=str(path), full_page=full_page)
    if docs and os.environ.get("ATOM_UPDATE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / name)
    return path
