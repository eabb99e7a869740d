"""The command line and the measured numbers, against the real HTTP double (not mocks)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atom_core.cli import main
from atom_core.history import open_store
from atom_core.server.client import LMStudioClient
from atom_core.types import ChatMessage
from tests.fixtures.lmstudio_double import DoubleServer, serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def double() -> Iterator[DoubleServer]:
    with serve() as server:
        yield server


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_models_table_and_json(double: DoubleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    code, out, _ = run_cli("models")
    assert code == 0
    assert out.splitlines()[0] == f"LM Studio 0.4+ (native API) at {double.url} (/api/v1/models)"
    lines = out.splitlines()
    assert any(line.startswith("●") and "test/alpha" in line for line in lines)
    assert any(line.startswith(" ") and "test/gamma" in line for line in lines)
    code, out, _ = run_cli("models", "--json")
    doc = json.loads(out)
    assert doc["dialect"] == "lmstudio-0.4" and not doc["loaded_only"]
    assert {m["key"] for m in doc["models"]} >= {"test/alpha", "test/beta", "test/gamma"}


def test_chat_streams_to_stdout_prints_metrics_and_records_a_run(
    double: DoubleServer, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    code, out, err = run_cli("chat", "--model", "test/alpha", "--max-tokens", "5", "Hi")
    assert code == 0
    assert out.strip() == "Reply from test/alpha: one two"
    assert "TTFT" in err and "5 tokens (usage)" in err and "finish length" in err
    (run,) = open_store(isolated_env).runs()
    assert run["source"] == "cli" and run["model"] == "test/alpha" and run["output_tokens"] == 5


def test_chat_reasoning_goes_to_stderr(double: DoubleServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    code, out, err = run_cli("chat", "--model", "test/beta", "--no-record", "Why?")
    assert code == 0 and out.startswith("Reply from test/beta") and "[reasoning]" in err


def test_cli_errors_are_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_SERVER_URL", "http://127.0.0.1:9")  # discard port: nothing there
    code, out, err = run_cli("models")
    assert code == 1 and out == ""
    assert err.startswith("error: Can't reach a model server at http://127.0.0.1:9.")
    assert "Traceback" not in err


def test_unknown_model_from_the_cli(double: DoubleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    code, _, err = run_cli("chat", "--model", "nope/nope", "--no-record", "Hi")
    assert code == 1 and "no model called “nope/nope”" in err


def test_python_dash_m_entry_point(double: DoubleServer, isolated_env: Path) -> None:
    env = dict(os.environ, ATOM_SERVER_URL=double.url, ATOM_DATA_DIR=str(isolated_env))
    done = subprocess.run([sys.executable, "-m", "atom_core", "models", "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["route"] == "/api/v1/models"


@pytest.mark.parametrize(("ttft_ms", "gap_ms"), [(400, 40), (250, 25)])
def test_measured_ttft_and_speed_match_the_servers_settings(ttft_ms: int, gap_ms: int) -> None:
    """The metrics are the product: against a server that waits ttft_ms before the first token
    and gap_ms between tokens, ATOM must measure both within 5 %."""
    config = {"models": [{"key": "timed", "loaded": True, "ttft_ms": ttft_ms,
                          "token_gap_ms": gap_ms, "reply_tokens": 40}]}
    with serve(config) as server, LMStudioClient(server.url) as client:
        client.chat("timed", [ChatMessage("user", "warm up")])  # connection set up once
        m = client.chat("timed", [ChatMessage("user", "go")]).metrics()
    expected_tps = 1000 / gap_ms
    print(f"set TTFT {ttft_ms} ms, measured {m.ttft_s * 1000:.1f} ms; "  # type: ignore[operator]
          f"set {expected_tps:.1f} tok/s, measured {m.decode_tps:.2f} tok/s")
    assert m.ttft_s == pytest.approx(ttft_ms / 1000, rel=0.05)
    assert m.decode_tps == pytest.approx(expected_tps, rel=0.05)
    assert m.itl_p50_s == pytest.approx(gap_ms / 1000, rel=0.05)
    assert m.output_tokens == 40 and m.tokens_source == "usage"
