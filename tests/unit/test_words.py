"""One way to word a count and an empty cell: atom_core.words, used by every page, the command
line and the reports. The rules are checked on the source, so a new "round(s)" or a new table
that shows "None" fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from atom_core.words import EMPTY_CELL, plural

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*ROOT.joinpath("atom_core").rglob("*.py"), *ROOT.joinpath("pages").rglob("*.py"),
                  ROOT / "app.py"])


def test_plural() -> None:
    assert plural(1, "run") == "1 run"
    assert plural(0, "run") == "0 runs"
    assert plural(2, "request") == "2 requests"
    assert plural(20_004, "run") == "20,004 runs"
    assert plural(1, "reply", "replies") == "1 reply"
    assert plural(3, "reply", "replies") == "3 replies"


def _texts(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal, f-string parts included, with its line."""
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_no_word_counts_with_an_s_in_brackets() -> None:
    """'1 round(s)' reads as a form, not a sentence: counts go through plural(). ('TTFT (s)',
    a unit, is fine: there is a space before the bracket.)"""
    hack = re.compile(r"[A-Za-z]\(s\)")
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        found += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _texts(tree)
                  if hack.search(text) and not _docstring(tree, line)]
    assert not found, "\n".join(found)


def _docstring(tree: ast.AST, line: int) -> bool:
    """Whether `line` is inside a docstring (which may well talk about "run(s)")."""
    return any(isinstance(n, ast.Module | ast.FunctionDef | ast.ClassDef) and n.body
               and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
               and n.body[0].lineno <= line <= (n.body[0].end_lineno or line)
               for n in ast.walk(tree))


def test_every_page_table_shows_an_empty_cell_the_same_way() -> None:
    """st.dataframe shows a missing value as the word "None" unless told otherwise: every table
    on every page passes placeholder=EMPTY_CELL (or goes through a helper that does)."""
    assert EMPTY_CELL == ""  # a blank, as the Models table and the leaderboards always had
    missing = []
    for path in SOURCES:
        if "atom_core" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "dataframe"):
                given = {k.arg: k.value for k in node.keywords}
                value = given.get("placeholder")
                if not (isinstance(value, ast.Name) and value.id == "EMPTY_CELL"):
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not missing, f"tables without placeholder=EMPTY_CELL: {missing}"
