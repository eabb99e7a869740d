"""The demo engine's processes: one llama.cpp server per model on a free local port, started
together, checked until they answer, stopped together (DemoEngine).

Each child dies with the launcher (die_with_parent: PR_SET_PDEATHSIG, which fires when the
*thread* that forked the child ends, so the launcher forks from a thread that lives as long
as the engines do).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from ..config import process_environ, settings_from_env
from ..files import private_dir
from ..server.demo_model import MODEL_ALIASES, N_CTX
from .demo_install import (
    ROOT,
    DemoEngineError,
    DemoPaths,
    demo_paths,
    engine_installed,
    log_tail,
)

DEFAULT_MAX_TOKENS = 128  # a reply that sets no Max tokens: long enough to say something
READY_TIMEOUT_S = 120.0


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
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent,
        )
    return EngineProcess(alias=alias, url=f"http://127.0.0.1:{port}", process=proc, log=log)


def die_with_parent() -> None:
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
                    f"{log_tail(engine.log)}"
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
                f"Last lines of {pending[0].log}:\n{log_tail(pending[0].log)}"
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
