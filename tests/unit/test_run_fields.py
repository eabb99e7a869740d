"""RunRecord reads each stored field by its declared type (issue 19: not by searching the
type's text for "float")."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from atom_core.runs import RunRecord

HINTS = {f.name: typing.get_type_hints(RunRecord)[f.name]
         for f in dataclasses.fields(RunRecord) if f.name != "tags"}


def _kind(hint: object) -> type:
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    assert len(kinds) == 1 and isinstance(kinds[0], type)
    return kinds[0]


def test_every_field_reads_a_value_of_its_type_and_leaves_out_junk() -> None:
    samples = {float: 1.5, int: 7, bool: True, str: "text"}
    for name, hint in HINTS.items():
        kind = _kind(hint)
        got = getattr(RunRecord.from_record({name: samples[kind]}), name)
        assert got == samples[kind] and type(got) is kind, name
        junk = RunRecord.from_record({name: {"a": 1}})
        assert getattr(junk, name) in (None, "", 0.0, True, "complete"), name  # a default
    assert RunRecord.from_record({"ttft_s": "0.25", "output_tokens": "12"}).ttft_s == 0.25
    assert RunRecord.from_record({"output_tokens": True}).output_tokens is None  # never a bool


def test_no_field_type_is_read_from_its_text() -> None:
    source = (Path(__file__).resolve().parents[2] / "atom_core" / "runs.py").read_text()
    assert "str(f.type)" not in source and "_FIELD_KINDS" not in source
