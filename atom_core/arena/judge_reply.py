"""Reading a judge's reply (arena/judge.py asks): scores 1-10 and a reason per answer, as the
JSON schema asked for, or leniently (fences, prose around the JSON, "Response 2: 7/10" lines);
a reply that can't be read is "unparseable", or "refused" when the judge declined."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_REASON = 400  # characters kept of each reason

CallStatus = Literal["ok", "unparseable", "refused", "error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedVerdict:
    status: CallStatus
    scores: dict[int, int] = field(default_factory=dict)  # position (1-based) -> 1..10
    reasons: dict[int, str] = field(default_factory=dict)


_REFUSAL = re.compile(r"\b(I can(?:'|no)t|I cannot|I won't|I will not|I'm (?:not able|unable)|"
                      r"I am (?:not able|unable)|as an AI)\b", re.IGNORECASE)
_LINE_SCORE = re.compile(r"Response\s*(\d+)\D{0,40}?\b(10|[1-9])\s*(?:/\s*10|out of 10)",
                         re.IGNORECASE)


def _json_objects(text: str) -> list[Any]:
    """Every top-level JSON value that starts with { in the text (prose around it ignored)."""
    decoder = json.JSONDecoder()
    found = []
    i = text.find("{")
    while i != -1:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        found.append(value)
        i = text.find("{", end)
    return found


def _entries(doc: Any) -> list[Any] | None:
    if isinstance(doc, dict):
        for key in ("scores", "responses", "verdicts", "results"):
            if isinstance(doc.get(key), list):
                return list(doc[key])
    if isinstance(doc, list):
        return doc
    return None


def _int_score(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and math.isfinite(v):
        return min(10, max(1, round(v)))
    if isinstance(v, str):
        m = re.match(r"\s*(\d+(?:\.\d+)?)", v)
        return min(10, max(1, round(float(m.group(1))))) if m else None
    return None


def parse_verdict(text: str, n: int) -> ParsedVerdict:
    """Reads a judge's reply for n responses. A verdict needs a score for every response;
    anything less is "unparseable" ("refused" when it reads like a refusal)."""
    body = re.sub(r"```(?:json)?", "", text or "")
    scores: dict[int, int] = {}
    reasons: dict[int, str] = {}
    for doc in ([json.loads(body)] if _is_plain_json(body) else []) + _json_objects(body):
        entries = _entries(doc)
        if entries is None:
            continue
        for k, e in enumerate(entries, start=1):
            if not isinstance(e, dict):
                continue
            pos = e.get("response", e.get("id", k))
            pos = _int_score(pos) if not isinstance(pos, int) else pos
            score = _int_score(e.get("score"))
            if isinstance(pos, int) and 1 <= pos <= n and score is not None:
                scores[pos] = score
                reasons[pos] = str(e.get("reason") or e.get("explanation") or "")[:MAX_REASON]
        if len(scores) == n:
            break
    if len(scores) < n:  # no usable JSON: "Response 2: 7/10" lines
        for m in _LINE_SCORE.finditer(body):
            pos = int(m.group(1))
            if 1 <= pos <= n and pos not in scores:
                scores[pos], reasons[pos] = int(m.group(2)), ""
    if len(scores) == n:
        return ParsedVerdict(status="ok", scores=scores, reasons=reasons)
    return ParsedVerdict(status="refused" if _REFUSAL.search(body) else "unparseable")


def _is_plain_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
