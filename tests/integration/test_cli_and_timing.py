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
from atom_core.settings.store import open_settings
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
    (run,) = open_store(isolated_env).run_rows()
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
    """Against a server that waits ttft_ms before the first token and gap_ms between tokens,
    ATOM's figures obey the schedule's floors and stay within a bound load cannot break (no
    timed assertions here, issue 10: accuracy against the clock is bench/bench_fidelity.py's,
    and the arithmetic is pinned in test_metrics.py)."""
    config = {"models": [{"key": "timed", "loaded": True, "ttft_ms": ttft_ms,
                          "token_gap_ms": gap_ms, "reply_tokens": 40}]}
    with serve(config) as server, LMStudioClient(server.url) as client:
        client.chat("timed", [ChatMessage("user", "warm up")])  # connection set up once
        m = client.chat("timed", [ChatMessage("user", "go")]).metrics()
    expected_tps = 1000 / gap_ms
    print(f"set TTFT {ttft_ms} ms, measured {m.ttft_s * 1000:.1f} ms; "  # type: ignore[operator]
          f"set {expected_tps:.1f} tok/s, measured {m.decode_tps:.2f} tok/s")
    assert m.ttft_s is not None and ttft_ms / 1000 <= m.ttft_s < 10 * ttft_ms / 1000
    # the last token is due (40 - 1) gaps after the first token's due time
    assert m.token_offsets_ms[-1] >= ttft_ms + 39 * gap_ms
    assert m.decode_tps is not None and expected_tps / 10 < m.decode_tps < expected_tps * 10
    assert m.itl_p50_s is not None and 0 < m.itl_p50_s < 10 * gap_ms / 1000
    assert m.output_tokens == 40 and m.tokens_source == "usage"


# -- issue 18: failed replies, leading spaces, the server a CLI call goes to ----------------------

SPACED = {"models": [{"key": "t/rome", "reply": " Rome, the capital.", "ttft_ms": 5,
                      "token_gap_ms": 2}]}


def test_a_route_the_server_lacks_is_its_sentence_with_no_figures(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    """POST /api/v1/chat on a plain OpenAI server: one sentence, no '0 tokens · 9 ms' block,
    and the run it records is a failed one without figures."""
    with serve({"dialect": "openai"}) as plain:
        monkeypatch.setenv("ATOM_SERVER_URL", plain.url)
        code, out, err = run_cli("chat", "--model", "test/alpha", "--route", "native", "Hi")
        assert code == 1 and out == ""
        assert err == "error: This server does not offer POST /api/v1/chat.\n"
        code, out, _ = run_cli("chat", "--model", "test/alpha", "--route", "native", "--json",
                               "--no-record", "Hi")
    doc = json.loads(out)
    assert code == 1 and doc["metrics"] is None and "does not offer" in doc["error"]
    (run,) = open_store(isolated_env).run_rows()
    assert run["ok"] is False and "does not offer" in run["error"]
    assert run["e2e_s"] is None and run["output_tokens"] is None and run["ttft_s"] is None


def test_a_reply_is_printed_from_its_first_non_space_character(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    with serve(SPACED) as server:
        monkeypatch.setenv("ATOM_SERVER_URL", server.url)
        code, out, err = run_cli("chat", "--model", "t/rome", "Capital?")
        assert code == 0 and out == "Rome, the capital.\n"
        assert "3 tokens (usage)" in err  # the first token, space and all, still counts
        code, out, _ = run_cli("chat", "--model", "t/rome", "--json", "--no-record", "Capital?")
    doc = json.loads(out)
    assert doc["content"] == "Rome, the capital." and doc["metrics"]["output_tokens"] == 3
    assert len(doc["metrics"]["token_offsets_ms"]) == 3
    (run,) = open_store(isolated_env).run_rows()
    assert run["output_tokens"] == 3


def test_bench_does_not_count_a_reply_without_tokens_as_ok(
    monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    config = {"models": [{"key": "t/empty", "reply": "", "ttft_ms": 5, "token_gap_ms": 2},
                         *SPACED["models"]]}
    with serve(config) as server:
        monkeypatch.setenv("ATOM_SERVER_URL", server.url)
        code, out, _ = run_cli("bench", "--models", "t/empty,t/rome", "--prompt", "Hi",
                               "--repeat", "2")
        assert code == 1
        assert "-- t/empty: 0/2 ok (2 replies without a single token) · " in out
        assert "-- t/rome: 2/2 ok · " in out
        failed = [line for line in out.splitlines() if line.startswith("t/empty")]
        assert len(failed) == 2 and all(
            "FAILED  The server ended the reply without generating a single token." in line
            for line in failed)
        _, out, _ = run_cli("bench", "--models", "t/empty", "--prompt", "Hi", "--json",
                            "--no-record")
    lines = [json.loads(line) for line in out.splitlines()]
    (record,) = [x for x in lines if x["type"] == "record"]
    (summary,) = [x for x in lines if x["type"] == "summary"]
    assert record["ok"] is False and "without generating a single token" in record["error"]
    assert summary["ok"] == 0 and summary["errors"] == 1 and summary["empty"] == 1
    empty_runs = [r for r in open_store(isolated_env).run_rows() if r["model"] == "t/empty"]
    assert len(empty_runs) == 2 and not any(r["ok"] for r in empty_runs)


def test_without_server_or_env_the_cli_uses_the_default_server_saved_in_settings(
    isolated_env: Path,
) -> None:
    """The app's rule: ATOM_SERVER_URL, else the default saved server (with its own token),
    else localhost:1234. Nothing listens on localhost:1234 here."""
    token = "sk-lm-saved000:aaaaaaaaaaaaaaaaaaaa"
    with serve({"api_token": token}) as saved:
        settings = open_settings(isolated_env)
        settings.save_profile("Box", saved.url, token=token)
        code, out, err = run_cli("models", "--json")
        assert code == 0, err
        assert json.loads(out)["server"] == saved.url
        code, out, err = run_cli("chat", "--model", "test/alpha", "--max-tokens", "3", "Hi")
    assert code == 0, err
    assert out.startswith("Reply from test/alpha")
    assert open_store(isolated_env).run_rows()[0]["server"] == saved.url


def test_keepalives_and_no_token_end_at_the_stall_timeout_in_chat_and_bench(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 23 §3: a server that answers and then sends only keep-alive comments is ended by
    ATOM_STALL_TIMEOUT_S (chat) and `bench --stall-timeout` (the load engine) before any
    token, not by the 300 s first-token limit (both ran on before: the double's 60 s of
    keep-alives ended first and the reply was taken as fine)."""
    config = {"models": [{"key": "t/idle", "fail_mode": "stall:0:60000", "ttft_ms": 5}]}
    with serve(config) as server:
        monkeypatch.setenv("ATOM_SERVER_URL", server.url)
        monkeypatch.setenv("ATOM_STALL_TIMEOUT_S", "1")
        code, _, err = run_cli("chat", "--model", "t/idle", "--no-record", "Hi")
        assert code != 0 and "no new token for 1 s" in err, err
        monkeypatch.delenv("ATOM_STALL_TIMEOUT_S")
        code, out, _ = run_cli("bench", "--models", "t/idle", "--prompt", "Hi", "--json",
                               "--no-record", "--stall-timeout", "1")
    (record,) = [x for x in map(json.loads, out.splitlines()) if x["type"] == "record"]
    assert record["ok"] is False and "no new token for 1 s" in record["error"], record


def test_a_blank_prompt_is_one_sentence_and_nothing_is_sent(
    double: DoubleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: `chat ''` (and a prompt of spaces) was sent to the model."""
    monkeypatch.setenv("ATOM_SERVER_URL", double.url)
    for command in (("chat", "--model", "test/alpha", ""), ("chat", "--model", "test/alpha", "  "),
                    ("bench", "--models", "test/alpha", "--prompt", " \n", "--no-record")):
        code, _, err = run_cli(*command)
        assert code == 2 and "Type a message first" in err, (command, err)
    assert [r for r in double.log(wait=1) if r["path"].endswith("/chat/completions")] == []
