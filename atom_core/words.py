"""How ATOM words a count and an empty table cell, the same on every page, in the command line
and in reports: "1 run", "2 runs" (never "run(s)" or "1 runs"), and a blank where a table has no
value (never the word "None")."""

from __future__ import annotations

# What a page table shows in a cell with no value (st.dataframe's `placeholder`): a blank, as
# the Models table and the leaderboards always did. tests/unit/test_words.py checks that every
# table on every page passes it.
EMPTY_CELL = ""


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 round', '2 rounds', '1,500 runs'; `many` for a word that does not just add an s
    (plural(2, "reply", "replies") -> '2 replies')."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"
