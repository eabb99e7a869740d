"""atom_core.records: each record type declares its table and its import check; backup asks the
registry, so the history layer imports no room above it (issue 19)."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

import atom_core.arena  # noqa: F401  (registers ArenaRound, as the app does)
from atom_core import records
from atom_core.arena.promptsets import PromptSetRecord
from atom_core.arena.rounds import ROUNDS_TABLE, ArenaRound
from atom_core.history.backup import ImportRefused, plan_import
from atom_core.runs import RunRecord
from tests.fixtures.bad_imports import export_doc

ROOT = Path(__file__).resolve().parents[2]


def test_runs_rounds_and_prompt_set_records_declare_their_tables() -> None:
    types = records.record_types()
    assert types["runs"] is RunRecord and types[ROUNDS_TABLE] is ArenaRound
    assert types[PromptSetRecord.TABLE] is PromptSetRecord


def test_an_imported_prompt_set_record_is_checked_by_its_type() -> None:
    row = {"run_id": "r", "prompt_index": 0, "slot": 1, "repeat": 0, "ok": True,
           "ts": 1_700_000_000.0}
    plan_import(json.dumps(export_doc(tables={PromptSetRecord.TABLE: [row]})), None)
    with pytest.raises(ImportRefused):
        plan_import(json.dumps(export_doc(tables={PromptSetRecord.TABLE: [
            {**row, "slot": "B"}]})), None)


def test_backup_imports_nothing_above_the_history_layer() -> None:
    tree = ast.parse((ROOT / "atom_core" / "history" / "backup.py").read_text())
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(m.startswith(("arena", ".arena", "..arena")) or "arena" in m
                   for m in imported), imported


@pytest.fixture
def notes_type() -> Iterator[None]:
    @records.stored_record
    @dataclass(frozen=True)
    class Note:
        TABLE: ClassVar[str] = "test_notes"

        @classmethod
        def check_import(cls, row: Mapping[str, Any]) -> None:
            if not isinstance(row.get("text"), str):
                raise ValueError("its text is not text")

    yield
    records._TYPES.pop("test_notes")


def test_backup_checks_a_table_with_the_check_its_record_type_declares(notes_type: None) -> None:
    good = {"ts": 1_700_000_000.0, "text": "fine"}
    plan_import(json.dumps(export_doc(tables={"test_notes": [good]})), None)
    with pytest.raises(ImportRefused) as refused:
        plan_import(json.dumps(export_doc(tables={"test_notes": [{**good, "text": 3}]})), None)
    assert "its text is not text" in refused.value.sentence


def test_a_table_cannot_get_a_second_type() -> None:
    with pytest.raises(ValueError):
        records.stored_record(type("Other", (), {"TABLE": "runs"}))
