"""ATOM's core: everything that is not drawing. No streamlit import anywhere in this package.

This module is the public facade: the names in ``__all__`` are what pages, the command line and
other programs use, and ``tests/unit/test_public_api.py`` pins them. Names load lazily
(PEP 562): ``import atom_core`` costs nothing, because ``atom_core.launch.demo_server`` runs in
the demo engine's own virtualenv, which has none of ATOM's requirements, and the command line
should not pay for pandas to print a model list.

Layout (each room's own docstring says more)::

    errors, types, config, metrics, runs   base layer; config is the one reader of the environment
    server/    client, listing, chat-route streams, http_errors, admin (load/unload/download)
    history/   the HistoryStore protocol, its TinyDB and in-memory backends, backup, export
    measure/   FanOut (N streams at once), the load engine (K in flight), sweeps
    arena/     slots, race, rounds, ratings, prompt sets, report, charts
    stats/     runs frame, cache, timelines, charts
    settings/  profiles and tokens, presets, templates
    launch/    the bundled demo engine
    chat, cli  a conversation's turn logic; ``python -m atom_core``
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # base layer
    "AtomError": "atom_core.errors",
    "AuthError": "atom_core.errors",
    "BadRequest": "atom_core.errors",
    "ClientPoolTimeout": "atom_core.errors",
    "ModelNotFound": "atom_core.errors",
    "NotSupported": "atom_core.errors",
    "RequestTimeout": "atom_core.errors",
    "ServerError": "atom_core.errors",
    "ServerUnreachable": "atom_core.errors",
    "StreamInterrupted": "atom_core.errors",
    "StreamStalled": "atom_core.errors",
    "ChatMessage": "atom_core.types",
    "Dialect": "atom_core.types",
    "LoadConfig": "atom_core.types",
    "ModelInfo": "atom_core.types",
    "ModelList": "atom_core.types",
    "SamplingOptions": "atom_core.types",
    "StreamEvent": "atom_core.types",
    "Settings": "atom_core.config",
    "normalize_base_url": "atom_core.config",
    "ServerURL": "atom_core.url",
    "settings_from_env": "atom_core.config",
    "GenerationMetrics": "atom_core.metrics",
    "compute_metrics": "atom_core.metrics",
    "percentile": "atom_core.metrics",
    # rooms
    "LMStudioClient": "atom_core.server.client",
    "ServerStatus": "atom_core.server.client",
    "ChatStream": "atom_core.server.streaming",
    "Conversation": "atom_core.history",
    "HistoryStore": "atom_core.history",
    "Message": "atom_core.history",
    "open_store": "atom_core.history",
    "FanOut": "atom_core.measure.runner",
    "Slot": "atom_core.measure.runner",
    "run_load": "atom_core.measure.loadrun",
    "ArenaRace": "atom_core.arena.race",
    "ArenaRound": "atom_core.arena.race",
    "SettingsStore": "atom_core.settings.store",
    "open_settings": "atom_core.settings.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atom_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

