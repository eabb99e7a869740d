"""The Models page in AppTest against respx-mocked LM Studio routes."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest
import respx
from streamlit.testing.v1 import AppTest

from atom_core.settings.store import open_settings
from tests.fixtures.apptest import BASE, new_app
from tests.fixtures.payloads import AUTH_BODY, NATIVE_MODELS, UNEXPECTED

GEMMA = "google/gemma-4-26b-a4b"


def texts(elements: Any) -> list[str]:
    return [str(e.value) for e in elements]


def models_page(mock: respx.MockRouter, listing: Any = NATIVE_MODELS) -> AppTest:
    if listing is not None:
        mock.get("/api/v1/models").respond(json=listing)
    at = new_app().run()
    at.switch_page("pages/models.py").run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label: str) -> Any:
    found = [b for b in [*at.button, *at.form_submit_button] if b.label == label]
    assert found, f"no button {label!r}: {[b.label for b in at.button]}"
    return found[0]


class Server:
    """A tiny stateful LM Studio: the listing follows loads and unloads."""

    def __init__(self) -> None:
        self.listing = copy.deepcopy(NATIVE_MODELS)

    def list(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=self.listing)

    def model(self, key: str) -> dict[str, Any]:
        return next(m for m in self.listing["models"] if m["key"] == key)

    def load(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        m = self.model(body["model"])
        config = {"context_length": min(body.get("context_length", 4096),
                                        m["max_context_length"]),
                  "eval_batch_size": body.get("eval_batch_size", 512),
                  "flash_attention": body.get("flash_attention", True),
                  "offload_kv_cache_to_gpu": True, "num_experts": 8}
        n = len(m["loaded_instances"])
        instance = m["key"] if n == 0 else f"{m['key']}:{n + 1}"
        m["loaded_instances"].append({"id": instance, "config": {**config, "parallel": 4}})
        return httpx.Response(200, json={"type": "llm", "instance_id": instance,
                                         "load_time_seconds": 2.5, "status": "loaded",
                                         "load_config": config})

    def unload(self, request: httpx.Request) -> httpx.Response:
        instance = json.loads(request.content)["instance_id"]
        for m in self.listing["models"]:
            m["loaded_instances"] = [i for i in m["loaded_instances"] if i["id"] != instance]
        return httpx.Response(200, json={"instance_id": instance})


def test_table_lists_every_model_with_live_config(mock: respx.MockRouter) -> None:
    at = models_page(mock)
    (frame,) = [d.value for d in at.dataframe]
    assert list(frame["Key"]) == [m["key"] for m in NATIVE_MODELS["models"]]
    assert list(frame["Type"]) == ["LLM", "LLM", "Embedding"]
    assert "ctx 4096" in frame["Instances (live config)"].iloc[0]
    assert "3 of 3 models" in texts(at.caption)[0]
    at.text_input(key="models-q").set_value("qwen").run()
    assert list(at.dataframe[0].value["Key"]) == ["qwen/qwen3-4b"]
    at.text_input(key="models-q").set_value("").run()
    at.toggle(key="models-loaded").set_value(True).run()
    assert list(at.dataframe[0].value["Key"]) == [GEMMA]


def test_load_shows_what_the_server_applied_and_marks_it_loaded(mock: respx.MockRouter) -> None:
    server = Server()
    mock.get("/api/v1/models").mock(side_effect=server.list)
    load = mock.post("/api/v1/models/load").mock(side_effect=server.load)
    at = models_page(mock, listing=None)
    at.selectbox(key="load-model").set_value(GEMMA).run()
    # Inside a form: values go with the submit.
    at.number_input(key=f"load-ctx-{GEMMA}").set_value(300_000 // 2)
    at.selectbox(key="load-flash").set_value(False)
    button(at, "Load").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    sent = json.loads(load.calls.last.request.content)
    assert sent == {"model": GEMMA, "context_length": 150000, "flash_attention": False,
                    "echo_load_config": True}
    assert f"Loaded model {GEMMA} as instance “{GEMMA}:2” in 2.50 s." in texts(at.success)
    (table,) = at.table
    rows = {r["Setting"]: r for r in table.value.to_dict("records")}
    assert rows["Context length"]["Applied"] == "150000" and rows["Context length"][
        "Note"] == "as asked"
    assert rows["Flash attention"]["Applied"] == "off"
    assert rows["Eval batch size"]["Asked"] == "server default"
    assert any("echoed by the server" in c for c in texts(at.caption))
    # The new instance is listed as loaded, with its live config.
    live = at.dataframe[0].value["Instances (live config)"].iloc[0]
    assert f"{GEMMA}:2: ctx 150000" in live
    assert any(f"**{GEMMA}:2**" in m and "loaded by ATOM" in m for m in texts(at.markdown))
    assert open_settings_for(at).loaded_by_atom(BASE) == {f"{GEMMA}:2"}


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_the_load_box_goes_once_that_instance_is_unloaded(mock: respx.MockRouter,
                                                         where: str) -> None:
    """Unloaded with its button here, or elsewhere (its TTL, `lms unload`): the next listing
    without it takes the "Loaded model … in 2.50 s" box and its table away."""
    server = Server()
    mock.get("/api/v1/models").mock(side_effect=server.list)
    mock.post("/api/v1/models/load").mock(side_effect=server.load)
    mock.post("/api/v1/models/unload").mock(side_effect=server.unload)
    at = models_page(mock, listing=None)
    at.selectbox(key="load-model").set_value(GEMMA).run()
    button(at, "Load").click().run()
    loaded = f"Loaded model {GEMMA} as instance “{GEMMA}:2” in 2.50 s."
    assert loaded in texts(at.success) and len(at.table) == 1
    if where == "here":
        at.button(key=f"unload-{GEMMA}").click().run()  # another instance: the box stays
        assert loaded in texts(at.success)
        at.button(key=f"unload-{GEMMA}:2").click().run()
    else:
        gemma = server.model(GEMMA)
        gemma["loaded_instances"] = [i for i in gemma["loaded_instances"]
                                     if i["id"] != f"{GEMMA}:2"]
        at.button(key=f"unload-{GEMMA}").click().run()  # the page lists afresh
    assert not at.exception
    assert not any("Loaded model" in s for s in texts(at.success)) and len(at.table) == 0
    at.run()  # and it does not come back
    assert not any("Loaded model" in s for s in texts(at.success))


def open_settings_for(at: AppTest) -> Any:
    import os

    return open_settings(os.environ["ATOM_DATA_DIR"])


def test_a_rejected_key_is_named_and_the_load_retried_without_it(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=NATIVE_MODELS)
    load = mock.post("/api/v1/models/load")
    load.side_effect = [
        httpx.Response(400, json={"error": {"type": "invalid_request", "code": "unrecognized_keys",
                                            "message": "Unrecognized key(s) in object: "
                                                       "'offload_kv_cache_to_gpu'",
                                            "param": "offload_kv_cache_to_gpu"}}),
        httpx.Response(200, json={"instance_id": GEMMA + ":2", "load_time_seconds": 1.0,
                                  "load_config": {"context_length": 4096}}),
    ]
    at = models_page(mock)
    at.selectbox(key="load-model").set_value(GEMMA).run()
    at.selectbox(key="load-kv").set_value(True)
    button(at, "Load").click().run()
    assert any("refused offload_kv_cache_to_gpu" in w for w in texts(at.warning))
    assert "offload_kv_cache_to_gpu" not in json.loads(load.calls.last.request.content)
    rows = {r["Setting"]: r for r in at.table[0].value.to_dict("records")}
    assert rows["KV cache on GPU"]["Note"] == "rejected by the server: loaded without it"


def test_context_beyond_the_models_maximum_is_refused_before_sending(
    mock: respx.MockRouter,
) -> None:
    at = models_page(mock)
    at.selectbox(key="load-model").set_value("qwen/qwen3-4b").run()
    ctx = at.number_input(key="load-ctx-qwen/qwen3-4b")
    assert ctx.max == 32768  # bounded by the model's maximum


def test_unknown_model_on_load_is_one_sentence(mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/load").respond(
        404, json={"error": {"type": "model_not_found", "message": "Model not found"}})
    at = models_page(mock)
    button(at, "Load").click().run()
    assert not at.exception
    assert any("has no model called" in e for e in texts(at.error))


def test_unload_and_unload_all(mock: respx.MockRouter) -> None:
    server = Server()
    server.model("qwen/qwen3-4b")["loaded_instances"].append({"id": "qwen/qwen3-4b",
                                                              "config": {"context_length": 8192}})
    mock.get("/api/v1/models").mock(side_effect=server.list)
    unload = mock.post("/api/v1/models/unload").mock(side_effect=server.unload)
    at = models_page(mock, listing=None)
    at.button(key=f"unload-{GEMMA}").click().run()
    assert json.loads(unload.calls.last.request.content) == {"instance_id": GEMMA}
    assert f"Unloaded “{GEMMA}”." in texts(at.success)
    button(at, "Unload all").click().run()
    button(at, "Yes, unload all").click().run()
    assert "Unloaded “qwen/qwen3-4b”." in texts(at.success)
    assert any("Nothing is loaded" in c for c in texts(at.caption))


def test_unload_of_an_instance_already_gone(mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/unload").respond(
        404, json={"error": {"type": "model_not_found", "message": "No instance"}})
    at = models_page(mock)
    at.button(key=f"unload-{GEMMA}").click().run()
    assert not at.exception and at.error


def test_the_lms_command_carries_what_rest_cannot_set(mock: respx.MockRouter) -> None:
    at = models_page(mock)
    at.selectbox(key="load-model").set_value(GEMMA).run()
    at.selectbox(key="lms-gpu").set_value("0.5").run()
    at.number_input(key="lms-parallel").set_value(2).run()
    at.number_input(key="lms-ttl").set_value(600).run()
    at.text_input(key="lms-id").set_value("fast gemma").run()
    assert texts(at.code)[-1] == (f"lms load {GEMMA} --gpu 0.5 --parallel 2 --ttl 600 "
                                  "--identifier 'fast gemma'")


def test_the_lms_line_follows_a_context_typed_before_load(mock: respx.MockRouter) -> None:
    at = models_page(mock)
    at.selectbox(key="load-model").set_value(GEMMA).run()
    at.number_input(key=f"load-ctx-{GEMMA}").set_value(4096).run()  # Load not pressed
    assert texts(at.code)[-1] == f"lms load {GEMMA} --context-length 4096"


def test_download_progress_is_kept_across_a_page_switch(mock: respx.MockRouter) -> None:
    start = mock.post("/api/v1/models/download").respond(json={
        "job_id": "job_493c7c9ded", "status": "downloading", "total_size_bytes": 2_000_000_000})
    mock.get("/api/v1/models/download/status/job_493c7c9ded").respond(json={
        "job_id": "job_493c7c9ded", "status": "downloading", "total_size_bytes": 2_000_000_000,
        "downloaded_bytes": 500_000_000, "bytes_per_second": 50_000_000})
    at = models_page(mock)
    url = "https://huggingface.co/lmstudio-community/gpt-oss-20b-GGUF"
    at.text_input(key="dl-model").set_value(url)
    at.text_input(key="dl-quant").set_value("Q4_K_M")
    button(at, "Download").click().run()
    assert json.loads(start.calls.last.request.content) == {"model": url,
                                                            "quantization": "Q4_K_M"}
    (bar,) = at.get("progress")
    assert "500.0 MB of 2.0 GB · 50.0 MB/s · about 30 s left" in bar.proto.text
    at.switch_page("pages/chat.py").run()
    at.switch_page("pages/models.py").run()
    (bar,) = at.get("progress")
    assert "gpt-oss-20b-GGUF" in bar.proto.text


def test_a_bad_download_request_is_explained(mock: respx.MockRouter) -> None:
    at = models_page(mock)
    at.text_input(key="dl-model").set_value("ibm/granite-4-micro")
    at.text_input(key="dl-quant").set_value("Q4_K_M")
    button(at, "Download").click().run()
    assert any("only with a Hugging Face URL" in e for e in texts(at.error))


def test_a_failed_download_says_so(mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/download").respond(json={"job_id": "job_1", "status": "failed"})
    at = models_page(mock)
    at.text_input(key="dl-model").set_value("x/fail-model")
    button(at, "Download").click().run()
    assert any("x/fail-model" in e and "Failed" in e for e in texts(at.error))


def test_a_download_error_from_the_server_never_loads_an_image(mock: respx.MockRouter) -> None:
    mock.post("/api/v1/models/download").respond(
        400, json={"error": {"message": "no such model ![x](http://127.0.0.1:9/leak?q=1)"}})
    at = models_page(mock)
    at.text_input(key="dl-model").set_value("x/leak-model")
    button(at, "Download").click().run()
    shown = texts(at.error)
    assert any("127.0.0.1:9" in e for e in shown), shown  # the host is named, as a link
    assert not any("![" in e for e in shown), shown  # but nothing is an image to load


def test_401_shows_the_auth_sentence(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(401, json=AUTH_BODY)
    at = models_page(mock, listing=None)
    assert any("requires an API token" in e for e in texts(at.main.error))
    assert not at.dataframe


def test_an_openai_only_server_says_what_it_lacks(mock: respx.MockRouter) -> None:
    mock.get("/api/v1/models").respond(json=UNEXPECTED)
    mock.get("/api/v0/models").respond(json=UNEXPECTED)
    mock.get("/v1/models").respond(json={"object": "list", "data": [
        {"id": "gemma-3-270m", "object": "model", "owned_by": "llamacpp"}]})
    at = models_page(mock, listing=None)
    (info,) = texts(at.info)
    assert "OpenAI-compatible server" in info and "Load, unload and download" in info
    assert list(at.dataframe[0].value["Loaded"]) == [""]  # unknown: blank (issue 13)
    assert not [b for b in at.form_submit_button if b.label == "Load"]


def test_auto_unload_touches_only_what_atom_loaded(mock: respx.MockRouter) -> None:
    server = Server()
    mock.get("/api/v1/models").mock(side_effect=server.list)
    mock.post("/api/v1/models/load").mock(side_effect=server.load)
    unload = mock.post("/api/v1/models/unload").mock(side_effect=server.unload)
    at = models_page(mock, listing=None)
    open_settings_for(at).set_auto_unload(True)
    at.selectbox(key="load-model").set_value("qwen/qwen3-4b").run()
    button(at, "Load").click().run()
    assert open_settings_for(at).loaded_by_atom(BASE) == {"qwen/qwen3-4b"}
    # gemma -> qwen: gemma was loaded outside ATOM, so it stays.
    at.sidebar.selectbox(key="model").set_value("qwen/qwen3-4b").run()
    assert unload.call_count == 0
    # qwen -> gemma: ATOM loaded qwen, so it goes.
    at.sidebar.selectbox(key="model").set_value(GEMMA).run()
    assert [json.loads(c.request.content) for c in unload.calls] == [
        {"instance_id": "qwen/qwen3-4b"}]
    assert any("auto-unload" in t.value for t in at.toast)
    assert open_settings_for(at).loaded_by_atom(BASE) == set()


def test_auto_unload_is_off_by_default(mock: respx.MockRouter) -> None:
    server = Server()
    server.model("qwen/qwen3-4b")["loaded_instances"].append({"id": "qwen/qwen3-4b",
                                                              "config": {}})
    mock.get("/api/v1/models").mock(side_effect=server.list)
    unload = mock.post("/api/v1/models/unload").mock(side_effect=server.unload)
    at = models_page(mock, listing=None)
    open_settings_for(at).note_loaded(BASE, "qwen/qwen3-4b")
    at.sidebar.selectbox(key="model").set_value("qwen/qwen3-4b").run()
    at.sidebar.selectbox(key="model").set_value(GEMMA).run()
    assert unload.call_count == 0


def test_the_page_follows_the_sidebars_server(mock: respx.MockRouter,
                                              monkeypatch: Any) -> None:
    other = "http://other.test:1234"
    monkeypatch.setenv("ATOM_EXTRA_SERVERS", other)
    mock.get(f"{other}/api/v1/models").respond(json={"models": []})
    at = models_page(mock)
    assert at.selectbox(key="models-server").value == BASE
    at.selectbox(key="models-server").set_value(other).run()
    assert "0 of 0 models" in texts(at.caption)[0]  # this page can look at another server
    at.sidebar.text_input[0].set_value(BASE + "/v1").run()  # same server, pasted differently
    assert at.selectbox(key="models-server").value == other
    at.selectbox(key="models-server").set_value(BASE).run()
    at.sidebar.text_input[0].set_value(other).run()  # the sidebar moves: the page follows
    assert "0 of 0 models" in texts(at.caption)[0] and not at.exception
    assert any("no models yet" in i for i in texts(at.info))
