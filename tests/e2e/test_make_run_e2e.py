"""`make run` in a pseudo-terminal: Ctrl+C stops the app and make exits 0 (no "Error 130" or
"Interrupt"). A real process tree (make, the launcher, streamlit), no browser."""

from __future__ import annotations

import os
import select
import shutil
import time
from pathlib import Path

import pytest

from tests.fixtures.browser import ROOT, free_port

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_ctrl_c_stops_make_run_cleanly(tmp_path: Path) -> None:
    import pty
    import sys

    venv = tmp_path / "venv"  # stands in for .venv: the shared test interpreter
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".app").touch()
    port = free_port()
    env = dict(os.environ, ATOM_DEMO="0", ATOM_SERVER_URL=f"http://127.0.0.1:{free_port()}",
               ATOM_DATA_DIR=str(tmp_path / "data"))
    pid, fd = pty.fork()
    if pid == 0:  # the child: make in a terminal, as a user types it
        os.chdir(ROOT)
        os.execvpe("make", ["make", "run", f"VENV={venv}",
                            f"ARGS=--server.port={port} --server.headless=true"], env)
    out, deadline, pressed = b"", time.monotonic() + 90, None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    break
                if not data:
                    break
                out += data
            if pressed is None and f"127.0.0.1:{port}".encode() in out:
                time.sleep(1.0)
                os.write(fd, b"\x03")  # Ctrl+C
                pressed = time.monotonic()
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert pressed is not None, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "Interrupt" not in text and "Error" not in text, text
