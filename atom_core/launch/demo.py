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

Three rooms: demo_install.py (where the engine lives, installing it once), demo_engine.py (its
processes), and this module (the launcher: `make run`, the status file, the sidebar's words);
this module re-exports the other two's names, so callers need only `launch.demo`.

Paths (each can be moved with an environment variable):
  .venv-demo/            the engine's virtualenv (ATOM_DEMO_VENV)
  ~/.cache/atom-wheels/  the llama-cpp-python wheel, built from source once (ATOM_WHEEL_CACHE)
  ~/.cache/atom/         the assembled GGUF file and the engines' logs (ATOM_CACHE_DIR)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from ..config import process_environ, settings_from_env
from ..errors import DemoEngineNotReady
from ..files import private_dir
from ..server.demo_model import MODEL_ALIASES
from ..settings.store import initial_server_url, open_settings, server_token
from ..url import ServerURL

# Re-exported: `launch.demo` is the one name callers (the app, tests, bench) use.
from .demo_engine import (  # noqa: F401
    DEFAULT_MAX_TOKENS,
    READY_TIMEOUT_S,
    DemoEngine,
    EngineProcess,
    app_env,
    die_with_parent,
    free_port,
    start_engine,
    wait_ready,
)
from .demo_install import (  # noqa: F401
    BUILD_RANGE,
    ENGINE_PACKAGE,
    MODEL_FILE,
    REQUIREMENTS,
    ROOT,
    STAMP,
    DemoEngineError,
    DemoPaths,
    Say,
    build_percent,
    build_wheel,
    cached_wheel,
    clock,
    demo_paths,
    engine_installed,
    engine_version,
    ensure_model,
    install_engine,
    log_tail,
    model_ready,
    requirements_digest,
    short_path,
)

if TYPE_CHECKING:
    from ..server.client import ServerStatus

LABEL = "Gemma 3 270M on CPU"
NOTICE = (
    f"Bundled demo engine ({LABEL}): a tiny base model for trying ATOM, not a chat assistant, "
    "so expect short, often odd answers. To use your own models, start LM Studio's server "
    "(`lms server start`) and put its URL in the Server box."
)
STATUS_FILE = "demo-status.json"


# -- which servers are the demo engine --------------------------------------------------------


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
    say(f"Demo engine ready in {demo.started_in_s:.1f} s (logs in {short_path(paths.logs)}).")
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
                 f"{dead.process.returncode}). Last lines of {dead.log}:\n{log_tail(dead.log)}")
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
                            cwd=ROOT, env=dict(env), preexec_fn=die_with_parent)
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
            _say(f"Demo engine installed ({clock(time.monotonic() - t0)}).")
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
