"""Starts the fidelity benchmark's test server: the C one (bench/fidelity_server.c), compiled on
demand, or the Python asyncio one (tests/fixtures/async_server.py) when there is no C compiler.

The C server sends exactly the bytes the Python server would: this module builds them with
async_server.build_chunks and hands them over in a script file, so both servers speak the same
wire format and the clients parse them the same way. Both answer `/__stats` and `/__reset`
with their own lateness (how long after its due time each token was written).

    with start_server(ttft_s=0.2, tokens_per_s=50) as srv:
        srv.url, srv.kind  # "c" or "python"

Compiled binaries are cached by the source's hash under $XDG_CACHE_HOME/atom/bench (default
~/.cache/atom/bench); set ATOM_BENCH_PY_SERVER=1 to use the Python server anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.async_server import ServerSpec, build_chunks  # noqa: E402

SOURCE = Path(__file__).with_name("fidelity_server.c")
MODELS = ("plain", "reasoner", "llama")


@dataclass(slots=True)
class RunningServer:
    url: str
    kind: str  # "c" or "python"
    proc: subprocess.Popen[str]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "atom" / "bench"


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def build() -> Path | None:
    """The compiled server (built once per source version), or None without a C compiler or
    when the build fails (the reason is printed)."""
    source = SOURCE.read_bytes()
    binary = cache_dir() / f"fidelity_server-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return binary
    cc = compiler()
    if cc is None:
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".tmp{os.getpid()}")
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(tmp), str(SOURCE)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"Building {SOURCE.name} with {cc} failed:\n{done.stderr}", file=sys.stderr)
        return None
    os.replace(tmp, binary)
    return binary


def write_script(spec: ServerSpec, path: Path) -> None:
    """The bytes the C server sends, built by the Python server's own code."""
    with path.open("wb") as f:
        f.write(b"ATOMFID1\n")
        for model in MODELS:
            tokens, tail = build_chunks(model, spec)
            f.write(b"model %s %d\n" % (model.encode(), len(tokens)))
            for tok in tokens:
                f.write(b"%d\n%s" % (len(tok), tok))
            f.write(b"tail %d\n%s" % (len(tail), tail))
        listing = json.dumps({"object": "list", "data": [
            {"id": m, "object": "model"} for m in MODELS]}).encode()
        f.write(b"listing %d\n%s" % (len(listing), listing))


@contextlib.contextmanager
def start_server(*, ttft_s: float = 0.2, tokens_per_s: float = 50.0, reply_tokens: int = 64,
                 reasoning_tokens: int = 32, python: bool = False) -> Iterator[RunningServer]:
    """Runs the server in its own process for the `with` block."""
    spec = ServerSpec(ttft_s=ttft_s, tokens_per_s=tokens_per_s, reply_tokens=reply_tokens,
                      reasoning_tokens=reasoning_tokens)
    python = python or bool(os.environ.get("ATOM_BENCH_PY_SERVER"))
    binary = None if python else build()
    with tempfile.TemporaryDirectory(prefix="atom-fidelity-") as tmp:
        if binary is not None:
            script = Path(tmp) / "script"
            write_script(spec, script)
            cmd = [str(binary), "--script", str(script), "--port", "0", "--ttft", str(ttft_s),
                   "--tps", str(tokens_per_s)]
            kind = "c"
        else:
            if not python:
                print("No C compiler found (cc, gcc or clang): the benchmark uses the Python "
                      "asyncio test server, which needs about 1.5 times the C server's CPU per "
                      "token and falls behind sooner when the clients share its cores; its "
                      "lateness is in the table.", file=sys.stderr)
            cmd = [sys.executable, "-m", "tests.fixtures.async_server", "--port", "0",
                   "--ttft", str(ttft_s), "--tps", str(tokens_per_s), "--tokens",
                   str(reply_tokens), "--reasoning-tokens", str(reasoning_tokens)]
            kind = "python"
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith("READY "):
                raise RuntimeError(f"the {kind} fidelity server did not start: {line!r}")
            yield RunningServer(url=line.split()[1], kind=kind, proc=proc)
        finally:
            proc.terminate()
            proc.wait(10)
