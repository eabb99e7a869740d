"""The main job, as a newcomer meets it: `make run` on a machine where no model server answers
starts the bundled demo engine, a browser chats with its model through the app, and the engines
are still answering a minute later (issue 18: they used to be killed the moment they were ready).
A real process tree (make, the launcher, streamlit, two llama.cpp servers) and real Chromium."""

from __future__ import annotations

import os
import pty
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from atom_core.launch import demo
from tests.fixtures.browser import CHROMIUM, ROOT, free_port, save_shot, wait_idle
from tests.fixtures.engine import installed_engine

pytestmark = [
    pytest.mark.engine,
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM}"),
]

ALIVE_FOR_S = 60.0


class MakeRun:
    """`make run` in a pseudo-terminal, as a user types it; its output collected as it comes."""

    def __init__(self, tmp_path: Path, env: dict[str, str], port: int) -> None:
        venv = tmp_path / "venv"  # stands in for .venv: the test interpreter
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        (venv / "bin" / "python").chmod(0o755)
        (venv / ".app").touch()
        self.out = bytearray()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: make in a terminal
            os.chdir(ROOT)
            os.execvpe("make", ["make", "--no-print-directory", "run", f"VENV={venv}",
                                f"ARGS=--server.port={port} --server.headless=true"], env)
        self.code: int | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return
            self.out += data

    def running(self) -> bool:
        if self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code is None

    def text(self) -> str:
        return bytes(self.out).decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := re.search(pattern, self.text()):
                return found
            assert self.running(), f"make run ended early:\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{self.text()}")

    def ctrl_c(self) -> int:
        os.write(self.fd, b"\x03")
        deadline = time.monotonic() + 60
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            raise AssertionError(f"make run did not stop on Ctrl+C:\n{self.text()}")
        self.reader.join(timeout=5)
        os.close(self.fd)
        assert self.code is not None
        return self.code


def answers(url: str, alias: str) -> bool:
    try:
        r = httpx.get(f"{url}/v1/models", timeout=10)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and alias in r.text


def test_make_run_starts_the_demo_engine_a_browser_chats_with_it_and_it_stays_up(
    page: Any, tmp_path: Path
) -> None:
    user = installed_engine()
    cache = tmp_path / "cache"  # the launcher's status file and logs: never the user's home
    cache.mkdir()
    (cache / "models").symlink_to(user.model.parent)  # the installed model, read-only
    port = free_port()
    env = dict(os.environ, ATOM_SERVER_URL=f"http://127.0.0.1:{free_port()}",  # nothing there
               ATOM_DATA_DIR=str(tmp_path / "data"), ATOM_CACHE_DIR=str(cache),
               ATOM_DEMO_VENV=str(user.venv), ATOM_WHEEL_CACHE=str(user.wheels))
    env.pop("ATOM_DEMO", None)  # the default: on
    run = MakeRun(tmp_path, env, port)
    try:
        run.wait_for(r"starting ATOM's bundled demo engine", 60)
        ready = run.wait_for(r"Demo engine ready in", 180)
        ready_at = time.monotonic()
        urls = dict(re.findall(r"(gemma-3-270m-[ab]) answers at (http://127\.0\.0\.1:\d+)",
                               run.text()[:ready.end()]))
        assert set(urls) == set(demo.MODEL_ALIASES), run.text()

        page.goto(f"http://127.0.0.1:{port}")
        box = page.locator("[data-testid=stChatInputTextArea]")
        box.wait_for(timeout=60_000)
        sidebar = page.locator("[data-testid=stSidebar]")
        sidebar.get_by_text("Bundled demo engine (Gemma 3 270M on CPU)").wait_for(
            timeout=60_000)
        sidebar.get_by_text("1 model").first.wait_for(timeout=60_000)
        wait_idle(page, timeout_ms=60_000)
        box.fill("What is the capital of France?")
        box.press("Enter")
        page.get_by_role("button", name="Regenerate").wait_for(timeout=180_000)
        wait_idle(page, timeout_ms=180_000)
        reply = page.locator("[data-testid=stChatMessage]").last
        text = reply.locator("[data-testid=stMarkdownContainer]").first.inner_text()
        caption = reply.locator("[data-testid=stCaptionContainer]").inner_text()
        assert re.search(r"[A-Za-z]{2,}", text) and "▌" not in text, text
        assert "gemma-3-270m-a" in caption and "tok/s" in caption, caption
        assert "Can't reach" not in page.locator("[data-testid=stApp]").inner_text()
        save_shot(page, "demo-chat.png", docs=True)  # the README's picture of the demo engine

        # A minute after "ready", both engines still answer, and still generate.
        time.sleep(max(0.0, ALIVE_FOR_S - (time.monotonic() - ready_at)))
        for alias, url in urls.items():
            assert answers(url, alias), f"{alias} at {url} stopped answering:\n{run.text()}"
        r = httpx.post(f"{urls['gemma-3-270m-b']}/v1/chat/completions", timeout=120, json={
            "model": "gemma-3-270m-b", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hello."}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].strip()
        assert run.running()
    finally:
        code = run.ctrl_c() if run.running() else run.code
    assert code == 0, run.text()
    assert "Error" not in run.text(), run.text()
    for alias, url in urls.items():  # Ctrl+C stops the engines with the app
        assert not answers(url, alias), f"{alias} still answers after Ctrl+C"
    assert not (cache / demo.STATUS_FILE).exists()
