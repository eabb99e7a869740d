"""The Arena: slots, load plan, race, rounds and votes, ratings, prompt sets, reports, charts.

Rooms: ``setup`` (slots, load plan), ``race`` (ArenaRace: every slot at once), ``rounds`` (the
stored round, votes, reveal), ``results`` (the results grid), ``leaderboard``, ``ratings``,
``promptsets``, ``report``, ``charts``. This package re-exports what the page uses
(``from atom_core import arena; arena.ArenaRace(...)``). Importing it registers the Arena's
record types (ArenaRound, PromptSetRunSpec, PromptSetRecord, SavedPromptSet, JudgeVerdict,
ClassSession) for backup's import checks (atom_core.records)."""

from .classroom import ClassSession
from .judge import JudgeVerdict
from .leaderboard import leaderboard, vote_signature
from .promptset_store import PromptSetRecord, PromptSetRunSpec, SavedPromptSet
from .race import ArenaRace
from .results import HELP, fact_rows, live_line, stat_rows
from .rounds import (
    ROUNDS_TABLE,
    ArenaRound,
    current_round,
    load_rounds,
    read_rounds,
    record_vote,
    reveal,
    state_key,
)
from .setup import (
    FLASH_CHOICES,
    SLOT_LABELS,
    Prepared,
    SlotFields,
    SlotSetup,
    contestant_name,
    default_models,
    default_picks,
    load_all,
    plan_loads,
    prepared_from,
    start_load,
)

__all__ = [
    "FLASH_CHOICES",
    "ArenaRace",
    "ArenaRound",
    "ClassSession",
    "HELP",
    "JudgeVerdict",
    "Prepared",
    "PromptSetRecord",
    "PromptSetRunSpec",
    "ROUNDS_TABLE",
    "SLOT_LABELS",
    "SavedPromptSet",
    "SlotFields",
    "SlotSetup",
    "contestant_name",
    "current_round",
    "default_models",
    "default_picks",
    "fact_rows",
    "leaderboard",
    "live_line",
    "load_all",
    "load_rounds",
    "plan_loads",
    "prepared_from",
    "read_rounds",
    "record_vote",
    "reveal",
    "start_load",
    "stat_rows",
    "state_key",
    "vote_signature",
]
