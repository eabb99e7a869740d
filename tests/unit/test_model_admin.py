"""The Models page's logic: table, filters, load config, applied-vs-asked, the lms command,
downloads kept in the store, auto-unload targets."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import httpx
import pandas as pd
import pytest
import respx

from atom_core.history.tinydb_store import TinyDBHistoryStore
from atom_core.server import admin as ma
from atom_core.server.client import LMStudioClient
from atom_core.types import (
    Dialect,
    DownloadJob,
    LoadConfig,
    LoadedInstance,
    LoadResult,
    ModelInfo,
    ModelList,
)
from tests.fixtures.payloads import BASE, NATIVE_MODELS

GEMMA = ModelInfo(
    key="google/gemma-4-26b-a4b", display_name="Gemma 4 26B A4B", publisher="google",
    architecture="gemma4", quantization="Q4_K_M", size_bytes=17_990_911_801,
    params="26B-A4B", max_context=262144, format="gguf", capabilities=("vision", "tools"),
    loaded_instances=(LoadedInstance(id="google/gemma-4-26b-a4b", config={
        "context_length": 4096, "eval_batch_size": 512, "parallel": 4, "flash_attention": True,
        "num_experts": 8, "offload_kv_cache_to_gpu": False}),),
)
QWEN = ModelInfo(key="qwen/qwen3-4b", display_name="Qwen3 4B", publisher="qwen",
                 architecture="qwen3", quantization="4bit", params="4B", max_context=32768,
                 format="mlx", size_bytes=2_000_000_000)
EMBED = ModelInfo(key="nomic-embed", type="embedding", display_name="Nomic Embed",
                  max_context=2048, format="gguf")


def listing(*models: ModelInfo, dialect: Dialect = Dialect.LMSTUDIO_04) -> ModelList:
    return ModelList(models=models, dialect=dialect, route="/api/v1/models")


# -- table and filters -----------------------------------------------------------------------


def test_instance_summary_lists_what_the_server_reports() -> None:
    assert ma.instance_summary(GEMMA.loaded_instances[0].config) == (
        "ctx 4096 · batch 512 · 4 parallel · flash attn on · KV on GPU off · 8 experts")
    assert ma.instance_summary({"context_length": 2048, "num_experts": 0}) == "ctx 2048"


def test_models_frame_has_every_column_and_numbers_stay_numbers() -> None:
    frame = ma.models_frame([GEMMA, QWEN, EMBED])
    assert list(frame["Name"]) == ["Gemma 4 26B A4B", "Qwen3 4B", "Nomic Embed"]
    assert list(frame["Type"]) == ["LLM", "LLM", "Embedding"]
    assert list(frame["Loaded"]) == ["●", "○", "○"]
    assert frame["Size (GB)"].iloc[0] == pytest.approx(17.99)
    assert frame["Max context"].iloc[0] == 262144
    assert frame["Capabilities"].iloc[0] == "vision, tools"
    live = frame["Instances (live config)"]
    assert live.iloc[0].startswith("google/gemma-4-26b-a4b: ctx 4096")
    assert pd.isna(live.iloc[1])


def test_unknown_load_state_is_a_question_mark() -> None:
    frame = ma.models_frame([ModelInfo(key="x", load_state_known=False)])
    assert list(frame["Loaded"]) == ["?"]


def test_filter_by_text_type_capability_and_load_state() -> None:
    models = [GEMMA, QWEN, EMBED]
    assert ma.filter_models(models, query="GOOGLE q4") == [GEMMA]
    assert ma.filter_models(models, query="mlx") == [QWEN]
    assert ma.filter_models(models, types=["Embedding"]) == [EMBED]
    assert ma.filter_models(models, capabilities=["vision"]) == [GEMMA]
    assert ma.filter_models(models, loaded_only=True) == [GEMMA]
    assert ma.filter_models(models, query="nothing-like-this") == []


# -- load ----------------------------------------------------------------------------------------


def test_moe_detection() -> None:
    assert ma.is_moe(GEMMA)  # params 26B-A4B, and its instance reports 8 experts
    assert ma.is_moe(ModelInfo(key="m", architecture="qwen3moe"))
    assert ma.is_moe(ModelInfo(key="m", params="30B-A3B"))
    assert not ma.is_moe(QWEN)


def test_build_load_config_bounds_and_drops_what_does_not_apply() -> None:
    cfg = ma.build_load_config(GEMMA, context_length=16384, eval_batch_size=256,
                               flash_attention=True, offload_kv_cache_to_gpu=False,
                               num_experts=4)
    assert cfg == LoadConfig(context_length=16384, eval_batch_size=256, flash_attention=True,
                             offload_kv_cache_to_gpu=False, num_experts=4)
    with pytest.raises(ValueError, match="at most 262,144"):
        ma.build_load_config(GEMMA, context_length=300_000)
    with pytest.raises(ValueError):
        ma.build_load_config(GEMMA, eval_batch_size=0)
    # MLX and embedding models: only the context length applies.
    assert ma.build_load_config(QWEN, context_length=8192, flash_attention=True,
                                num_experts=2) == LoadConfig(context_length=8192)
    assert ma.build_load_config(EMBED, eval_batch_size=64) == LoadConfig()
    # Experts only for mixtures of experts.
    dense = ModelInfo(key="d", architecture="llama", format="gguf")
    assert ma.build_load_config(dense, num_experts=4) == LoadConfig()


def test_applied_rows_say_what_changed_was_refused_or_defaulted() -> None:
    asked = LoadConfig(context_length=999_999, flash_attention=True, num_experts=4)
    result = LoadResult(instance_id="m", load_time_s=1.5, rejected_keys=("num_experts",),
                        applied_config={"context_length": 32768, "flash_attention": True,
                                        "eval_batch_size": 512})
    rows = {r.setting: r for r in ma.applied_rows(asked, result)}
    assert rows["Context length"].applied == "32768"
    assert rows["Context length"].note == "the server applied a different value"
    assert rows["Flash attention"].note == "as asked" and rows["Flash attention"].applied == "on"
    assert rows["Experts"].note == "rejected by the server: loaded without it"
    assert rows["Eval batch size"].asked == "server default"
    assert rows["Eval batch size"].note == "server default"


def test_applied_rows_fall_back_to_the_live_listing_when_not_echoed() -> None:
    asked = LoadConfig(context_length=8192)
    result = LoadResult(instance_id="m")
    (row,) = [r for r in ma.applied_rows(asked, result, {"context_length": 8192, "parallel": 4})
              if r.setting == "Context length"]
    assert row.note == "as asked"
    none = ma.applied_rows(asked, result, None)
    assert [(r.setting, r.applied, r.note) for r in none] == [
        ("Context length", "not reported", "not reported by the server")]


def test_load_summary() -> None:
    assert ma.load_summary("m", LoadResult(instance_id="m:2", load_time_s=9.099)) == (
        "Loaded model m as instance “m:2” in 9.10 s.")


def test_lms_command_quotes_and_includes_only_what_is_set() -> None:
    cmd = ma.lms_load_command("google/gemma-4-26b-a4b", context_length=16384, gpu=0.5,
                              parallel=2, ttl=3600, identifier="my model")
    assert cmd == ("lms load google/gemma-4-26b-a4b --context-length 16384 --gpu 0.5 "
                   "--parallel 2 --ttl 3600 --identifier 'my model'")
    assert shlex.split(cmd)[-1] == "my model"
    assert ma.lms_load_command("a b", gpu="max") == "lms load 'a b' --gpu max"
    assert ma.lms_load_command("m") == "lms load m"
    with pytest.raises(ValueError):
        ma.lms_load_command("m", gpu=1.5)
    # A hostile identifier stays one argument.
    evil = ma.lms_load_command("m", identifier="x; rm -rf /")
    assert shlex.split(evil)[-2:] == ["--identifier", "x; rm -rf /"]


def test_missing_features_per_dialect() -> None:
    def of(dialect: Dialect, *models: ModelInfo) -> list[str]:
        unknown = ModelInfo(key="m", load_state_known=False)
        return ma.missing_features(ModelList(models=models or (unknown,),
                                             dialect=dialect, route="/"))

    assert of(Dialect.LMSTUDIO_04) == []
    v03 = of(Dialect.LMSTUDIO_03)
    assert any("Load, unload and download" in s for s in v03)
    openai = of(Dialect.OPENAI)
    assert len(openai) == 3 and any("loaded" in s for s in openai)


def test_the_demo_engine_is_not_said_to_hide_what_atom_knows_of_it() -> None:
    """Models said "/v1/models does not say which are loaded" above a table showing the demo
    model loaded, with its size and context (issue 18)."""
    from atom_core.server.demo_model import describe_models

    bare = ModelList(models=(ModelInfo(key="gemma-3-270m-a"),), dialect=Dialect.OPENAI,
                     route="/v1/models", loaded_only=True)
    described = describe_models(bare)
    (said,) = ma.missing_features(described)
    assert said.startswith("Load, unload and download")
    (m,) = described.models
    assert m.is_loaded and m.load_state_known and m.quantization == "Q4_K_M"
    assert m.size_bytes == 253_113_024 and m.max_context == 32768
    other = ModelList(models=(ModelInfo(key="llama-3"),), dialect=Dialect.OPENAI, route="/v1")
    assert describe_models(other) is other  # another server's ids: nothing assumed


# -- auto-unload ---------------------------------------------------------------------------------


def test_auto_unload_only_atom_loaded_unless_opted_in() -> None:
    two = ModelInfo(key="a", loaded_instances=(LoadedInstance(id="a"), LoadedInstance(id="a:2")))
    other = ModelInfo(key="b")
    lst = listing(two, other)
    assert ma.auto_unload_targets(lst, "a", "b", loaded_by_atom={"a:2"}) == ["a:2"]
    assert ma.auto_unload_targets(lst, "a", "b", loaded_by_atom=set(), any_instance=True) == [
        "a", "a:2"]
    assert ma.auto_unload_targets(lst, "a", "a:2", loaded_by_atom={"a", "a:2"}) == []
    assert ma.auto_unload_targets(lst, None, "b", loaded_by_atom={"a"}) == []
    assert ma.auto_unload_targets(lst, "gone", "b", loaded_by_atom={"gone"}) == []
    lst03 = listing(two, other, dialect=Dialect.LMSTUDIO_03)
    assert ma.auto_unload_targets(lst03, "a", "b", loaded_by_atom={"a"}) == []


# -- downloads -----------------------------------------------------------------------------------


def test_download_request_checks_ids_urls_and_quantization() -> None:
    assert ma.download_request(" ibm/granite-4-micro ") == ("ibm/granite-4-micro", None)
    url = "https://huggingface.co/lmstudio-community/gpt-oss-20b-GGUF"
    assert ma.download_request(url, "Q4_K_M") == (url, "Q4_K_M")
    with pytest.raises(ValueError, match="only with a Hugging Face URL"):
        ma.download_request("ibm/granite-4-micro", "Q4_K_M")
    with pytest.raises(ValueError, match="Hugging Face"):
        ma.download_request("https://example.com/x/y")
    with pytest.raises(ValueError, match="publisher/model"):
        ma.download_request("granite")
    with pytest.raises(ValueError, match="Enter a model"):
        ma.download_request("")


def test_progress_line() -> None:
    job = DownloadJob(status="downloading", job_id="j", total_bytes=2_000_000_000,
                      downloaded_bytes=500_000_000, bytes_per_second=50_000_000)
    assert ma.progress_line(job) == "500.0 MB of 2.0 GB · 50.0 MB/s · about 30 s left"
    eta = DownloadJob(status="downloading", job_id="j", estimated_completion=
                      "2025-10-03T15:43:12.000Z")
    now = 1759506192.0 - 125  # 2 min 5 s before
    assert ma.progress_line(eta, now) == "about 2 min 5 s left"
    assert ma.progress_line(DownloadJob(status="completed", total_bytes=10)) == (
        "Completed · 10 B.")
    assert ma.progress_line(DownloadJob(status="failed")).startswith("Failed")
    assert ma.progress_line(DownloadJob(status="already_downloaded")) == "Already downloaded."


def test_downloads_survive_in_the_store_and_polling_updates_them(tmp_path: Path) -> None:
    store = TinyDBHistoryStore(tmp_path, durable=False)
    job = DownloadJob(status="downloading", job_id="job_1", total_bytes=1000)
    ma.record_download(store, BASE, "ibm/granite", None, job)
    ma.record_download(store, BASE, "already/here", None, DownloadJob(status="already_downloaded"))
    assert [v.model for v in ma.active_downloads(store)] == ["ibm/granite"]
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.get("/api/v1/models/download/status/job_1").respond(json={
            "job_id": "job_1", "status": "downloading", "total_size_bytes": 1000,
            "downloaded_bytes": 400, "bytes_per_second": 100})
        (view,) = ma.poll_downloads(store, lambda url: client)
        assert view.job.fraction == 0.4 and not view.error
        mock.get("/api/v1/models/download/status/job_1").respond(json={
            "job_id": "job_1", "status": "completed", "total_size_bytes": 1000,
            "downloaded_bytes": 1000})
        (view,) = ma.poll_downloads(store, lambda url: client)
        assert view.done
    assert ma.active_downloads(store) == []  # nothing left to poll
    recent = ma.recent_downloads(store)
    assert [(v.model, v.job.status) for v in recent] == [
        ("already/here", "already_downloaded"), ("ibm/granite", "completed")]


def test_polling_a_job_the_server_forgot_marks_it_failed(tmp_path: Path) -> None:
    store = TinyDBHistoryStore(tmp_path, durable=False)
    ma.record_download(store, BASE, "x/y", None, DownloadJob(status="downloading", job_id="j0"))
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.get("/api/v1/models/download/status/j0").respond(
            404, json={"error": {"type": "job_not_found", "message": "No job j0"}})
        (view,) = ma.poll_downloads(store, lambda url: client)
    assert "no download job" in view.error
    assert ma.active_downloads(store) == []


def test_polling_an_unreachable_server_keeps_the_job(tmp_path: Path) -> None:
    store = TinyDBHistoryStore(tmp_path, durable=False)
    ma.record_download(store, BASE, "x/y", None, DownloadJob(status="downloading", job_id="j0"))
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.get("/api/v1/models/download/status/j0").mock(
            side_effect=httpx.ConnectError("refused"))
        (view,) = ma.poll_downloads(store, lambda url: client)
    assert "Can't reach" in view.error and len(ma.active_downloads(store)) == 1


def test_the_native_listing_fixture_parses_into_the_table() -> None:
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.get("/api/v1/models").respond(json=json.loads(json.dumps(NATIVE_MODELS)))
        models = client.list_models().models
    frame = ma.models_frame(models)
    assert list(frame["Key"]) == [m["key"] for m in NATIVE_MODELS["models"]]


def test_display_table_drops_empty_columns_and_blanks_missing_text() -> None:
    frame = pd.DataFrame({"Name": ["a", "b"], "Params": ["1B", None],
                          "Size (GB)": [1.5, None], "Format": [None, None]})
    shown = ma.table_for_display(frame)
    assert list(shown.columns) == ["Name", "Params", "Size (GB)"]
    assert list(shown["Params"]) == ["1B", ""]
    assert pd.isna(shown["Size (GB)"].iloc[1])  # numbers stay numbers (and sortable)


@pytest.mark.parametrize(("status", "body"), [
    (200, {"job_id": "j0", "status": "failed", "error": "disk full"}),
    (500, {"job_id": "j0", "status": "failed", "error": {"message": "disk full"}}),
    (200, {"job_id": "j0", "status": "FAILED"}),
])
def test_a_status_that_says_failed_ends_the_polling(tmp_path: Path, status: int,
                                                    body: dict[str, object]) -> None:
    """Issue 23: a status answer saying failed alongside an error (or in capitals) was taken
    for a failed check, so the page asked again every second for as long as it stayed open."""
    store = TinyDBHistoryStore(tmp_path, durable=False)
    ma.record_download(store, BASE, "x/y", None, DownloadJob(status="downloading", job_id="j0"))
    with respx.mock(base_url=BASE) as mock, LMStudioClient(BASE) as client:
        mock.get("/api/v1/models/download/status/j0").respond(status, json=body)
        (view,) = ma.poll_downloads(store, lambda url: client)
    assert view.job.status == "failed"
    assert ma.active_downloads(store) == []
